"""Folds: `evolve(state, event) -> state`, how each recorded event changes a task's state.

`FOLDS` is the one table, one fold per record type the router stores; a type it does not name (a
record addressed to another task, such as a subtask request) only bumps the version. The hottest
folds (router.input, node.dispatched, node.succeeded) read the record's fields directly: the router
built and validated them when it decided, so they are not validated again. What the folded state
means: state.py; what is stored and replayed: docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import (
    EVENT_TYPES,
    Lineage,
    NodeFailed,
    NodeRevisionRequested,
    SubtaskSettled,
    TaskForked,
    TaskQueued,
    TaskStarted,
    Usage,
)
from agent_engine.router import manifests
from agent_engine.router.budgets import evolve_ledger
from agent_engine.router.records import INPUT_RECORD
from agent_engine.router.state import OPEN_NODE, Fanout, NodeState, TaskState
from agent_engine.router.traces import forked_trace, started_trace

Fold = Callable[[TaskState, Envelope], TaskState]


def evolve(state: TaskState, event: Envelope) -> TaskState:
    """Fold one recorded event into the state. Unknown types (and records addressed to other tasks,
    such as a subtask request) only bump the version."""
    state = with_(state, version=state.version + 1)
    fold_one = FOLDS.get(event.type)
    return fold_one(state, event) if fold_one else state


def fold(records: list[Envelope], start: TaskState | None = None) -> TaskState:
    """The state after `records`, folded onto `start` (a snapshot of the records before them) or from nothing."""
    state = start if start is not None else TaskState()
    for record in records:
        state = evolve(state, record)
    return state


# --- the hot folds: fields read directly ------------------------------------------------------

def _fold_input(state: TaskState, event: Envelope) -> TaskState:
    return with_(state, applied=state.applied | {event.data["input"]["id"]}, task_id=event.task_id,
                 tenant=event.tenant, correlation_id=state.correlation_id or event.correlation_id)


def _fold_dispatched(state: TaskState, event: Envelope) -> TaskState:
    data = event.data
    deadline = data["deadline"]
    call = data.get("call")
    first = call is None and not data.get("turn")  # tool turns keep the time the node's attempt began
    extra: dict[str, Any] = {"began_at": event.time} if first else {}
    node = state.nodes.get(data["node"])
    if node is not None and node.resumed_at and data["attempt"] <= node.resumed_at:
        extra["resumed_at"] = 0  # a new step (a tool call, the model's next turn) counts its own attempts
    return set_node(state, data["node"], status="dispatched", attempts=data["attempt"],
                    dispatch_id=data["dispatch_id"], dispatched_at=event.time, finished_at=None, error=None,
                    deadline=deadline if isinstance(deadline, datetime) else datetime.fromisoformat(deadline),
                    call=call["index"] if call else None, **extra)


def _fold_succeeded(state: TaskState, event: Envelope) -> TaskState:
    data = event.data
    usage = data.get("usage")
    return set_node(state, data["node"], status="succeeded", output=data["output"],
                    provider=data.get("provider"), model=data.get("model"), chosen=data.get("chosen"),
                    usage=Usage.model_validate(usage) if usage else None, finished_at=event.time, deadline=None)


def _fold_reserved(state: TaskState, event: Envelope) -> TaskState:
    """An admission log's record: never a task's (a crafted task id cannot use it)."""
    return with_(state, status="reserved", tenant=event.tenant)


def _fold_cancel_requested(state: TaskState, event: Envelope) -> TaskState:
    """Stored in a task only as a request it sent to one of its subtasks."""
    return with_(state, cancelling=state.cancelling | {event.task_id})


# --- a task's life ----------------------------------------------------------------------------

def _fold_started(state: TaskState, event: Envelope) -> TaskState:
    started = TaskStarted.model_validate(_with_shared_manifest(event.data))
    manifest = started.workflow_manifest
    return with_(
        state, status="running", workflow=started.workflow, revision=started.revision,
        engine_version=started.engine_version, contract_version=started.contract_version,
        manifest=manifest, input=started.input, started_at=event.time, lineage=started.lineage,
        entry=started.entry, stop_at=started.stop_at, inherited=started.upstream,
        nodes={n.id: NodeState() for n in manifest.nodes}, trace=started_trace(event),
    )


def _fold_queued(state: TaskState, event: Envelope) -> TaskState:
    queued = TaskQueued.model_validate(_with_shared_manifest(event.data))
    return with_(state, status="queued", workflow=queued.workflow, revision=queued.revision,
                 manifest=queued.workflow_manifest, input=queued.input, reason=queued.reason,
                 queued_by=queued.requested_by, queued_budget_usd=queued.budget_usd)


def _with_shared_manifest(data: dict[str, Any]) -> dict[str, Any]:
    """The record's data with its manifest parsed once for all the tasks that pinned it (manifests.py). Data
    that is not well formed is left as it is, for the model to say what is wrong."""
    raw = data.get("workflow_manifest")
    workflow, revision = data.get("workflow"), data.get("revision")
    if not (isinstance(raw, dict) and isinstance(workflow, str) and isinstance(revision, str)):
        return data
    return {**data, "workflow_manifest": manifests.shared(raw, workflow, revision)}


def _fold_deduplicated(state: TaskState, event: Envelope) -> TaskState:
    return with_(state, status="deduplicated", duplicate_of=event.data["original_task_id"],
                 reason=event.data.get("reason", ""), finished_at=event.time)


def _fold_rejected(state: TaskState, event: Envelope) -> TaskState:
    return with_(state, status="rejected", reason=event.data.get("reason", ""), finished_at=event.time)


def _close_open_nodes(state: TaskState, status: str, at: datetime) -> dict[str, NodeState]:
    return {n: with_(s, status=status, finished_at=at) if s.status in OPEN_NODE else s
            for n, s in state.nodes.items()}


def _fold_cancelled(state: TaskState, event: Envelope) -> TaskState:
    return with_(state, status="cancelled", nodes=_close_open_nodes(state, "cancelled", event.time),
                 reason=event.data.get("reason", ""), finished_at=event.time)


def _fold_finished(state: TaskState, event: Envelope) -> TaskState:
    data = event.data
    state = with_(state, nodes=_close_open_nodes(state, "abandoned", event.time))
    exit_node = data.get("exit_node")
    if exit_node:
        state = set_node(state, exit_node, status="reached", finished_at=event.time)
    return with_(state, status=data["status"], exit_node=exit_node, reason=data.get("reason", ""),
                 finished_at=event.time)


def _fold_forked(state: TaskState, event: Envelope) -> TaskState:
    forked = TaskForked.model_validate(event.data)
    copied = fold([Envelope.model_validate(r) for r in forked.history])
    root = copied.lineage.root_id if copied.lineage else forked.source_task_id
    lineage = Lineage(kind="fork", parent_id=forked.source_task_id, root_id=root,
                      cause=f"fork of task {forked.source_task_id} after its record {forked.at}"
                            + (" (live)" if forked.live else ""))
    return with_(copied, task_id=event.task_id, correlation_id=event.correlation_id, lineage=lineage,
                 recorded=forked.recorded, applied=copied.applied | state.applied, version=state.version,
                 started_at=event.time, finished_at=None, trace=forked_trace(copied.trace, event))


# --- nodes ------------------------------------------------------------------------------------

def _fold_failed(state: TaskState, event: Envelope) -> TaskState:
    f = NodeFailed.model_validate(event.data)
    return set_node(state, f.node, status="failed", error=f.reason, continued=bool(f.continued),
                    finished_at=event.time, deadline=None)


def _fold_retry_scheduled(state: TaskState, event: Envelope) -> TaskState:
    return set_node(state, event.data["node"], status="retry_scheduled", deadline=_time(event.data["at"]),
                    error=event.data.get("reason"))


def _fold_approval_requested(state: TaskState, event: Envelope) -> TaskState:
    return with_(set_node(state, event.data["node"], status="awaiting_approval", paused=event.data.get("pause"),
                          held=event.data.get("held")), status="waiting")


def _fold_approved(state: TaskState, event: Envelope) -> TaskState:
    node = state.nodes[event.data["node"]]
    resumed_at = node.attempts if node.paused == "failures" else node.resumed_at
    gate = {"approved": node.approved | {event.data.get("call_id") or ""}} if event.data.get("rule") else {}
    edited = {"approved_args": event.data["args"]} if event.data.get("args") is not None else {}
    state = set_node(state, event.data["node"], status="approved", paused=None, held=None, resumed_at=resumed_at,
                     **gate, **edited)
    return with_(state, status="waiting" if _waits(state) else "running")


def _waits(state: TaskState) -> bool:
    """Whether a node waits for a person (an approval) or for room in a budget."""
    return (any(s.status == "awaiting_approval" for s in state.nodes.values())
            or bool(state.budget is not None and state.budget.waiting))


# --- budgets ----------------------------------------------------------------------------------

def _fold_budget(state: TaskState, event: Envelope) -> TaskState:
    return with_(state, budget=evolve_ledger(state.budget, event))


def _fold_budget_exceeded(state: TaskState, event: Envelope) -> TaskState:
    state = _fold_budget(state, event)
    if event.data["then"] != "wait":  # the node's failure follows; it waits no more
        return _running_or_waiting(state)
    if event.data.get("scope", "task") == "task":  # woken when a reservation of the task settles
        state = set_node(state, event.data["node"], status="budget_wait", attempts=event.data["attempt"] - 1)
    # (over a day budget the node.retry_scheduled that follows wakes it)
    return with_(state, status="waiting", reason=event.data.get("reason", ""))


def _fold_budget_reserved(state: TaskState, event: Envelope) -> TaskState:
    state = _fold_budget(state, event)
    node = state.nodes.get(event.data["node"])
    if node is not None and node.status == "budget_wait":
        state = set_node(state, event.data["node"], status="pending")  # its dispatch follows
    return _running_or_waiting(state)


def _running_or_waiting(state: TaskState) -> TaskState:
    if state.status not in ("running", "waiting"):
        return state
    return with_(state, status="waiting" if _waits(state) else "running")


def _fold_result_ignored(state: TaskState, event: Envelope) -> TaskState:
    return set_node(state, event.data["node"], dispatch_id=None)


def _fold_skipped(state: TaskState, event: Envelope) -> TaskState:
    return set_node(state, event.data["node"], status="skipped", finished_at=event.time)


def _fold_revision(state: TaskState, event: Envelope) -> TaskState:
    asked = NodeRevisionRequested.model_validate(event.data)
    nodes = dict(state.nodes)
    for node_id in asked.reset:
        old = nodes[node_id]
        nodes[node_id] = NodeState(revision=asked.revision, runs_before=old.runs_before + old.attempts + len(old.steps))
    return with_(state, nodes=nodes, revisions={**state.revisions, asked.node: asked.revision},
                 feedback={**state.feedback, asked.target: asked.feedback})


# --- MERGE and SPLIT --------------------------------------------------------------------------

def _fold_merged(state: TaskState, event: Envelope) -> TaskState:
    assert state.manifest is not None
    node_id = event.data["node"]
    combined = event.data.get("output") or {}
    if state.manifest.node(node_id).kind == "agent":
        return set_node(state, node_id, status="merged", merged=combined)
    return set_node(state, node_id, status="succeeded", output=combined, provider="router:merge",
                    dispatched_at=event.time, finished_at=event.time)


def _fold_fanned_out(state: TaskState, event: Envelope) -> TaskState:
    fanouts = dict(state.fanouts)
    fanouts[event.data["node"]] = Fanout(event.data["merge"], tuple(event.data["subtasks"]))
    return with_(state, fanouts=fanouts)


def _fold_settled(state: TaskState, event: Envelope) -> TaskState:
    settled = SubtaskSettled.model_validate(event.data)
    fanouts = dict(state.fanouts)
    fanout = fanouts[settled.node]
    results = dict(fanout.results)
    results[settled.index] = (settled.status, settled.output, settled.reason)
    fanouts[settled.node] = with_(fanout, results=results)
    return with_(state, fanouts=fanouts)


# --- tool turns -------------------------------------------------------------------------------

def _fold_tool_turn(state: TaskState, event: Envelope) -> TaskState:
    data = event.data
    node = state.nodes[data["node"]]
    usage = data.get("usage")
    return set_node(state, data["node"], steps=(*node.steps, {"turn": data["turn"], "thought": data.get("thought", ""),
                                                                "calls": data["calls"]}),
                    call=None, dispatch_id=None, summary=data.get("summary") or node.summary,
                    turn_usage=add_usage(node.turn_usage, Usage.model_validate(usage) if usage else None))


def _fold_tool_returned(state: TaskState, event: Envelope) -> TaskState:
    data = event.data
    node = state.nodes[data["node"]]
    last = node.steps[-1]
    calls = list(last["calls"])
    result = {"output": data["output"]} if data.get("output") is not None else {"error": data.get("error", "")}
    calls[data["index"]] = {**calls[data["index"]], **result}
    state = set_node(state, data["node"], steps=(*node.steps[:-1], {**last, "calls": calls}), call=None,
                     dispatch_id=None, **({"status": "approved"} if node.status == "awaiting_approval" else {}))
    if node.status == "awaiting_approval":  # a held call a person rejected: the task waits no more for it
        waiting = any(s.status == "awaiting_approval" for s in state.nodes.values())
        state = with_(state, status="waiting" if waiting else "running")
    return state


FOLDS: dict[str, Fold] = {
    INPUT_RECORD: _fold_input,
    "node.dispatched": _fold_dispatched,
    "node.succeeded": _fold_succeeded,
    "task.started": _fold_started,
    "task.queued": _fold_queued,
    "task.rejected": _fold_rejected,
    "task.deduplicated": _fold_deduplicated,
    "task.forked": _fold_forked,
    "task.cancel_requested": _fold_cancel_requested,
    "task.cancelled": _fold_cancelled,
    "task.succeeded": _fold_finished,
    "task.failed": _fold_finished,
    "node.failed": _fold_failed,
    "node.retry_scheduled": _fold_retry_scheduled,
    "node.approval_requested": _fold_approval_requested,
    "node.approved": _fold_approved,
    "node.result_ignored": _fold_result_ignored,
    "node.skipped": _fold_skipped,
    "node.revision_requested": _fold_revision,
    "node.merged": _fold_merged,
    "node.fanned_out": _fold_fanned_out,
    "subtask.settled": _fold_settled,
    "node.tool_turn_recorded": _fold_tool_turn,
    "node.tool_returned": _fold_tool_returned,
    "budget.opened": _fold_budget,
    "budget.reserved": _fold_budget_reserved,
    "budget.settled": _fold_budget,
    "budget.exceeded": _fold_budget_exceeded,
    "budget.alert": _fold_budget,
    # every record of a tenant's admission log (its id is reserved: no task may use it)
    **{kind: _fold_reserved for kind in EVENT_TYPES if kind.startswith("tenant.")},
}
"""Every record type that changes a task's state, and how."""


# --- helpers ----------------------------------------------------------------------------------

T = TypeVar("T")


def with_(obj: T, **changes: Any) -> T:
    """dataclasses.replace for the router's frozen state classes, without re-running __init__: folding
    is the router's hottest path and TaskState has many fields."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__, **changes)
    return new


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def set_node(state: TaskState, node_id: str, **changes: Any) -> TaskState:
    nodes = dict(state.nodes)
    nodes[node_id] = with_(nodes.get(node_id, NodeState()), **changes)
    return with_(state, nodes=nodes)


def add_usage(a: Usage | None, b: Usage | None) -> Usage | None:
    if a is None or b is None:
        return a or b
    return a + b


def usage_total(state: TaskState) -> Usage:
    return sum((node.usage for node in state.nodes.values() if node.usage is not None), Usage())
