"""Pure routing: `decide(state, input) -> events` and `evolve(state, event) -> state`.

No clock, no randomness, no I/O: ids derive from the causing input (uuid5), time comes from the
input event. The store records each applied input (as a `router.input` record) followed by the
decisions it produced, so replaying the inputs reproduces the decisions exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from agent_engine.contracts.envelope import CONTRACT_VERSION, Envelope, derive_id
from agent_engine.contracts.events import (
    EventData,
    NodeApprovalDecided,
    NodeApprovalRefused,
    NodeApproved,
    NodeCompleted,
    NodeDeadlineExpired,
    NodeErrored,
    NodeFailed,
    NodeResultIgnored,
    NodeRetryDue,
    NodeRetryScheduled,
    NodeToolReturned,
    NodeToolsRequested,
    NodeToolTurnRecorded,
    SubtaskFinished,
    SubtaskRequested,
    SubtaskSettled,
    TaskAccepted,
    TaskAdmitted,
    TaskCancelled,
    TaskCancelRequested,
    TaskForked,
    TaskForkRequested,
    TaskQueued,
    TaskRejected,
    TaskStarted,
    ToolStep,
)
from agent_engine.contracts.manifest import NodeSpec, WorkflowManifest
from agent_engine.contracts.validation import blocking
from agent_engine.router import ENGINE_VERSION
from agent_engine.router.admission import Admission
from agent_engine.router.conversation import (
    SchemaUnusable,
    call_id,
    call_problem,
    next_open_call,
    schema_problems,
)
from agent_engine.router.dispatch import (
    build_call,
    choose_model,
    dispatch_id_for,
    open_node,
    resolve_args,
    superseded,
)
from agent_engine.router.emitter import Emitter
from agent_engine.router.folds import evolve, fold, usage_total
from agent_engine.router.records import (
    INPUT_RECORD,
    SOURCE,
    InvalidInput,
    Resolved,
    RouterInput,
    input_from_record,
    input_record,
)
from agent_engine.router.state import NodeState, TaskState
from agent_engine.router.walk import activate, dispatch, finish, node_failed, succeed, try_merge

__all__ = [
    "BUS_INPUTS",
    "HANDLERS",
    "INPUT_RECORD",
    "INPUT_TYPES",
    "SOURCE",
    "ForkPlan",
    "Handler",
    "InvalidInput",
    "Resolved",
    "RouterInput",
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
    "starts_task",
    "usage_total",
]

# --- decide -----------------------------------------------------------------------------------

def decide(state: TaskState, inp: RouterInput) -> list[Envelope]:
    """The events an input causes; [] when it changes nothing (duplicate, stale or late)."""
    return _decide(state, inp).events


def _decide(state: TaskState, inp: RouterInput) -> Emitter:
    out = Emitter(state, inp.event)
    event = inp.event
    handler = HANDLERS.get(event.type)
    if event.id in state.applied or handler is None:
        return out
    if state.tenant and event.tenant != state.tenant:
        return out  # never let one tenant's event touch another tenant's task
    handler.decide(out, inp, payload(event, handler.model))
    if out.events and out.state.status in ("running", "waiting") and not out.state.has_open_work():
        finish(out, "failed", "no path left to an EXIT node: every open branch ended without reaching one")
    return out


def _on_accepted(out: Emitter, inp: RouterInput, accepted: TaskAccepted) -> None:
    if out.state.status != "new":
        return  # a request for a task that exists: idempotent
    if inp.workflow is None:
        out.add(TaskRejected(
            stage="router", workflow=accepted.workflow,
            reason=f"unknown workflow '{accepted.workflow}' for tenant '{inp.event.tenant}': "
                   f"push it first with `agentctl workflow push DIR`",
        ))
        return
    manifest = inp.workflow.manifest
    problems = blocking(manifest)
    if problems:  # the registry is written from outside: a revision agentctl would refuse never starts
        out.add(TaskRejected(stage="router", workflow=accepted.workflow, reason=(
            f"workflow '{accepted.workflow}' revision {inp.workflow.revision[:12]} in the registry is not valid "
            f"({problems[0]}); push a valid revision with `agentctl workflow push DIR`")))
        return
    admission = inp.admission or Admission("start")
    if admission.decision == "reject":
        out.add(TaskRejected(stage="router", workflow=accepted.workflow, reason=admission.reason))
        return
    if admission.decision == "queue":
        out.add(TaskQueued(priority=accepted.priority, position=admission.position, reason=admission.reason,
                           workflow=accepted.workflow, revision=inp.workflow.revision, input=accepted.input,
                           workflow_manifest=manifest))
        return
    _start(out, accepted.workflow, inp.workflow.revision, accepted.input, manifest)


def _start(out: Emitter, workflow: str, revision: str, task_input: dict[str, Any],
           manifest: WorkflowManifest) -> None:
    out.add(TaskStarted(
        workflow=workflow, revision=revision, engine_version=ENGINE_VERSION,
        contract_version=CONTRACT_VERSION, input=task_input, workflow_manifest=manifest,
    ))
    activate(out, manifest.start().id, "start")


def _on_admitted(out: Emitter, inp: RouterInput, _: TaskAdmitted) -> None:
    state = out.state
    if state.status != "queued" or state.manifest is None:
        return  # started already, or cancelled while it waited
    _start(out, state.workflow or "", state.revision or "", dict(state.input), state.manifest)


def _on_subtask_requested(out: Emitter, inp: RouterInput, req: SubtaskRequested) -> None:
    if out.state.status != "new":
        return  # already started (a redelivery), or cancelled by its parent before it started
    manifest = req.workflow_manifest
    split = _subtask_split(req)
    out.add(TaskStarted(
        workflow=req.workflow, revision=req.revision, engine_version=ENGINE_VERSION,
        contract_version=CONTRACT_VERSION, input=req.input, workflow_manifest=manifest,
        lineage=req.lineage, entry=manifest.successors(split.id)[0].to, stop_at=req.merge, upstream=req.upstream,
    ))
    assert out.state.entry is not None
    activate(out, out.state.entry, f"subtask {req.lineage.index} of SPLIT node '{split.id}'")


def _subtask_split(req: SubtaskRequested) -> NodeSpec:
    """The SPLIT node a subtask request names, once the request is consistent with its own manifest."""
    manifest = req.workflow_manifest
    problems = blocking(manifest)
    if problems:
        raise InvalidInput(f"subtask.requested carries a workflow manifest that is not valid: {problems[0]}")
    node = req.lineage.parent_node
    split = next((n for n in manifest.nodes if n.id == node), None)
    if req.lineage.kind != "subtask" or req.lineage.index is None or split is None or split.role != "SPLIT":
        raise InvalidInput(f"subtask.requested names node '{node}' as its SPLIT, which its manifest does not have")
    if split.split is None or split.split.merge != req.merge:
        raise InvalidInput(f"subtask.requested stops at '{req.merge}', which is not the MERGE of SPLIT node '{node}'")
    return split


def _on_cancel(out: Emitter, inp: RouterInput, request: TaskCancelRequested) -> None:
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


def _on_approval(out: Emitter, inp: RouterInput, decided: NodeApprovalDecided) -> None:
    state = out.state
    node = state.nodes.get(decided.node)
    if state.status != "waiting" or node is None or node.status != "awaiting_approval" or state.manifest is None:
        return
    manifest = state.manifest
    spec = manifest.node(decided.node)
    if decided.decision == "reject":
        why = f"rejected by {decided.decided_by}" + (f": {decided.reason}" if decided.reason else "")
        node_failed(out, spec.id, node.attempts, why)
        return
    problem = _edit_problem(manifest, spec, decided.args)
    if problem:
        out.add(NodeApprovalRefused(node=spec.id, decided_by=decided.decided_by, reason=problem))
        return
    out.add(NodeApproved(node=spec.id, decided_by=decided.decided_by, args=decided.args,
                         edited=decided.args is not None))
    dispatch(out, spec, 1, f"approved by {decided.decided_by}", approved=True, args_override=decided.args)


def _edit_problem(manifest: WorkflowManifest, spec: NodeSpec, args: dict[str, Any] | None) -> str:
    """Why edited arguments cannot be accepted ("" when they can)."""
    if args is None:
        return ""
    if spec.kind != "tool":
        return f"node '{spec.id}' is an agent node; only a tool node's arguments can be edited"
    schema = manifest.tools[spec.tool or ""].args_schema
    if schema is None:
        return ""
    try:
        detail = schema_problems(schema, args)
    except SchemaUnusable as exc:
        return f"the args_schema of tool '{spec.tool}' {exc}; the edit cannot be checked"
    return f"edited arguments break the args_schema of tool '{spec.tool}': {detail}" if detail else ""


def _on_completed(out: Emitter, inp: RouterInput, completed: NodeCompleted) -> None:
    state = out.state
    if state.terminal:
        _ignore_late_result(out, completed.node, completed.dispatch_id, inp.event.type)
        return
    if state.status not in ("running", "waiting"):
        return
    node = open_node(state, completed.node, completed.dispatch_id) or superseded(
        state, completed.node, completed.attempt, completed.dispatch_id)
    if node is None:
        return
    assert state.manifest is not None
    spec = state.manifest.node(completed.node)
    if node.call is not None:  # the result of a tool call the node's model asked for
        _tool_returned(out, spec, completed.dispatch_id, completed.attempt, output=completed.output)
        return
    succeed(out, spec, completed)


def _on_errored(out: Emitter, inp: RouterInput, errored: NodeErrored) -> None:
    if out.state.terminal:
        _ignore_late_result(out, errored.node, errored.dispatch_id, inp.event.type)
        return
    node = open_node(out.state, errored.node, errored.dispatch_id)
    if node is None or out.state.status not in ("running", "waiting"):
        return
    if errored.retryable:
        _retry_or_fail(out, errored.node, node, f"runner error: {errored.error}")
    elif node.call is not None:  # a tool call that failed: the model sees the error and may correct itself
        assert out.state.manifest is not None
        _tool_returned(out, out.state.manifest.node(errored.node), errored.dispatch_id, errored.attempt,
                       error=errored.error)
    else:
        node_failed(out, errored.node, node.attempts, errored.error)


def _on_deadline(out: Emitter, inp: RouterInput, expired: NodeDeadlineExpired) -> None:
    node = open_node(out.state, expired.node, expired.dispatch_id)
    if node is None or out.state.status not in ("running", "waiting"):
        return
    assert out.state.manifest is not None
    timeout = out.state.manifest.node(expired.node).timeout_s
    _retry_or_fail(out, expired.node, node, f"no result within the {timeout:g}s deadline")


def _on_retry_due(out: Emitter, inp: RouterInput, due: NodeRetryDue) -> None:
    state = out.state
    waiting = state.nodes.get(due.node)
    if (state.status not in ("running", "waiting") or waiting is None or waiting.status != "retry_scheduled"
            or waiting.attempts + 1 != due.attempt or (due.at is not None and due.at != waiting.deadline)):
        return
    assert state.manifest is not None
    dispatch(out, state.manifest.node(due.node), due.attempt, waiting.error or "retry")


def _on_subtask_finished(out: Emitter, inp: RouterInput, finished: SubtaskFinished) -> None:
    state = out.state
    fanout = state.fanouts.get(finished.parent_node)
    if state.status not in ("running", "waiting") or fanout is None or finished.index in fanout.results:
        return
    if not 0 <= finished.index < len(fanout.subtasks) or fanout.subtasks[finished.index] != finished.subtask_id:
        return
    out.add(SubtaskSettled(node=finished.parent_node, index=finished.index, subtask_id=finished.subtask_id,
                           status=finished.status, output=finished.output, reason=finished.reason,
                           continued=finished.continued))
    assert state.manifest is not None
    split = state.manifest.node(finished.parent_node)
    if state.nodes[fanout.merge].status != "pending":
        return  # the MERGE fired already (any/quorum) and asked the rest to stop: their ends change nothing
    if finished.status != "succeeded" and not (split.continue_on_failure or finished.continued):
        reason = f"subtask {finished.index} ({finished.subtask_id}) {finished.status}: {finished.reason}"
        out.add(NodeFailed(node=split.id, attempt=out.state.nodes[split.id].attempts, reason=reason))
        finish(out, "failed", f"node '{split.id}' failed: {reason}")
        return
    try_merge(out, fanout.merge)


def _on_fork(out: Emitter, inp: RouterInput, request: TaskForkRequested) -> None:
    if out.state.status != "new":
        return  # the fork exists already: a redelivered request
    problem, cut = _fork_problem(inp, request)
    if problem:
        out.add(TaskRejected(stage="router", reason=f"cannot fork task {request.source_task_id}: {problem}"))
        return
    records = list(inp.source or ())
    out.add(TaskForked(source_task_id=request.source_task_id, at=cut, live=request.live,
                       history=[r.model_dump(mode="json") for r in records[:cut]],
                       recorded={} if request.live else _recorded_outputs(records)))
    state = out.state
    assert state.manifest is not None
    for node_id, node in state.nodes.items():  # what was running at the cut runs again in the fork
        if node.status == "dispatched":
            dispatch(out, state.manifest.node(node_id), node.attempts, f"fork of {request.source_task_id}")


def _fork_problem(inp: RouterInput, request: TaskForkRequested) -> tuple[str, int]:
    """Why the fork cannot be made ("" if it can), and where its copied history ends."""
    return fork_cut(list(inp.source or ()), inp.event.tenant, request.at)


def fork_cut(records: list[Envelope], tenant: str, at: int) -> tuple[str, int]:
    """Why a fork of `records` after record `at` cannot be made for `tenant` ("" if it can), and where its
    copied history ends: a cut never splits a decision, it extends to the last record of the same input."""
    if not records or any(r.tenant != tenant for r in records):
        return "no such task", 0  # the same answer for another tenant's task: nothing about it is told
    if not 1 <= at <= len(records):
        return f"it has {len(records)} records; --at must be between 1 and {len(records)}", 0
    cut = next((i for i in range(at, len(records)) if records[i].type == INPUT_RECORD), len(records))
    source = fold(records)
    at_cut = fold(records[:cut])
    if source.lineage is not None and source.lineage.kind == "subtask":
        return f"it is a subtask; fork its root task {source.lineage.root_id} instead", 0
    if source.lineage is not None and source.lineage.kind == "fork":
        return f"it is a fork; fork the original task {source.lineage.parent_id} instead", 0
    if at_cut.status not in ("running", "waiting"):
        return f"after record {cut} the task was {at_cut.status}: nothing would run", 0
    if at_cut.open_subtasks():
        return f"record {cut} falls inside a SPLIT whose subtasks were running; fork before it or after its MERGE", 0
    return "", cut


@dataclass(frozen=True)
class ForkPlan:
    """What a fork would do, before it is asked for: where its history ends, and the steps with side
    effects that may run again (tool nodes, and agent nodes whose model may call such tools, unless the
    fork reuses the output the source recorded for them)."""

    problem: str
    cut: int = 0
    risky: tuple[str, ...] = ()


def fork_plan(records: list[Envelope], tenant: str, at: int, live: bool) -> ForkPlan:
    problem, cut = fork_cut(records, tenant, at)
    if problem:
        return ForkPlan(problem)
    state = fold(records[:cut])
    assert state.manifest is not None
    manifest = state.manifest
    recorded = {} if live else _recorded_outputs(records)
    risky = []
    for spec in manifest.nodes:
        node = state.nodes.get(spec.id)
        if node is None or node.status in ("succeeded", "skipped"):
            continue
        tool = manifest.tools.get(spec.tool or "")
        if spec.kind == "tool" and tool is not None and tool.has_side_effects:
            risky.append(spec.id)
        elif spec.kind == "agent" and f"{spec.id}@{node.revision}" not in recorded:
            agent = manifest.agents.get(spec.agent or "")
            names = [t for t in (agent.tools if agent else []) if t in manifest.tools
                     and manifest.tools[t].has_side_effects]
            if names:
                risky.append(f"{spec.id} (its model may call {', '.join(names)})")
    return ForkPlan("", cut, tuple(risky))


def _recorded_outputs(records: list[Envelope]) -> dict[str, dict[str, Any]]:
    """Every agent output the source recorded, keyed by node and revision."""
    recorded: dict[str, dict[str, Any]] = {}
    state = TaskState()
    for record in records:
        state = evolve(state, record)
        if record.type == "node.succeeded" and state.manifest is not None:
            node = record.data["node"]
            if state.manifest.node(node).kind == "agent":
                recorded[f"{node}@{state.nodes[node].revision}"] = {
                    "output": record.data["output"], "provider": record.data.get("provider"),
                    "model": record.data.get("model")}
    return recorded




# --- runs and retries -------------------------------------------------------------------------

def _ignore_late_result(out: Emitter, node_id: str, dispatch_id: str, event_type: str) -> None:
    """A result for a node that was running when the task ended: recorded once, then unused."""
    node = out.state.nodes.get(node_id)
    if node is None or node.status not in ("cancelled", "abandoned") or node.dispatch_id != dispatch_id:
        return
    out.add(NodeResultIgnored(dispatch_id=dispatch_id, node=node_id, attempt=node.attempts,
                              reason=f"the task had ended ({out.state.status}) before this {event_type} arrived"))


def _retry_or_fail(out: Emitter, node_id: str, node: NodeState, why: str) -> None:
    assert out.state.manifest is not None
    spec = out.state.manifest.node(node_id)
    if node.attempts >= spec.max_attempts:
        if node.call is not None:  # a tool call that keeps failing: the model hears of it, the node goes on
            _tool_returned(out, spec, node.dispatch_id, node.attempts,
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


# --- tool use -----------------------------------------------------------------------------------

def _on_tools_requested(out: Emitter, inp: RouterInput, asked: NodeToolsRequested) -> None:
    """The model asked for tools instead of answering: record its turn once, then run the calls."""
    state = out.state
    if state.terminal:
        _ignore_late_result(out, asked.node, asked.dispatch_id, inp.event.type)
        return
    node = open_node(state, asked.node, asked.dispatch_id) or superseded(
        state, asked.node, asked.attempt, asked.dispatch_id)
    if node is None or state.status not in ("running", "waiting") or node.call is not None:
        return
    if asked.turn != len(node.steps):
        return  # a turn this node has recorded already
    assert state.manifest is not None
    spec = state.manifest.node(asked.node)
    agent = state.manifest.agents.get(spec.agent or "")
    if spec.kind != "agent" or agent is None:
        return
    if not agent.tools or asked.turn >= agent.max_tool_turns:
        why = (f"agent '{spec.agent}' has no tools, yet its model asked for {[c.name for c in asked.calls]}"
               if not agent.tools else f"the model asked for tools in turn {asked.turn + 1}, past agent "
               f"'{spec.agent}''s max_tool_turns = {agent.max_tool_turns}")
        node_failed(out, spec.id, asked.attempt, why)
        return
    calls = []
    for index, call in enumerate(asked.calls):
        problem = call_problem(state.manifest, spec.agent or "", agent, call)
        calls.append(ToolStep(call_id=call_id(node.revision, asked.turn, index), tool=call.name, args=call.args,
                              error=problem or None, refused=True if problem else None))
    out.add(NodeToolTurnRecorded(
        dispatch_id=asked.dispatch_id, node=spec.id, attempt=asked.attempt, turn=asked.turn, thought=asked.thought,
        calls=calls, provider=asked.provider, model=asked.model, usage=asked.usage, summary=asked.summary))
    _next_call(out, spec)


def _next_call(out: Emitter, spec: NodeSpec) -> None:
    """Run the next call of the node's last tool turn; once every call is back, the model's next turn."""
    node = out.state.nodes[spec.id]
    turn = len(node.steps) - 1
    index = next_open_call(node.steps[-1])
    if index is not None:
        out.add(build_call(out.state, out.task_id, out.now, spec, index, 1, f"tool call {index + 1} of turn {turn}"))
    else:
        dispatch(out, spec, 1, f"results of tool turn {turn}")


def _tool_returned(out: Emitter, spec: NodeSpec, dispatch_id: str | None, attempt: int, *,
                   output: dict[str, Any] | None = None, error: str | None = None) -> None:
    """Record the observation of the call running now (its output, or the error the model will see)."""
    node = out.state.nodes[spec.id]
    assert node.call is not None
    call = node.steps[-1]["calls"][node.call]
    out.add(NodeToolReturned(node=spec.id, turn=len(node.steps) - 1, index=node.call, call_id=call["call_id"],
                             tool=call["tool"], dispatch_id=dispatch_id, attempt=attempt, output=output,
                             error=None if output is not None else error or "no result"))
    _next_call(out, spec)


@dataclass(frozen=True)
class Handler:
    model: type[EventData]
    decide: Callable[[Emitter, RouterInput, Any], None]
    starts: bool = False
    """May start a task that does not exist yet (any other input for an unknown task names nothing)."""
    internal: bool = False
    """Made by the router's own timers, never taken from the bus."""


