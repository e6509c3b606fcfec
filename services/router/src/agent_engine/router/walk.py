"""The graph walk: what happens when a node settles, until the task waits for a runner or ends.

A node that succeeds (or fails and continues, or is skipped) offers its successors a path: a DECISION
takes the one edge its output chose, the others die; a node all of whose paths in are dead is skipped,
and so on down the graph; a MERGE fires under its policy; a SPLIT fans out into subtasks; an EXIT ends
the task with its status. A node that fails for good fails the task, unless it continues on failure
or no path from it matters any more. Every step is recorded through the emitter, and the next step
sees its effect. Pages: docs/workflows/roles.md (roles, joins, skipped paths, how a task ends),
docs/workflows/loops.md, docs/workflows/subtasks.md (the cancel cascade, telling the parent).
"""

from __future__ import annotations

from typing import Any

from agent_engine.contracts.events import (
    NodeCompleted,
    NodeDispatched,
    NodeFailed,
    NodeSkipped,
    NodeSucceeded,
    SubtaskFinished,
    TaskCancelled,
    TaskCancelRequested,
    TaskFailed,
    TaskSucceeded,
)
from agent_engine.contracts.manifest import NodeSpec, WorkflowManifest, lookup
from agent_engine.router.budgeting import reserve, settle_unanswered, share_out
from agent_engine.router.budgets import usd
from agent_engine.router.dispatch import Fails, build_dispatch
from agent_engine.router.emitter import Emitter
from agent_engine.router.folds import add_usage
from agent_engine.router.loops import revision_request, wants_revision
from agent_engine.router.merge import Fired, edge, fan_out, merge_now
from agent_engine.router.pauses import pause_for_doubt
from agent_engine.router.state import TaskState


def succeed(out: Emitter, spec: NodeSpec, completed: NodeCompleted, *, accepted: bool = False) -> None:
    """A node's result is in: record it, then send work back (revise) or move on. A result of low confidence
    waits for a person first, unless one `accepted` it."""
    assert out.state.manifest is not None
    if not accepted and pause_for_doubt(out, spec, completed):
        return
    revising = wants_revision(out.state, spec, completed.output)
    chosen, problem = (None, "") if revising else _choose(out.state.manifest, spec, completed.output)
    if problem:
        node_failed(out, spec.id, completed.attempt, problem)
        return
    out.add(NodeSucceeded(
        dispatch_id=completed.dispatch_id, node=completed.node, attempt=completed.attempt,
        output=completed.output, provider=completed.provider, model=completed.model,
        usage=add_usage(out.state.nodes[spec.id].turn_usage, completed.usage), chosen=chosen,
    ))
    if revising:
        asked = revision_request(out.state, spec, completed.output)
        out.add(asked)
        why = f"revision {asked.revision} of {asked.max_revisions} asked by '{spec.id}'"
        dispatch(out, out.state.manifest.node(asked.target), 1, why)
    else:
        advance(out, spec.id)


def _choose(manifest: WorkflowManifest, spec: NodeSpec, output: dict[str, Any]) -> tuple[str | None, str]:
    """(chosen successor for a DECISION, problem); a problem fails the node."""
    if spec.role == "SPLIT":
        assert spec.split is not None
        present, items = lookup(output, spec.split.items)
        if not present or not isinstance(items, list):
            return None, (f"SPLIT output has no list at '{spec.split.items}' "
                          f"(got {type(items).__name__ if present else 'nothing'})")
        if len(items) > spec.split.max_items:
            return None, f"SPLIT output lists {len(items)} items, over the declared max_items {spec.split.max_items}"
        return None, ""
    if spec.role != "DECISION":
        return None, ""
    edges = manifest.successors(spec.id)
    for e in edges:
        if e.when is not None and e.when.matches(output):
            return e.to, ""
    for e in edges:
        if e.default:
            return e.to, ""
    tested = ", ".join(
        f"{e.when.field} {'in ' + repr(e.when.in_) if e.when.in_ is not None else '== ' + repr(e.when.equals)}"
        f" -> {e.to}" for e in edges if e.when
    )
    found = {e.when.field: lookup(output, e.when.field)[1] for e in edges if e.when}
    return None, f"DECISION output matched no edge: got {found}; edges test {tested}"


