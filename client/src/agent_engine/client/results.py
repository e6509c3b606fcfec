"""What `submit` and `outcome` return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent_engine.contracts.envelope import Envelope

END_TYPES = frozenset({"task.succeeded", "task.failed", "task.cancelled", "task.rejected"})
"""The events after which nothing more happens to a task."""

Admitted = Literal["started", "queued", "deduplicated"]
Ended = Literal["succeeded", "failed", "cancelled", "rejected"]


@dataclass(frozen=True)
class Submitted:
    """The engine took the request: the task to follow, and how it began."""

    task_id: str
    """The task to follow: this request's own, or, when `deduplicated`, the task the idempotency key names."""
    status: Admitted
    """`started`; `queued` (its tenant is at its limit of running tasks); or `deduplicated` (the key named a task
    of the tenant already, within the engine's window: this request started nothing)."""
    request_task_id: str
    """The task id this request was sent with (equal to `task_id` unless deduplicated)."""
    event: Envelope
    """The engine's answer: `task.started`, `task.queued` or `task.deduplicated`."""

    @property
    def deduplicated(self) -> bool:
        return self.status == "deduplicated"

    @property
    def reason(self) -> str:
        """Why it is queued (with its position), or which task the key names; "" when started."""
        return str(self.event.data.get("reason", ""))


@dataclass(frozen=True)
class Outcome:
    """How a task ended."""

    task_id: str
    status: Ended
    reason: str
    """E.g. `reached EXIT node 'approved'`, `node 'review' failed: ...`, the cancel's or rejection's reason."""
    event: Envelope
    """The last event: `task.succeeded`, `task.failed`, `task.cancelled` or `task.rejected`."""

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def exit_node(self) -> str | None:
        node = self.event.data.get("exit_node")
        return node if isinstance(node, str) else None

    @classmethod
    def of(cls, event: Envelope) -> Outcome:
        status: Ended = {"task.succeeded": "succeeded", "task.failed": "failed", "task.cancelled": "cancelled",
                         "task.rejected": "rejected"}[event.type]  # type: ignore[assignment]
        return cls(event.task_id, status, str(event.data.get("reason", "")), event)
