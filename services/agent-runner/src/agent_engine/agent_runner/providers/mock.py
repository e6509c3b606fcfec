"""The deterministic mock provider, labelled `mock` wherever its output shows."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agent_engine.agent_runner.providers.base import MOCK, LlmRequest, LlmResult, estimate_tokens
from agent_engine.contracts.events import Usage

INVALID = "$mock_invalid"
"""A script item `{"$mock_invalid": "some text"}` makes the mock reply with that text verbatim, so the
structured-output repair path runs offline."""
DELAY = "$mock_delay_s"
"""A script item may add `"$mock_delay_s": 3` to take that long to answer (a slow call, offline)."""
MODEL = "mock-1"


class MockProvider:
    """Scripted replies per node from the workflow's mock/ files, else the smallest object valid against
    the node's output schema. Call number `attempt + repair` (from 1) takes that item of the script; the
    last item repeats. Usage is synthetic, from text length."""

    name = MOCK

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        """Simulated latency (AE_MOCK_DELAY_S), so demos and crash tests have calls in flight."""

    async def complete(self, request: LlmRequest, model: str = MODEL) -> LlmResult:
        delay = self.delay_s + float(_scripted(request).get(DELAY, 0))
        if delay:
            await asyncio.sleep(delay)
        text = reply_text(request)
        prompt = request.system + "".join(turn.content for turn in request.turns)
        usage = Usage(input_tokens=estimate_tokens(prompt), output_tokens=estimate_tokens(text))
        return LlmResult(text, usage, MOCK, MODEL, stop_reason="end_turn")


def _scripted(request: LlmRequest) -> dict[str, Any]:
    scripted = request.agent.mock_responses
    return scripted[min(request.attempt + request.repair, len(scripted)) - 1] if scripted else {}


def reply_text(request: LlmRequest) -> str:
    if request.agent.mock_responses:
        item = {k: v for k, v in _scripted(request).items() if k != DELAY}
        if INVALID in item:
            raw = item[INVALID]
            return raw if isinstance(raw, str) else json.dumps(raw)
        return json.dumps(item, sort_keys=True)
    output = minimal_instance(request.agent.output_schema_json or {"type": "object"})
    if not isinstance(output, dict):
        output = {"result": output}
    return json.dumps(output, sort_keys=True)


def minimal_instance(schema: dict[str, Any]) -> Any:
    """The smallest value that satisfies a (simple) JSON Schema: required properties, min lengths."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        props = schema.get("properties", {})
        return {name: minimal_instance(props.get(name, {})) for name in schema.get("required", [])}
    if kind == "array":
        return [minimal_instance(schema.get("items", {})) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "mock" + "x" * max(0, schema.get("minLength", 0) - 4)
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return None