HANDLERS: dict[str, Handler] = {
    "task.accepted": Handler(TaskAccepted, _on_accepted, starts=True),
    "subtask.requested": Handler(SubtaskRequested, _on_subtask_requested, starts=True),
    "task.fork_requested": Handler(TaskForkRequested, _on_fork, starts=True),
    "task.cancel_requested": Handler(TaskCancelRequested, _on_cancel),
    "task.admitted": Handler(TaskAdmitted, _on_admitted),
    "node.approval_decided": Handler(NodeApprovalDecided, _on_approval),
    "node.completed": Handler(NodeCompleted, _on_completed),
    "node.errored": Handler(NodeErrored, _on_errored),
    "node.tools_requested": Handler(NodeToolsRequested, _on_tools_requested),
    "subtask.finished": Handler(SubtaskFinished, _on_subtask_finished),
    "node.deadline_expired": Handler(NodeDeadlineExpired, _on_deadline, internal=True),
    "node.retry_due": Handler(NodeRetryDue, _on_retry_due, internal=True),
}
"""Every input the router applies: its payload model and the function deciding it."""
INPUT_TYPES = tuple(HANDLERS)
BUS_INPUTS = tuple(t for t, h in HANDLERS.items() if not h.internal)
"""The input types the router consumes from the stream."""


