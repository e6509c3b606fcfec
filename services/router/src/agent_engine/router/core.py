"""Pure routing: `decide(state, input) -> events` and `evolve(state, event) -> state`.

No clock, no randomness, no I/O: ids derive from the causing input (uuid5), time comes from the
input event. The store records each applied input (as a `router.input` record) followed by the
decisions it produced, so replaying the inputs reproduces the decisions exactly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import jsonschema

from agent_engine.contracts.envelope import CONTRACT_VERSION, Envelope, derive_id
from agent_engine.contracts.events import (
    DispatchedAgent,
    DispatchedTool,
    NodeApprovalDecided,
    NodeApprovalRefused,
    NodeApprovalRequested,
    NodeApproved,
    NodeCompleted,
    NodeContext,
    NodeDeadlineExpired,
    NodeDispatched,
    NodeErrored,
    NodeFailed,
    NodeResultIgnored,
    NodeRetryDue,
    NodeRetryScheduled,
    NodeSucceeded,
    TaskAccepted,
    TaskCancelled,
    TaskCancelRequested,
    TaskFailed,
    TaskRejected,
    TaskStarted,
    TaskSucceeded,
    Usage,
)
from agent_engine.contracts.manifest import NodeSpec, WorkflowManifest, lookup
from agent_engine.router import ENGINE_VERSION
from agent_engine.router.state import NodeState, TaskState

SOURCE = "agent-engine/router"
INPUT_RECORD = "router.input"
INPUT_TYPES = ("task.accepted", "task.cancel_requested", "node.approval_decided", "node.completed", "node.errored",
               "node.deadline_expired", "node.retry_due")
MAX_CONTEXT_BYTES = 768 * 1024
"""A dispatch must fit a NATS message (1 MiB by default) with room for the agent's configuration."""


@dataclass(frozen=True)
class Resolved:
    """The workflow revision the shell looked up for a task.accepted input (None: not found)."""

    revision: str
    manifest: WorkflowManifest


@dataclass(frozen=True)
class RouterInput:
    event: Envelope
    workflow: Resolved | None = None


# --- decide -----------------------------------------------------------------------------------

def decide(state: TaskState, inp: RouterInput) -> list[Envelope]:
    """The events an input causes; [] when it changes nothing (duplicate, stale or late)."""
    event = inp.event
    if event.id in state.applied or event.type not in INPUT_TYPES:
        return []
    if state.tenant and event.tenant != state.tenant:
        return []  # never let one tenant's event touch another tenant's task
    out = _Emitter(state, event)
    if event.type == "task.accepted":
        return _on_accepted(state, inp, out)
    if event.type == "task.cancel_requested":
        return _on_cancel(state, TaskCancelRequested.model_validate(event.data), out)
    if state.status == "cancelled" and event.type in ("node.completed", "node.errored"):
        return _ignore_late_result(state, event, out)
    if event.type == "node.approval_decided":
        return _on_approval(state, NodeApprovalDecided.model_validate(event.data), out)
    if state.status not in ("running", "waiting"):
        return []
    if event.type == "node.completed":
        completed = NodeCompleted.model_validate(event.data)
        node = _open_node(state, completed.node, completed.dispatch_id) or _superseded(state, completed)
        return _on_completed(state, completed, out) if node else []
    if event.type == "node.errored":
        errored = NodeErrored.model_validate(event.data)
        node = _open_node(state, errored.node, errored.dispatch_id)
        if node is None:
            return []
        if errored.retryable:
            return _retry_or_fail(state, errored.node, node, f"runner error: {errored.error}", out)
        return _fail(state, errored.node, node.attempts, errored.error, out)
    if event.type == "node.retry_due":
        due = NodeRetryDue.model_validate(event.data)
        waiting = state.nodes.get(due.node)
        if waiting is None or waiting.status != "retry_scheduled" or waiting.attempts + 1 != due.attempt:
            return []
        assert state.manifest is not None
        upstream = {n: s.output for n, s in state.nodes.items() if s.status == "succeeded"}
        _dispatch(state.manifest, state.manifest.node(due.node), due.attempt,
                  NodeContext(input=dict(state.input), upstream=upstream), waiting.error or "retry", out)
        return out.events
    expired = NodeDeadlineExpired.model_validate(event.data)
    node = _open_node(state, expired.node, expired.dispatch_id)
    if node is None:
        return []
    assert state.manifest is not None
    timeout = state.manifest.node(expired.node).timeout_s
    return _retry_or_fail(state, expired.node, node, f"no result within the {timeout:g}s deadline", out)


