"""Which tenants a dashboard user may see, and what the server does with a task or a cost line outside them.
Pure: no I/O.

Checked on the server for every page, feed and POST (app.py), never only in the page. A task of a tenant the
user may not see answers exactly as a task that does not exist (404, the router's own words), so task ids of
other tenants cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent_engine.dashboard.auth import Operator


@dataclass(frozen=True)
class Scope:
    tenants: frozenset[str] | None
    """The tenants seen; None: every tenant."""

    @property
    def every(self) -> bool:
        return self.tenants is None

    def sees(self, tenant: Any) -> bool:
        return self.tenants is None or (isinstance(tenant, str) and tenant in self.tenants)


EVERY = Scope(None)


def scope_of(user: Operator | None, open_read: bool) -> Scope:
    """A logged-in person's tenants; nobody logged in sees every tenant only when reading is open to anyone
    (AE_DASHBOARD_OPEN_READ=1, which the start refuses beside operators limited to tenants), else none."""
    if user is not None:
        return Scope(user.tenants)
    return EVERY if open_read else Scope(frozenset())


def not_found(task_id: str) -> str:
    """What the router answers for a task id it has not got: said alike for a task of another tenant."""
    return f"no task '{task_id}' in the router's store"


def list_tenants(scope: Scope, wanted: str) -> list[str] | None:
    """The tenants to ask tasks.list for: None means one ask as given (every tenant, or the one named); [] means
    nothing this user may see matches, so nothing is asked."""
    if scope.tenants is None:
        return None
    if wanted:
        return [wanted] if wanted in scope.tenants else []
    return sorted(scope.tenants)


def merge_tasks(answers: list[list[dict[str, Any]]], limit: int) -> list[dict[str, Any]]:
    """Several tenants' task lists as one, newest first (ties by task id, as telemetry orders one list), cut
    to `limit`: what one ask over those tenants would have given."""
    rows = [row for answer in answers for row in answer]

    def key(row: dict[str, Any]) -> tuple[float, str]:
        try:
            started = datetime.fromisoformat(str(row.get("started_at"))).timestamp()
        except ValueError:
            started = 0.0
        return started, str(row.get("task_id", ""))

    return sorted(rows, key=key, reverse=True)[:limit]
