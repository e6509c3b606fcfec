"""The deterministic mock provider, labelled `mock` wherever its output shows."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from agent_engine.agent_runner.providers.base import MOCK, LlmRequest, LlmResult, ToolCall, estimate_tokens
from agent_engine.contracts.events import Usage

INVALID = "$mock_invalid"
"""A script item `{"$mock_invalid": "some text"}` makes the mock reply with that text verbatim, so the
structured-output repair path runs offline."""
DELAY = "$mock_delay_s"
"""A script item may add `"$mock_delay_s": 3` to take that long to answer (a slow call, offline)."""
TOOL_CALLS = "$mock_tool_calls"
"""A script item `{"$mock_tool_calls": [{"name": "read", "args": {...}}], "$mock_thought": "..."}` makes the
mock ask for those tools instead of answering, so tool use runs offline. An argument "$input.<field>" takes
that field of the task input."""
THOUGHT = "$mock_thought"
SUMMARY = "summary"
"""An agent-runner request whose `purpose` this is gets a summary, not a script item."""
MODEL = "mock-1"
CHARS_PER_TOKEN = 4
"""The synthetic usage counts about four characters a token (estimate_tokens): a reply is cut at max_tokens of them."""


class MockProvider:
    """Scripted replies per node from the workflow's mock/ files, else the smallest object valid against
    the node's output schema. Call number `attempt + turn + repair` (from 1) takes that item of the script;
    the last item repeats. Usage is synthetic, from text length; a reply longer than the request's max_tokens is
    cut there (stop_reason `max_tokens`), so its output tokens never exceed max_tokens."""

    name = MOCK

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        """Simulated latency (AE_MOCK_DELAY_S), so demos and crash tests have calls in flight."""

    async def complete(self, request: LlmRequest, model: str = MODEL) -> LlmResult:
        item = {} if request.purpose == SUMMARY else _scripted(request)
        extra = item.get(DELAY, 0)
        delay = self.delay_s + (float(extra) if isinstance(extra, int | float) and 0 < extra < 3600 else 0.0)
        if delay:
            await asyncio.sleep(delay)
        asked = item.get(TOOL_CALLS)
        calls: tuple[ToolCall, ...] = ()
        if asked:
            calls = tuple(ToolCall(f"mock_{request.turn}_{i}", str(c.get("name", "")),
                                   {k: _from_input(v, request.task_input) for k, v in _dict(c.get("args")).items()})
                          for i, c in enumerate(asked if isinstance(asked, list) else []) if isinstance(c, dict))
        if request.purpose == SUMMARY:
            text = summary_text(request)
        elif calls:
            text = str(item.get(THOUGHT, ""))
        else:
            text = reply_text(request)
        stop = "tool_use" if calls else "end_turn"
        if estimate_tokens(text) > request.agent.max_tokens:
            # as a real provider does: it stops at max_tokens, mid-reply (so never bills more output than the
            # reservation counted), and tool calls that would have followed the text are never made
            text, calls, stop = text[:request.agent.max_tokens * CHARS_PER_TOKEN], (), "max_tokens"
        usage = Usage(input_tokens=estimate_tokens(request.text()), output_tokens=estimate_tokens(text))
        return LlmResult(text, usage, MOCK, MODEL, calls, stop_reason=stop)


def _scripted(request: LlmRequest) -> dict[str, Any]:
    scripted = request.agent.mock_responses
    call = max(1, min(request.attempt + request.turn + request.repair, len(scripted)))
    return scripted[call - 1] if scripted else {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _from_input(value: Any, task_input: dict[str, Any]) -> Any:
    if not (isinstance(value, str) and value.startswith("$input.")):
        return value
    current: Any = task_input
    for part in value.removeprefix("$input.").split("."):
        current = current.get(part) if isinstance(current, dict) else None
    return current


def summary_text(request: LlmRequest) -> str:
    """A deterministic stand-in for a summary, saying it is one."""
    return f"[mock summary] earlier tool use, {len(request.turns[-1].content)} characters of it, summarised by the mock"


def reply_text(request: LlmRequest) -> str:
    if request.agent.mock_responses:
        item = {k: v for k, v in _scripted(request).items() if k not in (DELAY, THOUGHT)}
        if INVALID in item:
            raw = item[INVALID]
            return raw if isinstance(raw, str) else json.dumps(raw)
        return json.dumps(item, sort_keys=True)
    schema = request.agent.output_schema_json
    return _minimal_reply(json.dumps(schema)) if schema else EMPTY_REPLY


EMPTY_REPLY = "{}"
"""The reply to a node with no output schema: the smallest object."""


@functools.lru_cache(maxsize=256)
def _minimal_reply(schema_json: str) -> str:
    """The reply for a node without a script, once per schema (by its exact JSON text, as structured.compiled)."""
    output = minimal_instance(json.loads(schema_json))
    if not isinstance(output, dict):
        output = {"result": output}
    return json.dumps(output, sort_keys=True)


def minimal_instance(schema: Any) -> Any:
    """The smallest value that satisfies a (simple) JSON Schema: required properties, min lengths.
    Total: a part that is not a schema (say a property given as a number) counts as "anything"."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = kind[0] if kind else "object"
    if kind == "object":
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
        return {name: minimal_instance(props.get(name, {})) for name in names}
    if kind == "array":
        return [minimal_instance(schema.get("items", {})) for _ in range(_count(schema.get("minItems")))]
    if kind == "string":
        return "mock" + "x" * max(0, _count(schema.get("minLength")) - 4)
    if kind in ("integer", "number"):
        minimum = schema.get("minimum", 0)
        return minimum if isinstance(minimum, int | float) and not isinstance(minimum, bool) else 0
    if kind == "boolean":
        return False
    return None


def _count(value: Any) -> int:
    """A schema's minItems / minLength as a sane count (at most 1000: a mock never builds huge values)."""
    return min(value, 1000) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