def _open_node(state: TaskState, node_id: str, dispatch_id: str) -> NodeState | None:
    node = state.nodes.get(node_id)
    if node is None or node.status != "dispatched" or node.dispatch_id != dispatch_id:
        return None
    return node


def _on_approval(state: TaskState, decided: NodeApprovalDecided, out: _Emitter) -> list[Envelope]:
    node = state.nodes.get(decided.node)
    if state.status != "waiting" or node is None or node.status != "awaiting_approval" or state.manifest is None:
        return []
    manifest = state.manifest
    spec = manifest.node(decided.node)
    if decided.decision == "reject":
        why = f"rejected by {decided.decided_by}" + (f": {decided.reason}" if decided.reason else "")
        return _fail(state, spec.id, node.attempts, why, out)
    problem = _edit_problem(manifest, spec, decided.args)
    if problem:
        out.add(NodeApprovalRefused(node=spec.id, decided_by=decided.decided_by, reason=problem))
        return out.events
    out.add(NodeApproved(node=spec.id, decided_by=decided.decided_by, args=decided.args,
                         edited=decided.args is not None))
    upstream = {n: s.output for n, s in state.nodes.items() if s.status == "succeeded"}
    context = NodeContext(input=dict(state.input), upstream=upstream)
    _dispatch(manifest, spec, 1, context, f"approved by {decided.decided_by}", out, approved=True,
              args_override=decided.args)
    return out.events


def _edit_problem(manifest: WorkflowManifest, spec: NodeSpec, args: dict[str, Any] | None) -> str:
    """Why edited arguments cannot be accepted ("" when they can)."""
    if args is None:
        return ""
    if spec.kind != "tool":
        return f"node '{spec.id}' is an agent node; only a tool node's arguments can be edited"
    schema = manifest.tools[spec.tool or ""].args_schema
    if schema is None:
        return ""
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(args), key=str)
    if not errors:
        return ""
    detail = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:5])
    return f"edited arguments break the args_schema of tool '{spec.tool}': {detail}"


def _on_cancel(state: TaskState, request: TaskCancelRequested, out: _Emitter) -> list[Envelope]:
    if state.status not in ("running", "waiting"):
        return []  # nothing to stop: not started, or already finished
    out.add(TaskCancelled(reason=request.reason or "cancelled on request", requested_by=request.requested_by,
                          open_nodes=[node for node, _ in state.open_dispatches()]))
    return out.events


def _ignore_late_result(state: TaskState, event: Envelope, out: _Emitter) -> list[Envelope]:
    """A result for a node that was running when the task was cancelled: recorded once, then unused."""
    node_id, dispatch_id = event.data.get("node"), event.data.get("dispatch_id")
    node = state.nodes.get(str(node_id))
    if node is None or node.status != "cancelled" or node.dispatch_id != dispatch_id:
        return []
    out.add(NodeResultIgnored(dispatch_id=str(dispatch_id), node=str(node_id), attempt=node.attempts,
                              reason=f"the task was cancelled before this {event.type} arrived"))
    return out.events


def _superseded(state: TaskState, completed: NodeCompleted) -> NodeState | None:
    """A late result of an earlier attempt of a node that is still open is as good as the current one:
    taking it means a deadline that fired while results were queued costs nothing."""
    node = state.nodes.get(completed.node)
    if node is None or node.status not in ("dispatched", "retry_scheduled"):
        return None
    latest = node.attempts if node.status == "dispatched" else node.attempts + 1  # a failed attempt may yet answer
    if not 1 <= completed.attempt < latest:
        return None
    return node if completed.dispatch_id == derive_id(state.task_id, completed.node, completed.attempt) else None


def _on_accepted(state: TaskState, inp: RouterInput, out: _Emitter) -> list[Envelope]:
    if state.status != "new":
        return []  # a request for a task that exists: idempotent
    accepted = TaskAccepted.model_validate(inp.event.data)
    if inp.workflow is None:
        out.add(TaskRejected(
            stage="router", workflow=accepted.workflow,
            reason=f"unknown workflow '{accepted.workflow}' for tenant '{inp.event.tenant}': "
                   f"push it first with `agentctl workflow push DIR`",
        ))
        return out.events
    manifest = inp.workflow.manifest
    out.add(TaskStarted(
        workflow=accepted.workflow, revision=inp.workflow.revision, engine_version=ENGINE_VERSION,
        contract_version=CONTRACT_VERSION, input=accepted.input, workflow_manifest=manifest,
    ))
    context = NodeContext(input=accepted.input)
    _dispatch(manifest, manifest.start(), 1, context, "start", out)
    return out.events