def payload(event: Envelope, model: type[EventData]) -> Any:
    try:
        return model.model_validate(event.data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()[:3])
        raise InvalidInput(f"not a valid {event.type} payload: {problems}") from None


def starts_task(event: Envelope) -> bool:
    """Whether the input may name a task that does not exist yet: a request that starts one, or a parent's
    cancel of a subtask that has not started (so it never does)."""
    handler = HANDLERS.get(event.type)
    return handler is not None and (handler.starts or (event.type == "task.cancel_requested"
                                                       and bool(event.data.get("parent_id"))))


# --- apply and replay -------------------------------------------------------------------------

def apply(state: TaskState, inp: RouterInput) -> tuple[TaskState, list[Envelope]]:
    """Decide, then fold: the records to store (input record first) and the state after them."""
    out = _decide(state, inp)
    if not out.events:
        return state, []
    record = input_record(inp)
    # the emitter folded the decisions already; the input record only marks the input applied
    return evolve(out.state, record), [record, *out.events]


def replay(records: list[Envelope]) -> list[Envelope]:
    """Re-run the recorded inputs through the current router; returns the records it would store."""
    state = TaskState()
    produced: list[Envelope] = []
    for record in records:
        if record.type == INPUT_RECORD:
            state, out = apply(state, input_from_record(record))
            produced.extend(out)
    return produced
