"""Agent runner: the mock provider, schema checks on its replies, exact pricing, JSON extraction."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_engine.agent_runner import pricing
from agent_engine.agent_runner.allowance import request_bytes
from agent_engine.agent_runner.providers import (
    Gateway,
    LlmRequest,
    LlmResult,
    MockProvider,
    Turn,
    estimate_tokens,
    minimal_instance,
)
from agent_engine.agent_runner.service import SOURCE, AgentRunner, build_request
from agent_engine.agent_runner.structured import NotAJsonObject, extract_json
from agent_engine.contracts.envelope import derive_id
from agent_engine.contracts.events import DispatchedAgent, Usage
from agent_engine.contracts.pricing import PriceTable


def request(attempt: int = 1, **agent: Any) -> LlmRequest:
    return LlmRequest(DispatchedAgent(name="a", **agent), "system text", (Turn("user", "prompt text"),), attempt)


def output(result: LlmResult) -> Any:
    return json.loads(result.text)


# --- mock provider ----------------------------------------------------------------------------

@pytest.mark.parametrize(("attempt", "expected"), [(1, "first"), (2, "second"), (3, "third"), (4, "third"),
                                                   (9, "third")])
async def test_mock_uses_the_script_per_attempt_and_repeats_the_last(attempt: int, expected: str) -> None:
    script = [{"say": "first"}, {"say": "second"}, {"say": "third"}]
    result = await MockProvider().complete(request(attempt, mock_responses=script))
    assert output(result) == {"say": expected}


async def test_mock_without_script_returns_the_minimal_valid_instance() -> None:
    schema = {"type": "object", "required": ["verdict"], "properties": {"verdict": {"enum": ["approve", "reject"]}}}
    result = await MockProvider().complete(request(output_schema_json=schema))
    assert output(result) == {"verdict": "approve"}


async def test_mock_without_schema_returns_an_empty_object() -> None:
    assert output(await MockProvider().complete(request())) == {}


async def test_mock_wraps_a_non_object_schema() -> None:
    result = await MockProvider().complete(request(output_schema_json={"type": "string", "minLength": 6}))
    assert output(result) == {"result": "mockxx"}


async def test_mock_usage_is_synthetic_and_labelled() -> None:
    said = {"say": "hello"}
    result = await MockProvider().complete(request(mock_responses=[said]))
    assert (result.provider, result.model) == ("mock", "mock-1")
    assert result.usage == Usage(input_tokens=estimate_tokens("system text" + "prompt text"),
                                 output_tokens=estimate_tokens(json.dumps(said, sort_keys=True)))
    assert result.usage.input_tokens == 6  # 22 characters at about four a token, rounded up
    assert (result.usage.cache_read_tokens, result.usage.cache_write_tokens) == (0, 0)


async def test_mock_stops_at_max_tokens_as_a_real_provider_does() -> None:
    """A scripted reply of about 2000 tokens to a request allowing 1000: cut at 1000 (never more output than the
    request allows, so a priced mock never spends more than the call's worst case), and not valid JSON any more."""
    result = await MockProvider().complete(request(max_tokens=1000, mock_responses=[{"text": "x" * 8000}]))
    assert (result.usage.output_tokens, result.stop_reason, len(result.text)) == (1000, "max_tokens", 4000)
    with pytest.raises(NotAJsonObject):
        extract_json(result.text)
    thinking = [{"$mock_thought": "y" * 500, "$mock_tool_calls": [{"name": "read", "args": {}}]}]
    cut = await MockProvider().complete(request(max_tokens=100, mock_responses=thinking))
    assert (cut.usage.output_tokens, cut.tool_calls, cut.stop_reason) == (100, (), "max_tokens")
    fits = await MockProvider().complete(request(max_tokens=1000, mock_responses=[{"text": "x" * 100}]))
    assert (fits.stop_reason, output(fits)) == ("end_turn", {"text": "x" * 100})


@settings(max_examples=60, deadline=None)
@given(max_tokens=st.integers(1, 3000), length=st.integers(0, 20000), schema=st.booleans())
def test_a_priced_mocks_call_never_costs_more_than_its_worst_case(max_tokens: int, length: int,
                                                                  schema: bool) -> None:
    """What the agent-runner's allowance and the router's reservation count for a call (input bytes, max_tokens
    out, at the mock's price) bounds what the priced mock's call costs, whatever its script says."""
    table = PriceTable("test-priced-mock", {"mock": (Decimal("0.9"), Decimal("3"), Decimal("0.1"), Decimal("1.2"))})
    agent: dict[str, Any] = {"max_tokens": max_tokens}
    if schema:
        agent["output_schema_json"] = {"type": "object", "required": ["t"], "properties": {
            "t": {"type": "string", "minLength": length}}}
    else:
        agent["mock_responses"] = [{"text": "é" * length}]
    asked = request(**agent)
    result = asyncio.run(MockProvider().complete(asked))
    assert result.usage.output_tokens <= max_tokens
    worst = table.worst_case(["mock-1"], request_bytes(asked), max_tokens)
    spent = table.cost("mock-1", result.usage)
    assert isinstance(worst, Decimal) and spent is not None and spent <= worst


NESTED = {
    "type": "object",
    "required": ["title", "tags", "meta", "status", "count", "ok"],
    "properties": {
        "title": {"type": "string", "minLength": 10},
        "optional": {"type": "string"},
        "tags": {"type": "array", "minItems": 2, "items": {"type": "string", "minLength": 1}},
        "meta": {"type": "object", "required": ["author", "steps"], "properties": {
            "author": {"type": "string"},
            "steps": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "minimum": 3}}}}}},
        "status": {"type": "string", "enum": ["draft", "final"]},
        "count": {"type": "number", "minimum": 1.5},
        "ok": {"type": "boolean"},
    },
}