def _on_completed(state: TaskState, completed: NodeCompleted, out: _Emitter) -> list[Envelope]:
    assert state.manifest is not None
    manifest = state.manifest
    spec = manifest.node(completed.node)
    next_id, problem = _next_node(manifest, spec, completed.output)
    if next_id is None:
        return _fail(state, spec.id, completed.attempt, problem, out)
    out.add(NodeSucceeded(
        dispatch_id=completed.dispatch_id, node=completed.node, attempt=completed.attempt,
        output=completed.output, provider=completed.provider, model=completed.model, usage=completed.usage,
    ))
    upstream = {n: s.output for n, s in state.nodes.items() if s.status == "succeeded"}
    upstream[completed.node] = completed.output
    nxt = manifest.node(next_id)
    if nxt.role == "EXIT":
        cls = TaskSucceeded if nxt.status == "succeeded" else TaskFailed
        out.add(cls(status=nxt.status or "failed", exit_node=nxt.id, reason=f"reached EXIT node '{nxt.id}'"))
        return out.events
    _dispatch(manifest, nxt, 1, NodeContext(input=dict(state.input), upstream=upstream), "next", out)
    return out.events


def _next_node(manifest: WorkflowManifest, spec: NodeSpec, output: dict[str, Any]) -> tuple[str | None, str]:
    edges = manifest.successors(spec.id)
    if spec.role != "DECISION":
        return edges[0].to, ""
    for edge in edges:
        if edge.when is not None and edge.when.matches(output):
            return edge.to, ""
    for edge in edges:
        if edge.default:
            return edge.to, ""
    tested = ", ".join(
        f"{e.when.field} {'in ' + repr(e.when.in_) if e.when.in_ is not None else '== ' + repr(e.when.equals)}"
        f" -> {e.to}" for e in edges if e.when
    )
    found = {e.when.field: lookup(output, e.when.field)[1] for e in edges if e.when}
    return None, f"DECISION output matched no edge: got {found}; edges test {tested}"


def _retry_or_fail(state: TaskState, node_id: str, node: NodeState, why: str, out: _Emitter) -> list[Envelope]:
    assert state.manifest is not None
    spec = state.manifest.node(node_id)
    if node.attempts >= spec.max_attempts:
        return _fail(state, node_id, node.attempts, f"{why}; gave up after {node.attempts} attempts", out)
    delay = backoff_delay(spec, state.task_id or out.task_id, node.attempts)
    if delay > 0:
        out.add(NodeRetryScheduled(node=node_id, attempt=node.attempts + 1, at=out.now + timedelta(seconds=delay),
                                   delay_s=delay, reason=f"retry: {why}"))
        return out.events
    upstream = {n: s.output for n, s in state.nodes.items() if s.status == "succeeded"}
    context = NodeContext(input=dict(state.input), upstream=upstream)
    _dispatch(state.manifest, spec, node.attempts + 1, context, f"retry: {why}", out)
    return out.events


def backoff_delay(spec: NodeSpec, task_id: str, failed_attempt: int) -> float:
    """Seconds before the attempt after `failed_attempt`: exponential, capped, with a jitter factor in
    [0.5, 1) taken from a hash of (task, node, attempt), so replays compute the same delay."""
    if spec.backoff_s <= 0:
        return 0.0
    base = min(spec.backoff_max_s, spec.backoff_s * 2.0 ** (failed_attempt - 1))
    jitter = 0.5 + (uuid.UUID(derive_id(task_id, spec.id, failed_attempt, "jitter")).int % 1000) / 2000
    return round(base * jitter, 3)


def _fail(state: TaskState, node_id: str, attempt: int, reason: str, out: _Emitter) -> list[Envelope]:
    out.add(NodeFailed(node=node_id, attempt=attempt, reason=reason))
    out.add(TaskFailed(status="failed", reason=f"node '{node_id}' failed: {reason}"))
    return out.events


