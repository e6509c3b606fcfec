"""What the agent-runner publishes for a dispatch, pinned: the events `AgentRunner.handle` answers 15 dispatches
with (plain and scripted mock replies, repairs, tool use, a summary, token and money budgets, an unusable schema,
memory, the output gate, a fallback), as the runner sends them, byte for byte but for their times. A change to the
hot path must leave these alone; a change meant to alter what is published rewrites the file on purpose:
`AE_REWRITE_GOLDEN=1 pytest services/agent-runner/tests/test_golden_answers.py`, and the diff is reviewed."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent_engine.agent_runner.providers import Gateway
from agent_engine.agent_runner.service import SOURCE, AgentRunner
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import NodeDispatched
from agent_engine.runtime.runner import _outgoing

GOLDEN = Path(__file__).parent / "golden" / "mock_answers.json"
T = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
TIMED = ("time", "duration_ms", "latency_ms")
"""What differs between two answers to the same dispatch: when, and how long it took."""


def dispatch(n: int, agent: dict[str, Any], context: dict[str, Any] | None = None,
             **extra: Any) -> tuple[Envelope, NodeDispatched]:
    spec = {"name": "interpreter", "provider": "mock", "model": "claude-sonnet-4-5", "system": "You are careful.",
            "prompt": "Interpret the brief.", **agent}
    data = {"dispatch_id": f"disp-{n}", "node": "interpretation", "kind": "agent", "attempt": 1,
            "deadline": (T + timedelta(seconds=60)).isoformat(), "agent": spec,
            "context": context or {"input": {"brief": "Compare engines."}, "upstream": {"gather": {"words": 2}}},
            **extra}
    cause = Envelope(id=f"evt-{n}", source="agent-engine/router", type="node.dispatched", time=T, tenant="acme",
                     task_id="task-1", correlation_id="corr-1", data=data)
    return cause, NodeDispatched.model_validate(cause.data)


def untimed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("T" if k in TIMED else untimed(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


SCHEMA = {"type": "object", "required": ["goal", "constraints"],
          "properties": {"goal": {"type": "string", "minLength": 1},
                         "constraints": {"type": "array", "items": {"type": "string"}}}}
TOOLS = [{"name": "read", "description": "read a file",
          "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}]
CONV = [{"turn": 0, "thought": "look",
         "calls": [{"call_id": "c1", "tool": "read", "args": {"path": "a"}, "output": {"text": "hello"}}]},
        {"turn": 1, "thought": "again",
         "calls": [{"call_id": "c2", "tool": "read", "args": {"path": "b"}, "error": "no such file"}]}]
CASES: list[tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]] = [
    ({}, None, {}),
    ({"output_schema": "interpretation", "output_schema_json": SCHEMA}, None, {"budget_usd": "0.50"}),
    ({"output_schema_json": SCHEMA, "mock_responses": [{"$mock_invalid": "not json"}, {"goal": 3}, {"goal": "g", "constraints": ["c"]}]}, None, {}),
    ({"output_schema_json": SCHEMA, "mock_responses": [{"$mock_invalid": "nope"}], "max_repairs": 1}, None, {}),
    ({"tool_defs": TOOLS, "mock_responses": [{"$mock_tool_calls": [{"name": "read", "args": {"path": "$input.brief"}}], "$mock_thought": "hm"}]}, None, {}),
    ({"tool_defs": TOOLS, "max_tool_turns": 2}, {"input": {"q": 1}, "upstream": {}, "conversation": CONV, "summarise": 1}, {"turn": 2}),
    ({}, {"input": {"q": "x" * 400}, "upstream": {}, "token_budget": 10}, {}),
    ({}, None, {"budget_usd": "0.0000001"}),
    ({"provider": "anthropic", "model": "claude-sonnet-4-5"}, None, {"budget_usd": "1"}),
    ({"output_schema_json": {"type": "object", "properties": {"a": {"type": 5}}}}, None, {}),
    ({"output_schema_json": SCHEMA}, {"input": {"a": [1, 2]}, "upstream": {"x": {"y": "z"}}, "merged": {"m": 1},
                                       "feedback": {"say": "more"}, "revision": 2}, {"check_output": {"pii": "redact"}}),
    ({"provider": "anthropic", "model": "claude-sonnet-4-5"}, {"input": {"q": "x" * 4000}, "upstream": {}}, {"budget_usd": "0.000001"}),
    ({"output_schema_json": {"type": "object", "required": ["n", "tags"], "properties": {"n": {"type": "integer", "minimum": 3}, "tags": {"type": "array", "minItems": 2, "items": {"type": "string", "minLength": 6}}}}},
     {"input": {"nested": {"a": [1, 2.5, None, True, "é\u2028\"q\""], "b": {}}, "empty": []}, "upstream": {"n1": {}, "n2": {"x": 1e20, "y": -0.0}}}, {}),
    ({}, {"input": {}, "upstream": {}, "memory": {"layers": ["task"], "project": "p"}}, {}),
    ({"provider": "openai", "model": "gpt-4o", "fallbacks": [{"provider": "mock", "model": "mock-1"}]}, None, {}),
]


async def answers() -> list[list[str]]:
    """Per case, each published event: its JSON with the times replaced, keys in the order they were sent."""
    async def recall(cause: Envelope, d: NodeDispatched) -> str:
        return "Memory (saved notes, newest first):\n[task] k: v" if d.context.memory else ""

    runner = AgentRunner(Gateway(), memory=recall)
    out = []
    for n, (agent, context, extra) in enumerate(CASES):
        cause, d = dispatch(n, agent, context, **extra)
        events, bodies = _outgoing(await runner.handle(cause, d), SOURCE, cause, d)
        sent = [e.to_bytes() if b is None else b for e, b in zip(events, bodies, strict=True)]
        out.append([json.dumps(untimed(json.loads(body))) for body in sent])
    return out


async def test_the_answers_are_the_pinned_ones() -> None:
    got = await answers()
    if os.environ.get("AE_REWRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    pinned = json.loads(GOLDEN.read_text())
    assert len(got) == len(pinned) == len(CASES)
    for case, (mine, theirs) in enumerate(zip(got, pinned, strict=True)):
        assert mine == theirs, f"case {case}: {CASES[case]}"
