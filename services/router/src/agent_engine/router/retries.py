"""Retries, backoff and deadlines: when a node's attempt is tried again, and when the node gives up.

A retryable runner error, or a deadline passing without a result, costs the node an attempt: the next
one is dispatched at once, or after a backoff (exponential, capped, with jitter derived from the task,
node and attempt, so a replay computes the same delay; node.retry_scheduled, then the router's own
node.retry_due); after `max_attempts` the node fails (a tool call an agent's model asked for returns
the error to the model instead). Which result answers which attempt: dispatch.py (open_node,
superseded). Page: docs/workflows/failures.md.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from agent_engine.contracts.envelope import derive_id
from agent_engine.contracts.events import NodeDeadlineExpired, NodeRetryDue, NodeRetryScheduled
from agent_engine.contracts.manifest import NodeSpec
from agent_engine.router.dispatch import open_node
from agent_engine.router.emitter import Emitter
from agent_engine.router.pauses import failures, pause_after_failure
from agent_engine.router.records import RouterInput
from agent_engine.router.state import NodeState
from agent_engine.router.tool_turns import tool_returned
from agent_engine.router.walk import dispatch, node_failed


def retry_or_fail(out: Emitter, node_id: str, node: NodeState, why: str) -> None:
    assert out.state.manifest is not None
    spec = out.state.manifest.node(node_id)
    if pause_after_failure(out, spec, node, why):
        return
    if failures(node) >= spec.max_attempts:
        if node.call is not None:  # a tool call that keeps failing: the model hears of it, the node goes on
            tool_returned(out, spec, node.dispatch_id, node.attempts,
                          error=f"{why}; gave up after {node.attempts} attempts")
            return
        node_failed(out, node_id, node.attempts, f"{why}; gave up after {node.attempts} attempts")
        return
    delay = backoff_delay(spec, out.task_id, node.attempts)
    if delay > 0:
        out.add(NodeRetryScheduled(node=node_id, attempt=node.attempts + 1, at=out.now + timedelta(seconds=delay),
                                   delay_s=delay, reason=f"retry: {why}"))
        return
    dispatch(out, spec, node.attempts + 1, f"retry: {why}")


def backoff_delay(spec: NodeSpec, task_id: str, failed_attempt: int) -> float:
    """Seconds before the attempt after `failed_attempt`: exponential, capped, with a jitter factor in
    [0.5, 1) taken from a hash of (task, node, attempt), so replays compute the same delay."""
    if spec.backoff_s <= 0:
        return 0.0
    base = min(spec.backoff_max_s, spec.backoff_s * 2.0 ** (failed_attempt - 1))
    jitter = 0.5 + (uuid.UUID(derive_id(task_id, spec.id, failed_attempt, "jitter")).int % 1000) / 2000
    return round(base * jitter, 3)


def on_deadline(out: Emitter, inp: RouterInput, expired: NodeDeadlineExpired) -> None:
    node = open_node(out.state, expired.node, expired.dispatch_id)
    if node is None or out.state.status not in ("running", "waiting"):
        return
    assert out.state.manifest is not None
    timeout = out.state.manifest.node(expired.node).timeout_s
    retry_or_fail(out, expired.node, node, f"no result within the {timeout:g}s deadline")


def on_retry_due(out: Emitter, inp: RouterInput, due: NodeRetryDue) -> None:
    state = out.state
    waiting = state.nodes.get(due.node)
    if (state.status not in ("running", "waiting") or waiting is None or waiting.status != "retry_scheduled"
            or waiting.attempts + 1 != due.attempt or (due.at is not None and due.at != waiting.deadline)):
        return
    assert state.manifest is not None
    # approved: a scheduled attempt was built past the node's approval (a node a person approved and that then
    # waited for room in a day budget is scheduled as attempt 1), so the person is not asked a second time; a task
    # pinned before approvals were asked once (approval_answers_gate) asked again then, and its replay still does
    dispatch(out, state.manifest.node(due.node), due.attempt, waiting.error or "retry",
             approved=state.manifest.approval_answers_gate)
