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
keeps the sender's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.subjects import COMMAND_SENDERS
from agent_engine.runtime import tracing

if TYPE_CHECKING:  # the SDK comes with agent-engine-runtime; the router names its span type only
    from opentelemetry.trace import Span

FINISHED = ("task.succeeded", "task.failed", "task.cancelled")


@dataclass(frozen=True)
class TaskTrace:
    trace_id: int
    parent_span_id: int
    """The span the task's first input was written in (guardrails' `process` span, or a parent task's)."""
    span_id: int
    """The task's `invoke_workflow` span: every later record of the task names it as parent."""
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        """What the task's records carry."""
        return tracing.format_traceparent(self.trace_id, self.span_id, self.sampled)

    @property
    def parent(self) -> str:
        return tracing.format_traceparent(self.trace_id, self.parent_span_id, self.sampled)


def started_trace(started: Envelope) -> TaskTrace | None:
    """The trace a task.started record opens: its own traceparent (copied from the input that started the task)
    is the parent; the span id follows from the record's id."""
    parent = tracing.parse_traceparent(started.traceparent)
    if parent is None:
        return None
    return TaskTrace(parent.trace_id, parent.span_id, tracing.derive_span_id("invoke_workflow", started.id),
                     parent.trace_flags.sampled)


def emit_workflow_span(trace: TaskTrace, *, workflow: str, task_id: str, tenant: str, status: str,
                       started_ns: int, finished_ns: int) -> None:
    """The task's `invoke_workflow {workflow}` span, from its recorded start to its recorded end."""
    attributes = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": workflow,
                  "ae.task.id": task_id, "ae.tenant": tenant, "ae.task.status": status}
    tracing.export_span(f"invoke_workflow {workflow}", traceparent=trace.parent, span_id=trace.span_id,
                        start_ns=started_ns, end_ns=finished_ns, attributes=attributes,
                        error=None if status == "succeeded" else f"task_{status}")


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