def _dispatch(manifest: WorkflowManifest, spec: NodeSpec, attempt: int, context: NodeContext,
              reason: str, out: _Emitter, *, approved: bool = False,
              args_override: dict[str, Any] | None = None) -> None:
    """Dispatch a node, or ask for approval first when it requires it (retries are not asked again)."""
    dispatch_id = derive_id(out.task_id, spec.id, attempt)
    size = len(context.model_dump_json())
    if size > MAX_CONTEXT_BYTES:
        reason = (f"the context for node '{spec.id}' (task input plus upstream outputs) is {size // 1024} KiB, over "
                  f"the {MAX_CONTEXT_BYTES // 1024} KiB a dispatch may carry; pass large data as workspace files")
        out.add(NodeFailed(node=spec.id, attempt=attempt, reason=reason))
        out.add(TaskFailed(status="failed", reason=f"node '{spec.id}' failed: {reason}"))
        return
    data = NodeDispatched(
        dispatch_id=dispatch_id, node=spec.id, kind=spec.kind or "tool", attempt=attempt,
        deadline=out.now + timedelta(seconds=spec.timeout_s), reason=reason, context=context,
    )
    if spec.kind == "agent":
        agent = manifest.agents[spec.agent or ""]
        schema = manifest.schemas.get(agent.output_schema) if agent.output_schema else None
        if spec.approval == "required" and not approved and attempt == 1:
            out.add(NodeApprovalRequested(node=spec.id, kind="agent"))
            return
        data.agent = DispatchedAgent(name=spec.agent or "", **agent.model_dump(), output_schema_json=schema,
                                     mock_responses=manifest.mock.get(spec.id, []))
    else:
        tool = manifest.tools[spec.tool or ""]
        args, missing = resolve_args(spec.args, context)
        if missing:
            out.add(NodeFailed(node=spec.id, attempt=attempt, reason=missing))
            out.add(TaskFailed(status="failed", reason=f"node '{spec.id}' failed: {missing}"))
            return
        if spec.approval == "required" and not approved and attempt == 1:
            out.add(NodeApprovalRequested(node=spec.id, kind="tool", args=args))
            return
        data.tool = DispatchedTool(name=spec.tool or "", builtin=tool.builtin,
                                   args=args if args_override is None else args_override,
                                   side_effects=tool.side_effects or None)
    out.add(data)


def resolve_args(args: dict[str, Any], context: NodeContext) -> tuple[dict[str, Any], str]:
    """Replace "$input.a.b" and "$nodes.<id>.a" strings with values from the task input or upstream outputs."""
    resolved: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, str) and value.startswith(("$input.", "$nodes.")):
            root, _, path = value[1:].partition(".")
            source: Any = context.input if root == "input" else context.upstream
            found, got = lookup(source, path)
            if not found:
                return {}, f"argument '{key}' refers to {value}, which the task does not have"
            resolved[key] = got
        else:
            resolved[key] = value
    return resolved, ""


class _Emitter:
    """Builds output envelopes with ids derived from the input and time taken from it."""

    def __init__(self, state: TaskState, cause: Envelope) -> None:
        self.cause = cause
        self.task_id = state.task_id or cause.task_id
        self.tenant = state.tenant or cause.tenant
        self.correlation_id = state.correlation_id or cause.correlation_id
        self.now = cause.time
        self.events: list[Envelope] = []

    def add(self, data: Any) -> None:
        # model_construct: every field is built here from validated values, so skip re-validation
        self.events.append(Envelope.model_construct(
            id=derive_id(self.cause.id, len(self.events)), source=SOURCE, type=data.TYPE, time=self.now,
            tenant=self.tenant, task_id=self.task_id, correlation_id=self.correlation_id,
            causation_id=self.cause.id, data=data.model_dump(mode="json", by_alias=True, exclude_none=True),
        ))


# --- evolve -----------------------------------------------------------------------------------

