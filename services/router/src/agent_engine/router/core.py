"""Pure routing: `decide(state, input) -> events` and `evolve(state, event) -> state`.

No clock, no randomness, no I/O: ids derive from the causing input (uuid5), time comes from the
input event. The store records each applied input (as a `router.input` record) followed by the
decisions it produced, so replaying the inputs reproduces the decisions exactly.

This module holds the handler table (every input the router applies: its payload model and the
function deciding it), `decide`, `apply` and `replay`, and how a task starts. Each concept has its
own module, after the pages under docs/:

    walk.py        the graph walk, skipped paths, how a task ends        workflows/roles.md
    merge.py       joins, MERGE policies, a SPLIT's fan-out (pure)       workflows/roles.md, subtasks.md
    subtasks.py    a subtask's request and its end, seen by its parent   workflows/subtasks.md
    loops.py       revise (pure)                                         workflows/loops.md
    retries.py     retries, backoff, deadlines                           workflows/failures.md
    results.py     what a runner's answer does                           workflows/failures.md, tool-use.md
    approvals.py   approvals, and calls the tool gate holds              workflows.md, guardrails.md
    cancel.py      cancel, results after the end                         workflows.md, workflows/subtasks.md
    fork.py        fork and its plan                                     workflows/fork.md
    tool_turns.py  an agent's tool turns (conversation.py: the helpers)  workflows/tool-use.md
    dispatch.py    building a dispatch (a value), dispatch ids           workflows.md, workflows/tool-use.md
    budgets.py     a task's budget ledger and its decisions (pure)      guardrails.md (Budgets)
    budgeting.py   reserve before an agent dispatch, settle on results  guardrails.md (Budgets)
    folds.py       evolve: the one fold table                            architecture.md
    emitter.py     derived ids and time for each decision                architecture.md
    records.py     inputs and their stored form                          workflows/fork.md (replay)

They import one way, with no cycle: records, budgets < folds < emitter < budgeting; dispatch, merge, loops
(pure: they say what happens) < walk (records it and moves on) < cancel, fork, subtasks, tool_turns < approvals
(a call the tool gate held returns to the model through tool_turns) < retries < results < core. Every name
other modules import from here stays importable from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from agent_engine.contracts.envelope import CONTRACT_VERSION, Envelope
from agent_engine.contracts.errors import validation_summary
from agent_engine.contracts.events import (
    EventData,
    NodeApprovalDecided,
    NodeCompleted,
    NodeDeadlineExpired,
    NodeErrored,
    NodeOutputChecked,
    NodeRetryDue,
    NodeToolsRequested,
    SubtaskFinished,
    SubtaskRequested,
    TaskAccepted,
    TaskAdmitted,
    TaskCancelRequested,
    TaskDeduplicated,
    TaskForkRequested,
    TaskQueued,
    TaskRejected,
    TaskStarted,
)
from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.contracts.pricing import PriceTable
from agent_engine.contracts.validation import ManifestError, blocking
from agent_engine.router import ENGINE_VERSION
from agent_engine.router.admission import Admission
from agent_engine.router.approvals import on_approval
from agent_engine.router.budgeting import RESULTS, open_budget, open_subtask_budget, settle_result
from agent_engine.router.cancel import on_cancel
from agent_engine.router.dispatch import MAX_CONTEXT_BYTES, choose_model, dispatch_id_for, resolve_args
from agent_engine.router.emitter import Emitter
from agent_engine.router.folds import FOLDS, add_usage, evolve, fold, usage_total
from agent_engine.router.fork import ForkPlan, fork_cut, fork_plan, on_fork
from agent_engine.router.merge import MAX_FANOUT_BYTES
from agent_engine.router.records import (
    INPUT_RECORD,
    OUTPUT_IN,
    SOURCE,
    InvalidInput,
    Resolved,
    RouterInput,
    Unrestorable,
    input_from_record,
    input_record,
    restore,
)
from agent_engine.router.results import on_completed, on_errored
from agent_engine.router.retries import backoff_delay, on_deadline, on_retry_due
from agent_engine.router.state import TaskState
from agent_engine.router.subtasks import on_subtask_finished, subtask_split
from agent_engine.router.tool_turns import on_tools_requested
from agent_engine.router.walk import activate, finish, resume_waiting

__all__ = [
    "BUS_INPUTS",
    "ENGINE_VERSION",
    "FOLDS",
    "HANDLERS",
    "INPUT_RECORD",
    "INPUT_TYPES",
    "MAX_CONTEXT_BYTES",
    "MAX_FANOUT_BYTES",
    "OUTPUT_IN",
    "SOURCE",
    "ForkPlan",
    "Handler",
    "InvalidInput",
    "Resolved",
    "RouterInput",
    "Unrestorable",
    "add_usage",
    "apply",
    "backoff_delay",
    "choose_model",
    "decide",
    "dispatch_id_for",
    "evolve",
    "fold",
    "fork_cut",
    "fork_plan",
    "input_from_record",
    "input_record",
    "payload",
    "replay",
    "resolve_args",
    "restore",
    "starts_task",
    "usage_total",
]


# --- decide -----------------------------------------------------------------------------------

def decide(state: TaskState, inp: RouterInput) -> list[Envelope]:
    """The events an input causes; [] when it changes nothing (duplicate, stale or late)."""
    return _decide(state, inp).events


def _decide(state: TaskState, inp: RouterInput) -> Emitter:
    out = Emitter(state, inp.event)
    out.rooms = inp.rooms or ()
    event = inp.event
    handler = HANDLERS.get(event.type)
    if event.id in state.applied or handler is None:
        return out
    if state.tenant and event.tenant != state.tenant:
        return out  # never let one tenant's event touch another tenant's task
    data = payload(event, handler.model)
    if event.type in RESULTS:  # settled before the answer is used, whether it is used or not (a late one)
        settle_result(out, data.dispatch_id, data.llm_calls)
    handler.decide(out, inp, data)
    if out.state.status in ("running", "waiting"):
        resume_waiting(out)
    if out.events and out.state.status in ("running", "waiting") and not out.state.has_open_work():
        finish(out, "failed", "no path left to an EXIT node: every open branch ended without reaching one")
    return out


def payload(event: Envelope, model: type[EventData]) -> Any:
    try:
        return model.model_validate(event.data)
    except ValidationError as exc:
        raise InvalidInput(f"not a valid {event.type} payload: {validation_summary(exc)}") from None


# --- how a task starts ------------------------------------------------------------------------

_CHECKED: dict[int, tuple[WorkflowManifest, list[ManifestError]]] = {}
"""`blocking`'s answers for the manifests last checked, by identity: the shell hands every task of a revision the
same manifest object, and checking it again for each new task cost as much as the rest of starting one."""
CHECKED_KEPT = 64


def _blocking(manifest: WorkflowManifest) -> list[ManifestError]:
    known = _CHECKED.get(id(manifest))
    if known is not None and known[0] is manifest:
        return known[1]
    problems = blocking(manifest)
    if len(_CHECKED) >= CHECKED_KEPT:
        _CHECKED.clear()
    _CHECKED[id(manifest)] = (manifest, problems)  # the manifest is held, so its id names no other
    return problems


def withheld_reason(manifest: WorkflowManifest, tools: tuple[str, ...], tenant: str) -> str:
    named = []
    for name in tools:
        mcp = manifest.tools[name].mcp if name in manifest.tools else None
        named.append(f"tool '{name}' (MCP server '{mcp.server}')" if mcp is not None else f"tool '{name}'")
    return (f"{', '.join(named)} {'is' if len(named) == 1 else 'are'} not available to tenant '{tenant}': the "
            "deployment's MCP servers (AE_MCP_SERVERS) are declared for other tenants only")


def _on_accepted(out: Emitter, inp: RouterInput, accepted: TaskAccepted) -> None:
    if out.state.status != "new":
        return  # a request for a task that exists: idempotent
    if inp.duplicate is not None:  # its key names another task of the tenant: this request starts nothing
        original, key = inp.duplicate.original_task_id, accepted.idempotency_key or ""
        out.add(TaskDeduplicated(original_task_id=original, idempotency_key=key, reason=(
            f"idempotency key '{key}' of tenant '{inp.event.tenant}' names task {original} since "
            f"{inp.duplicate.claimed_at}; this request starts nothing")))
        return
    if inp.workflow is None:
        out.add(TaskRejected(
            stage="router", workflow=accepted.workflow,
            reason=f"unknown workflow '{accepted.workflow}' for tenant '{inp.event.tenant}': "
                   f"push it first with `agentctl workflow push DIR`",
        ))
        return
    manifest = inp.workflow.manifest
    problems = _blocking(manifest)
    if problems:  # the registry is written from outside: a revision agentctl would refuse never starts
        out.add(TaskRejected(stage="router", workflow=accepted.workflow, reason=(
            f"workflow '{accepted.workflow}' revision {inp.workflow.revision[:12]} in the registry is not valid "
            f"({problems[0]}); push a valid revision with `agentctl workflow push DIR`")))
        return
    if inp.withheld:
        out.add(TaskRejected(stage="router", workflow=accepted.workflow, reason=withheld_reason(
            manifest, inp.withheld, inp.event.tenant)))
        return
    admission = inp.admission or Admission("start")
    if admission.decision == "reject":
        out.add(TaskRejected(stage="router", workflow=accepted.workflow, reason=admission.reason))
        return
    if admission.decision == "queue":
        out.add(TaskQueued(priority=accepted.priority, position=admission.position, reason=admission.reason,
                           workflow=accepted.workflow, revision=inp.workflow.revision, input=accepted.input,
                           workflow_manifest=manifest, requested_by=accepted.requested_by,
                           budget_usd=accepted.budget_usd))
        return
    _start(out, accepted.workflow, inp.workflow.revision, accepted.input, manifest, inp.prices, accepted.requested_by,
           accepted.budget_usd)


def _start(out: Emitter, workflow: str, revision: str, task_input: dict[str, Any],
           manifest: WorkflowManifest, prices: PriceTable | None, user: str | None = None,
           requested_usd: str | None = None) -> None:
    out.add(_started(workflow, revision, task_input, manifest))
    open_budget(out, manifest, prices, user, requested_usd)
    activate(out, manifest.start().id, "start")


def _started(workflow: str, revision: str, task_input: dict[str, Any], manifest: WorkflowManifest,
             **subtask: Any) -> TaskStarted:
    """The one place a task.started is built (a subtask's adds where it starts and stops)."""
    return TaskStarted(workflow=workflow, revision=revision, engine_version=ENGINE_VERSION,
                       contract_version=CONTRACT_VERSION, input=task_input, workflow_manifest=manifest, **subtask)


def _on_admitted(out: Emitter, inp: RouterInput, _: TaskAdmitted) -> None:
    state = out.state
    if state.status != "queued" or state.manifest is None:
        return  # started already, or cancelled while it waited
    _start(out, state.workflow or "", state.revision or "", dict(state.input), state.manifest, inp.prices,
           state.queued_by, state.queued_budget_usd)


def _on_subtask_requested(out: Emitter, inp: RouterInput, req: SubtaskRequested) -> None:
    if out.state.status != "new":
        return  # already started (a redelivery), or cancelled by its parent before it started
    manifest = req.workflow_manifest
    split = subtask_split(req)
    out.add(_started(req.workflow, req.revision, req.input, manifest, lineage=req.lineage,
                     entry=manifest.successors(split.id)[0].to, stop_at=req.merge, upstream=req.upstream))
    open_subtask_budget(out, req.budget)
    assert out.state.entry is not None
    activate(out, out.state.entry, f"subtask {req.lineage.index} of SPLIT node '{split.id}'")


# --- the handler table ------------------------------------------------------------------------

@dataclass(frozen=True)
class Handler:
    model: type[EventData]
    decide: Callable[[Emitter, RouterInput, Any], None]
    starts: Callable[[Envelope], bool] = lambda _: False
    """Whether the input may name a task that does not exist yet (any other input for an unknown task names
    nothing)."""
    timer: bool = False
    """Made by the router's own timers, never taken from the bus."""


HANDLERS: dict[str, Handler] = {
    "task.accepted": Handler(TaskAccepted, _on_accepted, starts=lambda _: True),
    "subtask.requested": Handler(SubtaskRequested, _on_subtask_requested, starts=lambda _: True),
    "task.fork_requested": Handler(TaskForkRequested, on_fork, starts=lambda _: True),
    # a parent's cancel of a subtask that has not started yet, so that it never does
    "task.cancel_requested": Handler(TaskCancelRequested, on_cancel, starts=lambda e: bool(e.data.get("parent_id"))),
    "task.admitted": Handler(TaskAdmitted, _on_admitted),
    "node.approval_decided": Handler(NodeApprovalDecided, on_approval),
    "node.completed": Handler(NodeCompleted, on_completed),
    "node.output_checked": Handler(NodeOutputChecked, on_completed),
    "node.errored": Handler(NodeErrored, on_errored),
    "node.tools_requested": Handler(NodeToolsRequested, on_tools_requested),
    "subtask.finished": Handler(SubtaskFinished, on_subtask_finished),
    "node.deadline_expired": Handler(NodeDeadlineExpired, on_deadline, timer=True),
    "node.retry_due": Handler(NodeRetryDue, on_retry_due, timer=True),
}
"""Every input the router applies: its payload model and the function deciding it."""
INPUT_TYPES = tuple(HANDLERS)
BUS_INPUTS = tuple(t for t, h in HANDLERS.items() if not h.timer)
"""The input types the router consumes from the stream."""


def starts_task(event: Envelope) -> bool:
    """Whether the input may name a task that does not exist yet (its handler says: a request that starts
    one, or a parent's cancel of a subtask that has not started)."""
    handler = HANDLERS.get(event.type)
    return handler is not None and handler.starts(event)


# --- apply and replay -------------------------------------------------------------------------

def apply(state: TaskState, inp: RouterInput, *, whole: bool = False) -> tuple[TaskState, list[Envelope]]:
    """Decide, then fold: the records to store (input record first) and the state after them. The input record
    leaves a runner's output to the decision that holds it unchanged (records.py), unless `whole` (replay of a
    record stored whole)."""
    out = _decide(state, inp)
    if not out.events:
        return state, []
    record = input_record(inp, () if whole else out.events)
    # the emitter folded the decisions already; the input record only marks the input applied
    return evolve(out.state, record), [record, *out.events]


def replay(records: list[Envelope]) -> list[Envelope]:
    """Re-run the recorded inputs through the current router; returns the records it would store. An input
    record that left its output to a decision is read whole again with that decision (records.restore; raises
    Unrestorable without it); one stored whole (before outputs were stored once, or whose output a decision
    changed) is replayed into a whole record, so a history stored by an earlier router replays exactly."""
    state = TaskState()
    produced: list[Envelope] = []
    for stored, record in zip(records, restore(records), strict=True):
        if record.type == INPUT_RECORD:
            state, out = apply(state, input_from_record(record), whole=OUTPUT_IN not in stored.data)
            produced.extend(out)
    return produced
