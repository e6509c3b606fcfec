"""Per-tenant scheduling (R10), pure: how many of a tenant's tasks run at once, and who waits.

Each tenant has an admission log, an aggregate of its own stored in the same transaction as the
tasks it concerns. A new task is admitted (counts as running), queued (waits, by priority and then
arrival), or refused when the queue is full. When a running task ends, the first queued one is
admitted and told so with a `task.admitted` record addressed to it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import TenantAdmitted, TenantQueued, TenantReleased

TENANT_KEY = "tenant:"
"""Prefix of a tenant's admission log among the aggregates one batch saves (task ids never start with it)."""


@dataclass(frozen=True)
class Limits:
    max_running: int = 0
    """0: no limit, and no admission log is kept."""
    max_queued: int = 100

    @classmethod
    def parse(cls, default_running: str, default_queued: str, per_tenant: str) -> dict[str, Limits]:
        """Limits by tenant from the router's environment; key "" is the default for other tenants.
        AE_TENANT_LIMITS reads "acme=5:50,beta=2:0" (running:queued)."""
        try:
            limits = {"": cls(int(default_running or 0), int(default_queued or 100))}
            for part in filter(None, (p.strip() for p in per_tenant.split(","))):
                tenant, _, pair = part.partition("=")
                running, _, queued = pair.partition(":")
                limits[tenant.strip()] = cls(int(running), int(queued or limits[""].max_queued))
        except ValueError:
            raise SystemExit(f"AE_TENANT_LIMITS={per_tenant!r} (or AE_TENANT_MAX_RUNNING/QUEUED) is not valid: "
                             "write tenant=running:queued pairs, e.g. acme=5:50,beta=2:0") from None
        if any(v.max_running < 0 or v.max_queued < 0 for v in limits.values()):
            raise SystemExit("tenant limits must not be negative")
        return limits


@dataclass(frozen=True)
class Admission:
    """What the admission log decided for a new task; recorded with the task's input, so replay agrees."""

    decision: str
    """start | queue | reject"""
    reason: str = ""
    position: int = 0


@dataclass(frozen=True)
class TenantState:
    running: frozenset[str] = frozenset()
    queued: tuple[tuple[int, int, str], ...] = ()
    """(-priority, arrival, task id), in the order they will start."""
    arrivals: int = 0
    version: int = 0


def admit(state: TenantState, limits: Limits, tenant: str, task_id: str, priority: int
          ) -> tuple[Admission, TenantAdmitted | TenantQueued | None]:
    if len(state.running) < limits.max_running:
        return Admission("start"), TenantAdmitted(priority=priority, running=len(state.running) + 1,
                                                  max_running=limits.max_running)
    if len(state.queued) < limits.max_queued:
        position = 1 + sum(1 for q in state.queued if q[0] <= -priority)
        reason = (f"tenant '{tenant}' has {len(state.running)} running task(s), its limit; "
                  f"queued at position {position} of {len(state.queued) + 1}")
        return Admission("queue", reason, position), TenantQueued(
            priority=priority, position=position, queued=len(state.queued) + 1, max_queued=limits.max_queued)
    reason = (f"tenant '{tenant}' has {len(state.running)} running task(s) (limit {limits.max_running}) and "
              f"{len(state.queued)} queued (limit {limits.max_queued}); submit again later")
    return Admission("reject", reason), None


def release(state: TenantState, limits: Limits, task_id: str, status: str
            ) -> list[tuple[str, TenantAdmitted | TenantReleased]]:
    """(task id, event) pairs for the log when a task ends: its release, and the queued tasks that may
    start now (the first in order, or more if the limit was raised or lifted)."""
    if any(q[2] == task_id for q in state.queued):
        return [(task_id, TenantReleased(status=status, was_queued=True))]
    if task_id not in state.running:
        return []
    out: list[tuple[str, TenantAdmitted | TenantReleased]] = [(task_id, TenantReleased(status=status))]
    running = len(state.running) - 1
    for priority, _, queued_id in state.queued:
        if limits.max_running and running >= limits.max_running:
            break
        running += 1
        out.append((queued_id, TenantAdmitted(priority=-priority, running=running, from_queue=True,
                                              max_running=limits.max_running)))
    return out


def evolve_tenant(state: TenantState, record: Envelope) -> TenantState:
    state = replace(state, version=state.version + 1)
    task_id = record.task_id
    if record.type == "tenant.admitted":
        queued = tuple(q for q in state.queued if q[2] != task_id)
        return replace(state, running=state.running | {task_id}, queued=queued)
    if record.type == "tenant.queued":
        entry = (-int(record.data.get("priority", 0)), state.arrivals, task_id)
        return replace(state, queued=tuple(sorted((*state.queued, entry))), arrivals=state.arrivals + 1)
    if record.type == "tenant.released":
        return replace(state, running=state.running - {task_id},
                       queued=tuple(q for q in state.queued if q[2] != task_id))
    return state


def fold_tenant(records: list[Envelope]) -> TenantState:
    state = TenantState()
    for record in records:
        state = evolve_tenant(state, record)
    return state