def test_minimal_instance_of_a_nested_schema() -> None:
    value = minimal_instance(NESTED)
    assert value == {
        "title": "mockxxxxxx", "tags": ["mock", "mock"], "meta": {"author": "mock", "steps": [{"n": 3}]},
        "status": "draft", "count": 1.5, "ok": False,
    }
    jsonschema.Draft202012Validator(NESTED).validate(value)


@pytest.mark.parametrize("schema", [
    {"type": "array", "items": {"type": "string"}},
    {"type": "string"},
    {"type": "string", "minLength": 12},
    {"enum": [3, 4]},
    {"const": "fixed"},
    {"type": ["integer", "null"], "minimum": 2},
    {"type": "object", "properties": {"x": {"type": "string"}}},
])
def test_minimal_instance_is_valid(schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(schema).validate(minimal_instance(schema))


def test_minimal_instance_is_valid_for_the_example_schemas() -> None:
    from pathlib import Path

    schemas = Path(__file__).parents[3] / "examples" / "research-review" / "schemas"
    for path in sorted(schemas.glob("*.json")):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator(schema).validate(minimal_instance(schema))


@pytest.mark.parametrize("schema", [
    {"type": "object", "required": ["a", "b"], "properties": {"a": 5, "b": ["x"]}},
    {"type": "object", "required": "a", "properties": []},
    {"type": "array", "items": 3, "minItems": "two"},
    {"type": "string", "minLength": 10**12},
    {"type": [], "enum": "abc"},
    {"type": "integer", "minimum": "zero"},
    7, None, ["type"],
])
def test_minimal_instance_never_fails_on_what_is_not_a_schema(schema: Any) -> None:
    """Issue 10: a dispatch whose output schema had non-object properties made the mock raise."""
    value = minimal_instance(schema)
    assert len(json.dumps(value)) < 2000


async def test_a_script_with_malformed_tool_calls_or_delay_is_read_as_far_as_it_makes_sense() -> None:
    script = [{"$mock_tool_calls": ["read", {"name": "read", "args": 3}], "$mock_delay_s": "soon"}]
    result = await MockProvider().complete(request(mock_responses=script, tool_defs=None))
    assert [(c.name, c.input) for c in result.tool_calls] == [("read", {})]


async def test_an_output_schema_that_is_no_json_schema_fails_the_node_before_any_call(agent_dispatch) -> None:
    cause, dispatch = agent_dispatch(output_schema_json={"type": "object", "properties": {"a": 5}})
    [answer] = await AgentRunner(Gateway()).handle(cause, dispatch)
    assert answer.type == "node.errored" and answer.data["retryable"] is False
    assert "output schema is not a valid JSON Schema at properties/a" in answer.data["error"]


# --- the runner with the mock -----------------------------------------------------------------

async def test_handle_with_the_mock_records_the_call_then_completes(agent_dispatch) -> None:
    script = {"goal": "compare", "constraints": ["short"]}
    cause, dispatch = agent_dispatch(mock_responses=[script])
    llm, done = await AgentRunner(Gateway()).handle(cause, dispatch)

    assert llm.type == "llm.called"
    assert llm.id == derive_id(cause.id, "llm")
    assert llm.source == SOURCE
    assert (llm.data["provider"], llm.data["model"], llm.data["cost_usd"]) == ("mock", "mock-1", "0")
    assert (llm.data["dispatch_id"], llm.data["node"]) == ("disp-7", "interpretation")
    assert llm.data["price_table"] == pricing.PRICE_TABLE_VERSION

    assert done.type == "node.completed"
    assert done.id == derive_id(cause.id, "completed")
    assert (done.task_id, done.correlation_id, done.causation_id) == ("task-1", "corr-1", cause.id)
    assert done.data["output"] == script
    assert (done.data["provider"], done.data["attempt"]) == ("mock", 1)
    assert done.data["usage"] == llm.data["usage"]


async def test_handle_with_the_mock_and_no_script_passes_the_schema(agent_dispatch) -> None:
    cause, dispatch = agent_dispatch()
    _, done = await AgentRunner(Gateway()).handle(cause, dispatch)
    assert done.type == "node.completed"
    assert done.data["output"] == {"goal": "mock", "constraints": []}


async def test_output_violating_the_schema_is_a_retryable_error_naming_the_path(agent_dispatch) -> None:
    cause, dispatch = agent_dispatch(mock_responses=[{"goal": "g", "constraints": ["ok", 7]}], max_repairs=0)
    llm, err = await AgentRunner(Gateway()).handle(cause, dispatch)
    assert llm.type == "llm.called"  # the call happened and is paid for either way
    assert err.type == "node.errored"
    assert err.id == derive_id(cause.id, "errored")
    assert err.data["retryable"] is True
    assert err.data["error"] == "output does not match the node's schema: constraints/1: 7 is not of type 'string'"


async def test_missing_required_field_is_reported_at_the_root(agent_dispatch) -> None:
    cause, dispatch = agent_dispatch(mock_responses=[{"constraints": []}], max_repairs=0)
    _, err = await AgentRunner(Gateway()).handle(cause, dispatch)
    assert err.data["error"] == "output does not match the node's schema: (root): 'goal' is a required property"


async def test_a_later_attempt_uses_the_later_script(agent_dispatch) -> None:
    bad, good = {"goal": ""}, {"goal": "fixed", "constraints": []}
    runner = AgentRunner(Gateway())
    cause, dispatch = agent_dispatch(attempt=1, mock_responses=[bad, good], max_repairs=0)
    assert [e.type for e in await runner.handle(cause, dispatch)] == ["llm.called", "node.errored"]
    cause, dispatch = agent_dispatch(attempt=2, mock_responses=[bad, good], max_repairs=0)
    assert [e.type for e in await runner.handle(cause, dispatch)] == ["llm.called", "node.completed"]


async def test_anthropic_without_a_key_is_a_permanent_error_and_no_call(agent_dispatch) -> None:
    cause, dispatch = agent_dispatch(provider="anthropic")
    failed, err = await AgentRunner(Gateway()).handle(cause, dispatch)
    assert failed.type == "llm.call_failed"
    assert (failed.data["error_class"], failed.data["then"]) == ("NotConfigured", "give_up")
    assert err.type == "node.errored"
    assert err.data["retryable"] is False
    assert "ANTHROPIC_API_KEY" in err.data["error"]


async def test_an_unknown_model_is_recorded_as_unpriced(agent_dispatch) -> None:
    class Fixed:
        name = "anthropic"

        async def complete(self, req: LlmRequest, model: str) -> LlmResult:
            return LlmResult('{"goal": "g", "constraints": []}', Usage(input_tokens=3, output_tokens=4),
                             "anthropic", "claude-nova-9")

    gateway = Gateway({"anthropic": Fixed})
    cause, dispatch = agent_dispatch(provider="anthropic")
    llm, done = await AgentRunner(gateway).handle(cause, dispatch)
    assert (llm.data["model"], llm.data["cost_usd"]) == ("claude-nova-9", "unpriced")
    assert done.type == "node.completed"


def test_build_request_carries_schema_input_and_upstream(agent_dispatch) -> None:
    _, dispatch = agent_dispatch(attempt=2)
    req = build_request(dispatch)
    assert req.attempt == 2
    assert req.system.startswith("You are careful.")
    assert json.dumps(dispatch.agent.output_schema_json, indent=1) in req.system
    [turn] = req.turns
    assert turn.role == "user"
    assert turn.content.startswith("Interpret the brief.")
    assert '"brief": "Compare engines."' in turn.content
    assert '"gather_context"' in turn.content
    assert "revision" not in turn.content and "merge" not in turn.content


def test_build_request_shows_a_reviser_its_feedback_and_a_merger_its_inputs(agent_dispatch) -> None:
    _, dispatch = agent_dispatch()
    dispatch.context.feedback = {"approved": False, "comments": "cite a source"}
    dispatch.context.revision = 2
    dispatch.context.merged = {"items": [{"view": "optimist"}, {"view": "skeptic"}]}
    [turn] = build_request(dispatch).turns
    prompt = turn.content
    assert "This is revision 2." in prompt
    assert '"comments": "cite a source"' in prompt
    assert "The outputs you are to merge into one:" in prompt
    assert '"view": "skeptic"' in prompt


# --- pricing ----------------------------------------------------------------------------------

def test_cost_for_sonnet_with_cache_tokens_is_exact() -> None:
    # input_tokens includes the cache tokens: 300 plain + 800 cache read + 100 cache write
    usage = Usage(input_tokens=1200, output_tokens=340, cache_read_tokens=800, cache_write_tokens=100)
    # (300 * 3 + 340 * 15 + 800 * 0.30 + 100 * 3.75) / 1e6
    assert pricing.cost("claude-sonnet-4-5", usage) == Decimal("0.006615")
    assert str(pricing.cost("claude-sonnet-4-5", usage)) == "0.006615"


def test_cost_sums_exactly_without_float_drift() -> None:
    usage = Usage(input_tokens=1, output_tokens=1)
    total = sum((pricing.cost("claude-haiku-4-5", usage) or Decimal(0) for _ in range(10)), Decimal(0))
    assert total == Decimal("0.00006")


@pytest.mark.parametrize(("model", "per_million_input"), [
    ("claude-sonnet-4-5-20250929", Decimal(3)), ("claude-opus-4-1", Decimal(15)), ("claude-haiku-4-5", Decimal(1)),
])
def test_cost_matches_the_model_family(model: str, per_million_input: Decimal) -> None:
    assert pricing.cost(model, Usage(input_tokens=1_000_000)) == per_million_input


@pytest.mark.parametrize("model", ["mistral-large", "claude-3-opus", ""])
def test_cost_of_an_unknown_model_is_none(model: str) -> None:
    assert pricing.cost(model, Usage(input_tokens=10, output_tokens=5)) is None


def test_mock_calls_cost_zero() -> None:
    assert pricing.cost("mock-1", Usage(input_tokens=10_000, output_tokens=10_000)) == Decimal(0)


# --- extract_json -----------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    '{"goal": "x"}',
    '```json\n{"goal": "x"}\n```',
    'Here you go:\n```\n{"goal": "x"}\n```\nAnything else?',
    'Sure! {"goal": "x"} Hope that helps.',
])
def test_extract_json(text: str) -> None:
    assert extract_json(text) == {"goal": "x"}


