"""The task's trace as the router keeps it: which span every record of the task names as its parent.

Deterministic, like everything `decide` writes: the trace id comes from the input that started the task
(its `traceparent`, the context guardrails answered in), and the `invoke_workflow` span id is derived from
the task.started record's id, so a replay writes the same trace context into the same records. A task
started without trace context (tracing off, or history from before it) has none, and its records carry
none, byte for byte as before.

The `invoke_workflow` span itself lasts the whole task, which may pass through several router processes:
it is emitted once, by the router that commits the task's end, with the task's recorded start and end
times and the span id fixed at the start (`runtime.tracing.export_span`).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent_engine.contracts.envelope import Envelope
from agent_engine.runtime import tracing

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
