"""The task's trace as the router keeps it: which span every record of the task names as its parent.

Deterministic, like everything `decide` writes: the trace id comes from the input that started the task
(its `traceparent`, the context guardrails answered in), and the `invoke_workflow` span id is derived from
the task.started record's id, so a replay writes the same trace context into the same records. A task
started without trace context (tracing off, or history from before it) has none, and its records carry
none, byte for byte as before.

The `invoke_workflow` span itself lasts the whole task, which may pass through several router processes:
it is emitted once, by the router that commits the task's end, with the task's recorded start and end
times and the span id fixed at the start (`runtime.tracing.export_span`).

A client's request to the router (a fork, a cancel, an approval: COMMAND_SENDERS) is an untrusted
boundary: the sender's `traceparent` is replaced, before the input is decided, by the context of the
router's own span for it, the root of a new trace whose ids follow from the request (`received`). So the
records a request leads to (a fork's task.forked) name the engine's span, never the sender's, and the
input the router records (and a replay decides again) carries that context. AE_TRACE_TRUST_INGRESS=true
keeps the sender's. Once the request is decided its span also links the task it is about (`request_link`):
the task's `invoke_workflow` span, in the task's own trace, so a viewer goes from an approval to its task.

A fork's records name the span its copied history names (the source task's `invoke_workflow`): stored
forks replay byte for byte, so that stays. Its spans are emitted in a trace of its own instead
(`TaskTrace.own`, from the task.forked record, which names the router's span for the fork request): its
`invoke_workflow` span there, with an id of its own and a link to the source's, and the router publishes
the fork's records under it (`published_under`), so what the runners do for the fork follows into its trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.subjects import COMMAND_SENDERS
from agent_engine.router.lru import Lru
from agent_engine.runtime import tracing

if TYPE_CHECKING:  # the SDK comes with agent-engine-runtime; the router names its span type only
    from opentelemetry.trace import Span

    from agent_engine.router.state import TaskState  # state.py imports this module

FINISHED = ("task.succeeded", "task.failed", "task.cancelled")


@dataclass(frozen=True)
class TaskTrace:
    trace_id: int
    parent_span_id: int
    """The span the task's first input was written in (guardrails' `process` span, or a parent task's)."""
    span_id: int
    """The task's `invoke_workflow` span: every later record of the task names it as parent."""
    sampled: bool = True
    own: TaskTrace | None = None
    """A fork's own trace, where its spans are emitted (`forked_trace`); the rest of this is the copied history's,
    which its records name. None for any other task."""

    @property
    def traceparent(self) -> str:
        """What the task's records carry."""
        return tracing.format_traceparent(self.trace_id, self.span_id, self.sampled)

    @property
    def parent(self) -> str:
        return tracing.format_traceparent(self.trace_id, self.parent_span_id, self.sampled)

    @property
    def emitted(self) -> TaskTrace:
        """The trace the task's own spans are in: a fork's own, else the one its records name."""
        return self.own or self


def started_trace(started: Envelope) -> TaskTrace | None:
    """The trace a task.started record opens: its own traceparent (copied from the input that started the task)
    is the parent; the span id follows from the record's id."""
    parent = tracing.parse_traceparent(started.traceparent)
    if parent is None:
        return None
    return TaskTrace(parent.trace_id, parent.span_id, tracing.derive_span_id("invoke_workflow", started.id),
                     parent.trace_flags.sampled)


def forked_trace(copied: TaskTrace | None, forked: Envelope) -> TaskTrace | None:
    """A fork's trace: the copied history's (what the fork's records go on naming, as they always have) with the
    fork's own (`TaskTrace.own`): under the span the task.forked record names (the router's span for the fork
    request), its `invoke_workflow` span id derived from that record's id as a started task's is from its
    task.started. Without either (an untraced source, or a router with tracing off) nothing changes."""
    parent = tracing.parse_traceparent(forked.traceparent)
    if copied is None or parent is None:
        return copied
    own = TaskTrace(parent.trace_id, parent.span_id, tracing.derive_span_id("invoke_workflow", forked.id),
                    parent.trace_flags.sampled)
    return replace(copied, own=own)


