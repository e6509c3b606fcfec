"""Structured output: find the JSON object in a reply and check it against the node's schema.

A problem found here is not an error yet: the runner sends it back to the model as a repair turn.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

import jsonschema

from agent_engine.agent_runner.jsontext import indented

MAX_PROBLEMS = 5


class NotAJsonObject(ValueError):
    pass


def extract_json(text: str) -> dict[str, Any]:
    """The JSON object in a model's reply, with or without a fenced code block around it."""
    fenced = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", text, re.DOTALL)
    candidate = fenced.group(1) if fenced else text[text.find("{"): text.rfind("}") + 1]
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError as exc:
        raise NotAJsonObject(f"model reply is not a JSON object: {exc.msg} (reply starts {text[:80]!r})") from None
    if not isinstance(value, dict):
        raise NotAJsonObject("model reply is JSON but not an object")
    return value


@dataclass(frozen=True)
class Compiled:
    """What a node's output schema needs once, not per dispatch: whether it can check anything, its validator,
    and its text for the prompt."""

    problem: str
    """Why it cannot check an output ("" when it can)."""
    validator: jsonschema.Draft202012Validator | None
    text: str
    """As the system prompt shows it (`json.dumps(schema, indent=1)`)."""


def compiled(schema: dict[str, Any]) -> Compiled:
    """The schema compiled, cached by its exact JSON text: a dispatch brings its own copy of the schema, and a new
    manifest or agent revision whose schema differs (even in key order) is a different entry."""
    return _compiled(json.dumps(schema))


@functools.lru_cache(maxsize=256)
def _compiled(schema_json: str) -> Compiled:
    schema = json.loads(schema_json)
    text = indented(schema)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "(root)"
        return Compiled(f"the node's output schema is not a valid JSON Schema at {where}: {exc.message}", None, text)
    return Compiled("", jsonschema.Draft202012Validator(schema), text)


def schema_problem(schema: dict[str, Any] | None) -> str:
    """Why `schema` cannot check an output ("" when it can, or when there is none): a dispatch comes from
    the bus, so its schema is checked before any call is made or paid for."""
    if not schema:
        return ""
    return compiled(schema).problem


def check(text: str, schema: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    """(output, None) when the reply is a JSON object valid against `schema`; (output or None, problem) else."""
    try:
        output = extract_json(text)
    except NotAJsonObject as exc:
        return None, str(exc)
    if schema:
        validator = compiled(schema).validator or jsonschema.Draft202012Validator(schema)
        problems = sorted(validator.iter_errors(output), key=str)
        if problems:
            detail = "; ".join(f"{'/'.join(map(str, p.absolute_path)) or '(root)'}: {p.message}"
                               for p in problems[:MAX_PROBLEMS])
            return output, f"output does not match the node's schema: {detail}"
    return output, None