def test_extract_json_keeps_nested_braces() -> None:
    assert extract_json('```json\n{"a": {"b": [1, {"c": 2}]}}\n```') == {"a": {"b": [1, {"c": 2}]}}


@pytest.mark.parametrize("text", ["I cannot help with that.", "", "[1, 2]", "{not json}"])
def test_extract_json_of_a_non_json_reply_names_the_reply(text: str) -> None:
    with pytest.raises(NotAJsonObject, match="model reply is not a JSON object") as info:
        extract_json(text)
    assert repr(text[:80]) in str(info.value)



def test_a_price_table_file_prices_calls_and_names_its_problems(tmp_path, monkeypatch) -> None:
    table = tmp_path / "prices.json"
    table.write_text(json.dumps({"version": "test-1", "models": {
        "local-": {"input": "0.5", "output": "1", "cache_read": "0.25", "cache_write": "0"}}}))
    loaded = pricing.load(table)
    assert loaded.version == "test-1"
    assert loaded.cost("local-llama", Usage(input_tokens=2_000_000, output_tokens=1_000_000)) == Decimal(2)
    assert loaded.cost("claude-sonnet-4-5", Usage(input_tokens=1)) is None

    monkeypatch.setenv("AE_PRICE_TABLE", str(table))
    pricing.active.cache_clear()
    try:
        assert pricing.active().version == "test-1"
    finally:
        pricing.active.cache_clear()

    table.write_text(json.dumps({"version": "bad", "models": {"m": {"input": "1", "output": "x"}}}))
    with pytest.raises(SystemExit, match=r"prices.json: ValueError: model 'm' lacks \['cache_read', 'cache_write'\]"):
        pricing.load(table)
    table.write_text(json.dumps({"version": "bad", "models": {"m": {"input": "-1", "output": "1", "cache_read": "0",
                                                                   "cache_write": "0"}}}))
    with pytest.raises(SystemExit, match="negative price"):
        pricing.load(table)


def test_the_bundled_table_prices_openai_compatible_models() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cache_read_tokens=500_000)
    assert pricing.cost("gpt-4o-mini-2024-07-18", usage) == Decimal("0.075") + Decimal("0.0375") + Decimal("0.60")
