"""Cancel: stopping a task on request, and what becomes of results that arrive after a task ended.

A running or waiting task is cancelled at once: its open nodes are recorded as cancelled and its
subtasks are asked to stop; a queued task, or a subtask whose parent ended before it started, is
cancelled without ever starting. A runner's result for a node that was running when the task ended
is recorded once (node.result_ignored) and changes nothing. Pages: docs/workflows.md (How a task
runs, 6. Late results and 7. Cancel), docs/workflows/subtasks.md (ending early and cancelling),
docs/workflows/scheduling.md (a queued task).
"""

from __future__ import annotations

from agent_engine.contracts.events import NodeResultIgnored, TaskCancelled, TaskCancelRequested
from agent_engine.router.emitter import Emitter
from agent_engine.router.records import RouterInput
from agent_engine.router.walk import finish


def on_cancel(out: Emitter, inp: RouterInput, request: TaskCancelRequested) -> None:
    state = out.state
    if state.status == "new" and request.parent_id:
        # the parent ended before this subtask started: make sure it never does
        out.add(TaskCancelled(reason=request.reason or "cancelled with its parent", requested_by=request.requested_by))
        return
    if state.status == "queued":
        out.add(TaskCancelled(reason=request.reason or "cancelled while queued", requested_by=request.requested_by))
        return
    if state.status not in ("running", "waiting"):
        return  # nothing to stop: not started, or already finished
    finish(out, "cancelled", request.reason or "cancelled on request", requested_by=request.requested_by)


def ignore_late_result(out: Emitter, node_id: str, dispatch_id: str, event_type: str) -> None:
    """A result for a node that was running when the task ended: recorded once, then unused."""
    node = out.state.nodes.get(node_id)
    if node is None or node.status not in ("cancelled", "abandoned") or node.dispatch_id != dispatch_id:
        return
    out.add(NodeResultIgnored(dispatch_id=dispatch_id, node=node_id, attempt=node.attempts,
                              reason=f"the task had ended ({out.state.status}) before this {event_type} arrived"))
