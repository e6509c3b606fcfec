"""The agent-runner's cheaper mock path: the prompt's JSON text is the standard library's to the byte, and what is
cached per output schema (its validator, its prompt text, the mock's reply) follows a schema that changes."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_engine.agent_runner import structured
from agent_engine.agent_runner.jsontext import indented
from agent_engine.agent_runner.providers import Gateway, LlmRequest, MockProvider, Turn
from agent_engine.agent_runner.service import AgentRunner, build_request
from agent_engine.contracts.events import DispatchedAgent

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(JSON)
def test_the_prompt_json_is_json_dumps_with_indent_one(value: Any) -> None:
    assert indented(value) == json.dumps(value, indent=1)


@pytest.mark.parametrize("value", [
    {7: "int key", 2.5: "float key", True: "bool key", False: "bool key", None: "null key"},
    ("a", "tuple"), [math.inf, -math.inf, math.nan], {"é\u2028\"\\": "\x00\ud800"}, [[[]], {}, [{}]], 10**40,
])
def test_keys_and_numbers_follow_the_standard_library(value: Any) -> None:
    assert indented(value) == json.dumps(value, indent=1)


def test_what_is_not_json_fails_as_in_the_standard_library() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        indented({"when": datetime(2026, 1, 1, tzinfo=UTC)})
    with pytest.raises(TypeError, match="keys must be"):
        indented({("a",): 1})
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        indented(loop)


SCHEMA_V1 = {"type": "object", "required": ["goal"], "properties": {"goal": {"type": "string"}}}
SCHEMA_V2 = {"type": "object", "required": ["goal", "risk"],
             "properties": {"goal": {"type": "string"}, "risk": {"enum": ["low", "high"]}}}


def test_a_changed_schema_is_compiled_again() -> None:
    reply = '{"goal": "ship"}'
    assert structured.check(reply, SCHEMA_V1) == ({"goal": "ship"}, None)
    first = structured.compiled(json.loads(json.dumps(SCHEMA_V1)))  # another copy, as each dispatch brings
    assert structured.compiled(SCHEMA_V1) is first
    _, problem = structured.check(reply, SCHEMA_V2)  # a new revision of the agent
    assert problem == "output does not match the node's schema: (root): 'risk' is a required property"
    assert structured.compiled(SCHEMA_V2) is not first
    assert structured.check(reply, SCHEMA_V1) == ({"goal": "ship"}, None)  # a dispatch of the old revision


def test_a_schema_changed_in_place_is_not_taken_for_the_old_one() -> None:
    schema = json.loads(json.dumps(SCHEMA_V1))
    assert structured.check('{"goal": 1}', schema)[1] is not None
    schema["properties"]["goal"] = {"type": "integer"}
    assert structured.check('{"goal": 1}', schema) == ({"goal": 1}, None)
    schema["properties"]["goal"] = {"type": 5}
    assert structured.schema_problem(schema).startswith("the node's output schema is not a valid JSON Schema at ")


def test_schemas_differing_only_in_key_order_are_compiled_apart() -> None:
    reordered = {"properties": SCHEMA_V1["properties"], "required": ["goal"], "type": "object"}
    assert structured.compiled(reordered) is not structured.compiled(SCHEMA_V1)
    assert structured.compiled(reordered).text == json.dumps(reordered, indent=1)


async def test_the_mock_reply_and_the_prompt_follow_a_new_schema() -> None:
    def request(schema: dict[str, Any]) -> LlmRequest:
        return LlmRequest(DispatchedAgent(name="a", output_schema_json=schema), "s", (Turn("user", "p"),), 1)

    mock = MockProvider()
    assert json.loads((await mock.complete(request(SCHEMA_V1))).text) == {"goal": "mock"}
    assert json.loads((await mock.complete(request(SCHEMA_V2))).text) == {"goal": "mock", "risk": "low"}
    assert json.loads((await mock.complete(request(SCHEMA_V1))).text) == {"goal": "mock"}


async def test_a_dispatch_under_a_new_revision_is_answered_by_it(agent_dispatch: Any) -> None:
    runner = AgentRunner(Gateway())
    for schema, output in ((SCHEMA_V1, {"goal": "mock"}), (SCHEMA_V2, {"goal": "mock", "risk": "low"}),
                           (SCHEMA_V1, {"goal": "mock"})):
        cause, dispatch = agent_dispatch(output_schema_json=schema)
        assert json.dumps(schema, indent=1) in build_request(dispatch).system
        events = await runner.handle(cause, dispatch)
        assert [e.type for e in events] == ["llm.called", "node.completed"]
        assert events[-1].data["output"] == output
