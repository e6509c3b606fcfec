"""Results: what a runner's answer to a dispatch does (node.completed, node.errored, node.output_checked).

Only the answer to a node's open dispatch counts, or a late answer of an earlier attempt of the same
step (dispatch.superseded); redeliveries and stale answers change nothing, and an answer that arrives
after the task ended is recorded once and ignored (cancel.py). With output checks (the workflow's
`policy.output`) only guardrails' node.output_checked answers: the output as checked (personal data
redacted), or held for a person (pauses.py). An output settles the node (walk.py), or, for a tool call
an agent's model asked for, becomes the call's result (tool_turns.py). An error is retried (retries.py),
shown to the model (a tool call's), or fails the node; a tool call the tool gate holds waits for a person
(approvals.py). Pages: docs/workflows.md (How a task runs), docs/workflows/failures.md,
docs/workflows/tool-use.md (Failures), docs/guardrails.md (Output checks).
"""

from __future__ import annotations

from agent_engine.contracts.events import NodeCompleted, NodeErrored, NodeOutputChecked
from agent_engine.router.approvals import hold_for_approval
from agent_engine.router.cancel import ignore_late_result
from agent_engine.router.dispatch import open_node, superseded
from agent_engine.router.emitter import Emitter
from agent_engine.router.pauses import pause_after_failure, pause_for_verdict
from agent_engine.router.records import RouterInput
from agent_engine.router.retries import retry_or_fail
from agent_engine.router.state import TaskState
from agent_engine.router.tool_turns import tool_returned
from agent_engine.router.walk import node_failed, succeed


def on_completed(out: Emitter, inp: RouterInput, completed: NodeCompleted) -> None:
    state = out.state
    if state.terminal:
        ignore_late_result(out, completed.node, completed.dispatch_id, inp.event.type)
        return
    if gated(state) and not isinstance(completed, NodeOutputChecked):
        return  # its output must pass guardrails' output gate first: only the gate's answer counts
    if state.status not in ("running", "waiting"):
        return
    node = open_node(state, completed.node, completed.dispatch_id) or superseded(
        state, completed.node, completed.attempt, completed.dispatch_id)
    if node is None:
        return
    assert state.manifest is not None
    spec = state.manifest.node(completed.node)
    if isinstance(completed, NodeOutputChecked) and completed.outcome == "paused":
        pause_for_verdict(out, spec, node, completed)  # a node's output, or a tool call's result for its model
        return
    if node.call is not None:  # the result of a tool call the node's model asked for
        tool_returned(out, spec, completed.dispatch_id, completed.attempt, output=completed.output)
        return
    succeed(out, spec, completed)


def gated(state: TaskState) -> bool:
    """Whether the task's workflow checks outputs: then a node's answer is guardrails' node.output_checked."""
    return state.manifest is not None and state.manifest.policy is not None and state.manifest.policy.output is not None


def on_errored(out: Emitter, inp: RouterInput, errored: NodeErrored) -> None:
    if out.state.terminal:
        ignore_late_result(out, errored.node, errored.dispatch_id, inp.event.type)
        return
    node = open_node(out.state, errored.node, errored.dispatch_id)
    if node is None or out.state.status not in ("running", "waiting"):
        return
    assert out.state.manifest is not None
    tool_step = node.call is not None or out.state.manifest.node(errored.node).kind == "tool"
    if errored.refusal is not None and errored.refusal.approval and tool_step:  # the tool gate holds the call
        hold_for_approval(out, errored.node, node, errored.refusal)
        return
    if errored.retryable:
        retry_or_fail(out, errored.node, node, f"runner error: {errored.error}")
    elif node.call is not None:  # a tool call that failed: the model sees the error and may correct itself
        assert out.state.manifest is not None
        tool_returned(out, out.state.manifest.node(errored.node), errored.dispatch_id, errored.attempt,
                      error=errored.error, refusal=errored.refusal)
    else:
        assert out.state.manifest is not None
        if not pause_after_failure(out, out.state.manifest.node(errored.node), node, errored.error):
            node_failed(out, errored.node, node.attempts, errored.error)
