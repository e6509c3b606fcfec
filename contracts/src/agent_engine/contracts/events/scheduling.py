"""Per-tenant limits on running tasks: a task queued, then admitted, and the tenant's admission log.

Only `task.queued` is for others to read; the rest are INTERNAL. The `tenant.*` types are the records of a
tenant's admission log (an aggregate of its own, key `tenant:<name>`), and `task.admitted` is router to router:
stored in that log, addressed to the queued task, and applied by whichever router consumes it.
"""

from __future__ import annotations

from typing import Any

from agent_engine.contracts.events.base import EventData
from agent_engine.contracts.manifest import WorkflowManifest


class TaskQueued(EventData):
    """The tenant was at its limit of running tasks: the task waits (status queued) at `position`.
    It keeps what it will start with, so the workflow revision is pinned at acceptance."""

    TYPE = "task.queued"
    priority: int
    position: int
    reason: str
    workflow: str
    revision: str
    input: dict[str, Any]
    workflow_manifest: WorkflowManifest
    requested_by: str | None = None
    """Who asked (the request's sender): the user a user-day budget counts once the task starts."""
    budget_usd: str | None = None
    """The request's own budget, which the task starts with once admitted."""


class TaskAdmitted(EventData):
    """Router to router: a queued task may start (a running task of its tenant ended)."""

    TYPE = "task.admitted"
    INTERNAL = True  # router to router, through the bus
    reason: str


class TenantAdmitted(EventData):
    """Recorded in the tenant's admission log: the task (envelope task_id) counts as running."""

    TYPE = "tenant.admitted"
    INTERNAL = True  # the router's own bookkeeping
    priority: int = 0
    running: int
    max_running: int
    from_queue: bool = False


class TenantQueued(EventData):
    """Recorded in the tenant's admission log: the task waits at `position` of `queued`."""

    TYPE = "tenant.queued"
    INTERNAL = True  # the router's own bookkeeping
    priority: int = 0
    position: int
    queued: int
    max_queued: int


class TenantReleased(EventData):
    """Recorded in the tenant's admission log: the task ended (or was cancelled while queued)."""

    TYPE = "tenant.released"
    INTERNAL = True  # the router's own bookkeeping
    status: str
    was_queued: bool = False


EVENTS: tuple[type[EventData], ...] = (
    TaskQueued,
    TaskAdmitted,
    TenantAdmitted,
    TenantQueued,
    TenantReleased,
)
"""The event types of this topic."""
