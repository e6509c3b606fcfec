"""The tool-runner's side of the tool gate: it answers only `tool.call_cleared`, and its results carry the ids
a runner answering the router's dispatch itself would give, so the call log and idempotency are unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent_engine.contracts.envelope import command
from agent_engine.contracts.events import DispatchedTool, NodeDispatched, ToolCallCleared
from agent_engine.runtime.runner import NotCleared, _as_dispatch, errored

DEADLINE = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=9)


def dispatch() -> NodeDispatched:
    return NodeDispatched(dispatch_id="d-1", node="n", kind="tool", attempt=1, deadline=DEADLINE,
                          tool=DispatchedTool(name="read", builtin="workspace_read", args={"path": "a"}))


def test_a_cleared_call_is_answered_with_the_ids_its_dispatch_would_have_given() -> None:
    routed = command(dispatch(), tenant="acme", task_id="t-1", source="router")
    cleared = command(ToolCallCleared(**dispatch().model_dump(), dispatch_event=routed.id, rules=["tool.path"]),
                      tenant="acme", task_id="t-1", source="guardrails")
    cause, data = _as_dispatch(cleared, "tool")
    assert cause.id == routed.id and data.dispatch_id == "d-1" and data.tool == dispatch().tool
    before = errored(routed, "tool-runner", dispatch(), "x", retryable=False)
    after = errored(cause, "tool-runner", data, "x", retryable=False)
    assert after.id == before.id and after.causation_id == routed.id


def test_the_tool_runner_refuses_a_dispatch_that_did_not_pass_the_gate() -> None:
    routed = command(dispatch(), tenant="acme", task_id="t-1", source="router")
    with pytest.raises(NotCleared, match="runs only calls guardrails cleared"):
        _as_dispatch(routed, "tool")
    assert _as_dispatch(routed, "agent")[0] is routed  # the agent-runner takes dispatches as before