def advance(out: Emitter, node_id: str) -> None:
    """A node settled (succeeded, failed and continued, or skipped): tell its successors."""
    state = out.state
    assert state.manifest is not None
    spec = state.manifest.node(node_id)
    node = state.nodes[node_id]
    if spec.role == "SPLIT" and spec.split is not None:
        if node.status == "succeeded":
            _fan_out(out, spec)
        else:  # skipped, or failed and continued: the body never runs; its MERGE hears of it
            try_merge(out, spec.split.merge)
        return
    # the taken edge first: when it reaches an EXIT, the paths not taken need no record
    targets = sorted((e.to for e in state.manifest.successors(node_id)), key=lambda t: node.chosen not in (None, t))
    for target in targets:
        if out.state.terminal:
            return
        _arrive(out, target)


def _arrive(out: Emitter, target: str) -> None:
    state = out.state
    assert state.manifest is not None
    manifest = state.manifest
    if target == state.stop_at:  # a subtask's path reached the MERGE that runs in its parent
        pred = manifest.predecessors(target)[0]
        into = edge(state, pred, target)
        if into == "live":
            finish(out, "succeeded", f"subtask reached MERGE node '{target}'", output=state.nodes[pred].output)
        elif into == "failed":  # the parent's MERGE counts it as a failed input, as a BRANCH's would
            finish(out, "failed", f"node '{pred}' failed (continue_on_failure): {state.nodes[pred].error}",
                   continued=True)
        return
    if state.nodes[target].status != "pending":
        return  # already running or settled: a node runs once per revision
    spec = manifest.node(target)
    if spec.role == "MERGE":
        try_merge(out, target)
        return
    edges = [edge(state, p, target) for p in manifest.predecessors(target)]
    if "live" in edges or "failed" in edges:
        activate(out, target, "next")
    elif all(e == "dead" for e in edges):
        out.add(NodeSkipped(node=target, reason="no path into it was taken"))
        advance(out, target)


def activate(out: Emitter, node_id: str, reason: str) -> None:
    """A path reached a node: an EXIT ends the task, any other node is dispatched."""
    assert out.state.manifest is not None
    spec = out.state.manifest.node(node_id)
    if spec.role == "EXIT":
        finish(out, spec.status or "failed", f"reached EXIT node '{spec.id}'", exit_node=spec.id)
        return
    dispatch(out, spec, 1, reason)


def dispatch(out: Emitter, spec: NodeSpec, attempt: int, reason: str, *, approved: bool = False,
             args_override: dict[str, Any] | None = None, resuming: bool = False) -> None:
    """Run a node's current step: record the dispatch built for it (dispatch.py), or what it amounts to. An
    agent dispatch of a task with a budget first reserves its worst case (budgeting.py), or waits, or fails;
    `resuming`: the node waited for room in the budget and is tried again."""
    built = build_dispatch(out.state, out.task_id, out.now, spec, attempt, reason, approved=approved,
                           args_override=args_override)
    if isinstance(built, NodeCompleted):  # a fork's source recorded this answer: no runner is asked again
        succeed(out, spec, built)
    elif isinstance(built, Fails):
        node_failed(out, spec.id, attempt, built.reason)
    elif isinstance(built, NodeDispatched):
        reserved = reserve(out, built, resuming)
        if isinstance(reserved, str):
            node_failed(out, spec.id, attempt, reserved)
        elif reserved is not None:
            out.add(reserved)
    else:
        out.add(built)


def resume_waiting(out: Emitter) -> None:
    """Nodes that wait for room in the budget are tried again, in the order they began to wait (after a
    reservation settled, or anything else the task recorded)."""
    ledger = out.state.budget
    if ledger is None or not ledger.waiting or out.state.manifest is None:
        return
    for node_id, wait in list(ledger.waiting.items()):
        if out.state.terminal or out.state.nodes[node_id].status != "budget_wait":
            continue
        dispatch(out, out.state.manifest.node(node_id), wait.attempt, "room in the budget", approved=True,
                 resuming=True)