def evolve(state: TaskState, event: Envelope) -> TaskState:
    """Fold one recorded event into the state. Unknown types only bump the version."""
    state = replace(state, version=state.version + 1)
    data = event.data
    kind = event.type
    if kind == INPUT_RECORD:
        return replace(state, applied=state.applied | {data["input"]["id"]}, task_id=event.task_id,
                       tenant=event.tenant, correlation_id=state.correlation_id or event.correlation_id)
    if kind == "task.started":
        started = TaskStarted.model_validate(data)
        manifest = started.workflow_manifest
        return replace(
            state, status="running", workflow=started.workflow, revision=started.revision,
            engine_version=started.engine_version, contract_version=started.contract_version,
            manifest=manifest, input=started.input, started_at=event.time,
            nodes={n.id: NodeState() for n in manifest.nodes},
        )
    if kind == "task.rejected":
        return replace(state, status="rejected", reason=data.get("reason", ""), finished_at=event.time)
    # the two hottest types read their fields directly: they were validated when decided
    if kind == "node.dispatched":
        deadline = data["deadline"]
        return _set_node(state, data["node"], status="dispatched", attempts=data["attempt"],
                         dispatch_id=data["dispatch_id"], dispatched_at=event.time, finished_at=None, error=None,
                         deadline=deadline if isinstance(deadline, datetime) else datetime.fromisoformat(deadline))
    if kind == "node.succeeded":
        usage = data.get("usage")
        return _set_node(state, data["node"], status="succeeded", output=data["output"],
                         provider=data.get("provider"), model=data.get("model"),
                         usage=Usage.model_validate(usage) if usage else None, finished_at=event.time, deadline=None)
    if kind == "node.failed":
        f = NodeFailed.model_validate(data)
        return _set_node(state, f.node, status="failed", error=f.reason, finished_at=event.time, deadline=None)
    if kind == "task.cancelled":
        nodes = {n: replace(s, status="cancelled", finished_at=event.time) if s.status == "dispatched" else s
                 for n, s in state.nodes.items()}
        return replace(state, status="cancelled", nodes=nodes, reason=data.get("reason", ""), finished_at=event.time)
    if kind == "node.retry_scheduled":
        return _set_node(state, data["node"], status="retry_scheduled", deadline=_time(data["at"]),
                         error=data.get("reason"))
    if kind == "node.approval_requested":
        state = _set_node(state, data["node"], status="awaiting_approval")
        return replace(state, status="waiting")
    if kind == "node.approved":
        state = _set_node(state, data["node"], status="approved")
        return replace(state, status="running")
    if kind == "node.result_ignored":
        return _set_node(state, data["node"], dispatch_id=None)
    if kind in ("task.succeeded", "task.failed"):
        exit_node = data.get("exit_node")
        if exit_node:
            state = _set_node(state, exit_node, status="reached", finished_at=event.time)
        return replace(state, status=data["status"], exit_node=exit_node, reason=data.get("reason", ""),
                       finished_at=event.time)
    return state


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _set_node(state: TaskState, node_id: str, **changes: Any) -> TaskState:
    nodes = dict(state.nodes)
    nodes[node_id] = replace(nodes.get(node_id, NodeState()), **changes)
    return replace(state, nodes=nodes)


# --- apply and replay -------------------------------------------------------------------------

def input_record(inp: RouterInput) -> Envelope:
    """The stored form of an applied input: the input itself plus what the shell resolved for it."""
    resolved = None
    if inp.workflow is not None:
        resolved = {"revision": inp.workflow.revision,
                    "manifest": inp.workflow.manifest.model_dump(mode="json", by_alias=True)}
    event = inp.event
    return Envelope(
        id=derive_id(event.id, "input"), source=SOURCE, type=INPUT_RECORD, time=event.time,
        tenant=event.tenant, task_id=event.task_id, correlation_id=event.correlation_id,
        causation_id=event.id, data={"input": event.model_dump(mode="json"), "workflow": resolved},
    )


def input_from_record(record: Envelope) -> RouterInput:
    resolved = record.data.get("workflow")
    workflow = None
    if resolved:
        workflow = Resolved(resolved["revision"], WorkflowManifest.model_validate(resolved["manifest"]))
    return RouterInput(Envelope.model_validate(record.data["input"]), workflow)


def apply(state: TaskState, inp: RouterInput) -> tuple[TaskState, list[Envelope]]:
    """Decide, then fold: the records to store (input record first) and the state after them."""
    decisions = decide(state, inp)
    if not decisions:
        return state, []
    records = [input_record(inp), *decisions]
    for record in records:
        state = evolve(state, record)
    return state, records


def fold(records: list[Envelope]) -> TaskState:
    state = TaskState()
    for record in records:
        state = evolve(state, record)
    return state


def replay(records: list[Envelope]) -> list[Envelope]:
    """Re-run the recorded inputs through the current router; returns the records it would store."""
    state = TaskState()
    produced: list[Envelope] = []
    for record in records:
        if record.type == INPUT_RECORD:
            state, out = apply(state, input_from_record(record))
            produced.extend(out)
    return produced


def usage_total(state: TaskState) -> Usage:
    total = Usage()
    for node in state.nodes.values():
        if node.usage is not None:
            total = Usage(**{k: getattr(total, k) + getattr(node.usage, k) for k in Usage.model_fields})
    return total
