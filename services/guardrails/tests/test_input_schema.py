"""A workflow's input schema: a refusal names the path and the rule broken, never the value."""

from __future__ import annotations

from typing import Any

from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.guardrails.inputschema import problems, reason, validator

SCHEMA = {"type": "object", "required": ["brief", "pages"], "additionalProperties": False,
          "properties": {"brief": {"type": "string", "maxLength": 20},
                         "pages": {"type": "integer", "minimum": 1},
                         "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}}}}


def _manifest(**changes: Any) -> WorkflowManifest:
    body: dict[str, Any] = {"name": "w", "nodes": [{"id": "a", "role": "START", "kind": "tool", "tool": "t"}],
                            "schemas": {"w-input": SCHEMA}, "input_schema": "w-input"}
    return WorkflowManifest.model_validate({**body, **changes})


def test_valid_input_has_no_problems() -> None:
    check = validator(_manifest())
    assert check is not None and problems(check, {"brief": "hi", "pages": 2, "tags": ["a"]}) is None


def test_each_problem_names_the_path_and_rule_never_the_value() -> None:
    check = validator(_manifest())
    assert check is not None
    found = problems(check, {"brief": "card 4556737586899855 and more", "tags": ["ok", "Jane Doe"],
                             "secret-key-jane@example.com": 1})
    assert found is not None
    text = reason("w", found)
    assert "input.brief: breaks 'maxLength' (20)" in text
    assert "input: missing required 'pages'" in text
    assert "input.tags[1]: breaks 'pattern' (\"^[a-z]+$\")" in text
    assert "input: has properties the schema does not allow (additionalProperties)" in text
    for value in ("4556737586899855", "Jane Doe", "jane@example.com"):
        assert value not in text
    assert found.rules == {"schema.maxLength": 1, "schema.required": 1, "schema.pattern": 1,
                           "schema.additionalProperties": 1}


def test_no_input_schema_means_no_check() -> None:
    assert validator(_manifest(input_schema=None)) is None


def test_validate_names_an_input_schema_the_workflow_lacks() -> None:
    from agent_engine.contracts.validation import validate

    errors = [e for e in validate(_manifest(input_schema="nope")) if e.rule == "input-schema"]
    assert len(errors) == 1
    assert "input_schema names 'nope', which is not in schemas/ (known: ['w-input'])" in str(errors[0])