def try_merge(out: Emitter, merge_id: str) -> None:
    """Fire a MERGE node once its policy is met; fail it once the policy can no longer be met."""
    now = merge_now(out.state, merge_id)
    if isinstance(now, NodeSkipped):
        out.add(now)
        advance(out, merge_id)
    elif isinstance(now, str):
        node_failed(out, merge_id, 0, now)
    elif isinstance(now, Fired):
        out.add(now.merged)
        for task_id in now.stop:
            _stop_subtask(out, task_id, f"MERGE node '{merge_id}' fired under policy '{now.merged.policy}'")
        assert out.state.manifest is not None
        spec = out.state.manifest.node(merge_id)
        if spec.kind == "agent":
            dispatch(out, spec, 1, "merged")
        else:
            advance(out, merge_id)


def _fan_out(out: Emitter, spec: NodeSpec) -> None:
    assert spec.split is not None
    planned = fan_out(out.state, spec, out.task_id)
    if isinstance(planned, str):
        node_failed(out, spec.id, out.state.nodes[spec.id].attempts, planned)
        return
    out.add(planned.fanned_out)
    budget = share_out(out, spec.id, [task_id for task_id, _ in planned.requests])
    for task_id, request in planned.requests:
        out.add(request.model_copy(update={"budget": budget}) if budget else request, task_id=task_id)
    if not planned.requests:
        try_merge(out, spec.split.merge)


def node_failed(out: Emitter, node_id: str, attempt: int, reason: str) -> None:
    """A node failed for good: the task fails, unless the node declares continue_on_failure."""
    assert out.state.manifest is not None
    spec = out.state.manifest.node(node_id)
    if spec.continue_on_failure:
        out.add(NodeFailed(node=node_id, attempt=attempt, reason=reason, continued=True))
        advance(out, node_id)
        return
    if _moot(out.state, node_id):
        out.add(NodeFailed(node=node_id, attempt=attempt, continued=True,
                           reason=f"{reason} (no longer needed: every path from it ends at a MERGE that fired)"))
        return
    out.add(NodeFailed(node=node_id, attempt=attempt, reason=reason))
    finish(out, "failed", f"node '{node_id}' failed: {reason}")


def _moot(state: TaskState, node_id: str) -> bool:
    """Every path from the node meets a MERGE that already fired (any/quorum) before anything else."""
    assert state.manifest is not None
    todo = [e.to for e in state.manifest.successors(node_id)]
    seen: set[str] = set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        spec = state.manifest.node(current)
        if spec.role == "MERGE" and current != state.stop_at:
            if state.nodes[current].status == "pending":
                return False
            continue
        if spec.role == "EXIT" or current == state.stop_at:
            return False
        todo += [e.to for e in state.manifest.successors(current)]
    return bool(seen)


def finish(out: Emitter, status: str, reason: str, *, exit_node: str | None = None,
           output: dict[str, Any] | None = None, requested_by: str | None = None, continued: bool = False) -> None:
    """End the task: record its terminal status, stop its subtasks, and tell a parent."""
    settle_unanswered(out)
    state = out.state
    children = state.open_subtasks()
    if status == "cancelled":
        out.add(TaskCancelled(reason=reason, requested_by=requested_by,
                              open_nodes=[node for node, _ in state.open_dispatches()]))
    elif status == "succeeded":
        out.add(TaskSucceeded(status="succeeded", exit_node=exit_node, reason=reason))
    else:
        out.add(TaskFailed(status="failed", exit_node=exit_node, reason=reason))
    for task_id in children:
        _stop_subtask(out, task_id, f"parent task {status}: {reason}"[:1000])
    lineage = state.lineage
    if lineage is not None and lineage.parent_node is not None and lineage.index is not None:
        spent = usd(state.budget.spent) if state.budget is not None else None  # settles its share in the parent
        out.add(SubtaskFinished(subtask_id=out.task_id, parent_node=lineage.parent_node, index=lineage.index,
                                status=status, output=output if status == "succeeded" else None,  # type: ignore[arg-type]
                                reason=reason, continued=continued or None, spent_usd=spent), task_id=lineage.parent_id)


def _stop_subtask(out: Emitter, task_id: str, reason: str) -> None:
    """Ask a subtask of this task to stop (stored here, addressed to the subtask)."""
    out.add(TaskCancelRequested(reason=reason, requested_by=f"task {out.task_id}", parent_id=out.task_id),
            task_id=task_id)