def emit_workflow_span(trace: TaskTrace, *, workflow: str, task_id: str, tenant: str, status: str,
                       started_ns: int, finished_ns: int) -> None:
    """The task's `invoke_workflow {workflow}` span, from its recorded start to its recorded end; a fork's in its
    own trace, linking the source task's."""
    attributes = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": workflow,
                  "ae.task.id": task_id, "ae.tenant": tenant, "ae.task.status": status}
    emitted = trace.emitted
    tracing.export_span(f"invoke_workflow {workflow}", traceparent=emitted.parent, span_id=emitted.span_id,
                        start_ns=started_ns, end_ns=finished_ns, attributes=attributes,
                        error=None if status == "succeeded" else f"task_{status}",
                        links=(trace.traceparent,) if trace.own is not None else ())


def published_under(record: Envelope, trace: TaskTrace | None) -> str | None:
    """The context to publish a record under when it is not the record's own: a fork's record naming the copied
    history's span is published in the fork's own trace. None: the record's own."""
    if trace is None or trace.own is None or record.traceparent != trace.traceparent:
        return None
    return trace.own.traceparent


def request_link(request: Envelope, trace: TaskTrace | None) -> str | None:
    """The span the router's span for a client's request links, once the request is decided: the `invoke_workflow`
    span of the task it is about (a fork's own). A fork request links the source's, which the new fork's
    copied trace names. None for other inputs, and for a task without a trace."""
    if request.type not in COMMAND_SENDERS or trace is None:
        return None
    return trace.traceparent if request.type == "task.fork_requested" else trace.emitted.traceparent


def ingress_traceparent(request: Envelope, *, traced: bool, trusted: bool) -> str | None:
    """The trace context a client's request is decided with: the sender's when senders are trusted; else the
    router's ingress span's (ids derived from the request) when tracing is on, and none when it is off, so no
    record ever names a sender's span."""
    if trusted:
        return request.traceparent
    if not traced:
        return None
    return tracing.format_traceparent(*tracing.derive_ingress_ids(request.tenant, request.id))


def received(headers: Mapping[str, str] | None, envelope: Envelope, subject: str) -> tuple[Span | None, Envelope]:
    """The `process` span of one input (the caller ends it) and the input as it is decided: an input from the
    engine's services as it came; a client's request with its trace context replaced (`ingress_traceparent`)
    and its span the root of that new trace, linking the sender's context."""
    if envelope.type not in COMMAND_SENDERS or tracing.trusts_ingress():  # trusted: a hop like any other
        return tracing.start_processing(headers, envelope, subject), envelope
    traceparent = ingress_traceparent(envelope, traced=tracing.ENABLED, trusted=False)
    span = None
    if tracing.ENABLED:
        span = tracing.start_ingress(headers, envelope, subject,
                                     ids=tracing.derive_ingress_ids(envelope.tenant, envelope.id))
    if (envelope.traceparent, envelope.tracestate) != (traceparent, None):
        envelope = envelope.model_copy(update={"traceparent": traceparent, "tracestate": None})
    return span, envelope


FORKS_KEPT = 10_000


class ForkTraces:
    """The traces of the forks this router committed records of, for its relay to publish them under
    (`published_under`); the task cache drops a task that ended, whose last records are still to publish.
    A copy published by another router, or after this one forgot the fork, goes out under the record's own
    context (JetStream keeps the first copy of each record)."""

    def __init__(self, limit: int = FORKS_KEPT) -> None:
        self.traces: Lru[str, TaskTrace] = Lru(limit)

    def committed(self, task_id: str, trace: TaskTrace | None) -> None:
        if trace is not None and trace.own is not None:
            self.traces[task_id] = trace

    def under(self, record: Envelope) -> str | None:
        return published_under(record, self.traces.get(record.task_id))


def workflow_span(state: TaskState, records: list[Envelope]) -> None:
    """The task's `invoke_workflow` span, when these committed records end a task that has a trace."""
    if state.trace is None or state.started_at is None or state.finished_at is None:
        return
    if any(r.type in FINISHED and r.task_id == state.task_id for r in records):
        emit_workflow_span(state.trace, workflow=state.workflow or "", task_id=state.task_id,
                           tenant=state.tenant, status=state.status,
                           started_ns=_ns(state.started_at), finished_ns=_ns(state.finished_at))


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1e9)
