"""The task index: one row per task (tenant, task id, workflow, revision, status, times, error), folded from the
task's lifecycle events, and the `tasks.list` query that reads it (filters, search, newest first).

Pure logic only: the in-memory ledger keeps rows in a dict, the PostgreSQL projection in a table
(projection.py), and both fold and filter with the functions here so they answer alike.

Search text is the *accepted* input (after the input guardrails redacted it, never the raw task.requested
input), cut to SEARCH_TEXT_MAX characters, and the error; a tenant's forget drops the rows with it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from agent_engine.contracts.envelope import TENANT_PATTERN, Envelope

STATUSES = ("accepted", "queued", "running", "succeeded", "failed", "cancelled", "rejected",
            "deduplicated")
"""A task's status as the list shows it; `running` from task.started (a paused task is still running)."""
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "rejected", "deduplicated"})
RANK = {"accepted": 0, "queued": 1, "running": 2}
"""Status only moves forward: events of a task may be folded out of order (several subjects), and a late
task.accepted must not take a running task back. A terminal status is final."""

LIFECYCLE = frozenset({"task.accepted", "task.queued", "task.started", "task.succeeded",
                       "task.failed", "task.cancelled", "task.rejected", "task.deduplicated"})
"""The event types the index folds (its parser reads only these, besides llm.called and budget records).
Not task.requested: the stream deletes it once guardrails answered it (it holds the raw input), so a rebuild
from the stream would not see it; a task enters the index when accepted (or rejected)."""


def is_lifecycle(subject: str) -> bool:
    """Is a stream subject (`ae.<tenant>.<type>[.<sender or partition>]`) one of a lifecycle event?"""
    kind = subject.split(".", 2)[-1]
    return kind in LIFECYCLE or kind.rsplit(".", 1)[0] in LIFECYCLE


TaskKey = tuple[str, str]
"""(tenant, task id)."""

SEARCH_TEXT_MAX = 4000
ERROR_MAX = 2000
LIMIT_DEFAULT, LIMIT_MAX = 50, 500


@dataclass(frozen=True)
class TaskRow:
    tenant: str
    task_id: str
    workflow: str = ""
    revision: str = ""
    status: str = "accepted"
    started_at: datetime | None = None
    """Its first lifecycle event's time: when it was accepted (or rejected); a queued task starts later."""
    finished_at: datetime | None = None
    error: str = ""
    input_text: str = ""

    def as_json(self, cost_usd: str) -> dict[str, Any]:
        return {"task_id": self.task_id, "tenant": self.tenant, "workflow": self.workflow,
                "revision": self.revision, "status": self.status,
                "started_at": self.started_at.astimezone(UTC).isoformat() if self.started_at else None,
                "finished_at": self.finished_at.astimezone(UTC).isoformat() if self.finished_at else None,
                "cost_usd": cost_usd, "error": self.error}


def status_of(event_type: str) -> str:
    if event_type == "task.started":
        return "running"
    return event_type.removeprefix("task.")


def fold(row: TaskRow | None, event: Envelope) -> TaskRow | None:
    """The task's row after `event` (None: the event is no lifecycle event and there is no row)."""
    if event.type not in LIFECYCLE:
        return row
    data = event.data
    row = row or TaskRow(tenant=event.tenant, task_id=event.task_id)
    changes: dict[str, Any] = {}
    if row.started_at is None or event.time < row.started_at:
        changes["started_at"] = event.time
    workflow, revision = data.get("workflow"), data.get("revision")
    if isinstance(workflow, str) and workflow and not row.workflow:
        changes["workflow"] = workflow[:200]
    if isinstance(revision, str) and revision:
        changes["revision"] = revision[:200]
    if event.type == "task.accepted" and isinstance(data.get("input"), dict):
        changes["input_text"] = json.dumps(data["input"], ensure_ascii=False, sort_keys=True)[:SEARCH_TEXT_MAX]
    new = status_of(event.type)
    if row.status not in TERMINAL and (new in TERMINAL or RANK.get(new, 0) > RANK.get(row.status, 0)):
        changes["status"] = new
        if new in TERMINAL:
            changes["finished_at"] = event.time
            reason = data.get("reason")
            if new != "succeeded" and isinstance(reason, str):
                changes["error"] = reason[:ERROR_MAX]
            if new == "deduplicated":
                changes["error"] = f"same idempotency key as task {data.get('original_task_id', '?')}"[:ERROR_MAX]
    return replace(row, **changes) if changes else row


def status_changes(before: Mapping[TaskKey, str | None], after: Mapping[TaskKey, str | None]) -> Counter[str]:
    """How the count of tasks in each status moves when the rows of `before` (a task's status, None: no row)
    become those of `after`: -1 for a status a task leaves, +1 for the one it enters. The task counts table
    (projection.py) adds these in the index's own transaction, so it always equals the index counted by
    status, and a terminal event read twice (a republish with a new id) moves nothing: the row was already
    there with that status."""
    moves: Counter[str] = Counter()
    for key in set(before) | set(after):
        old, new = before.get(key), after.get(key)
        if old != new:
            if old is not None:
                moves[old] -= 1
            if new is not None:
                moves[new] += 1
    return Counter({status: n for status, n in moves.items() if n})


def by_status(counts: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Tasks by status as the `ae_tasks` gauge shows them: every status (0 when no task is in it), then any
    other a row holds (none, unless the index was written by a newer version)."""
    shown = dict.fromkeys(STATUSES, 0)
    for status, n in counts:
        shown[status] = shown.get(status, 0) + int(n)
    return shown


@dataclass(frozen=True)
class TaskFilter:
    """A `tasks.list` request, checked."""

    tenant: str | None = None
    status: str | None = None
    workflow: str | None = None
    since: datetime | None = None
    search: str | None = None
    limit: int = LIMIT_DEFAULT

    def matches(self, row: TaskRow) -> bool:
        if self.tenant is not None and row.tenant != self.tenant:
            return False
        if self.status is not None and row.status != self.status:
            return False
        if self.workflow is not None and row.workflow != self.workflow:
            return False
        if self.since is not None and (row.started_at is None or row.started_at < self.since):
            return False
        if self.search:
            needle = self.search.casefold()
            return (row.task_id.startswith(self.search) or needle in row.workflow.casefold()
                    or needle in row.input_text.casefold() or needle in row.error.casefold())
        return True


def newest_first(rows: list[TaskRow]) -> list[TaskRow]:
    """Newest request first; ties by task id, so a page is the same at every ask."""
    return sorted(rows, key=lambda r: (r.started_at.timestamp() if r.started_at else 0.0, r.task_id), reverse=True)


def read_filter(body: dict[str, Any], scope: str | None) -> tuple[TaskFilter, str]:
    """(the filter; a problem naming the field that is wrong, "" when none). A tenant-scoped ask (`scope`) sees
    only its tenant: naming another is an error, not an empty list."""
    known = {"tenant", "status", "workflow", "since", "search", "limit"}
    unknown = sorted(set(body) - known)
    if unknown:
        return TaskFilter(), f"unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}"
    tenant = body.get("tenant")
    if tenant is not None and (not isinstance(tenant, str) or not re.fullmatch(TENANT_PATTERN, tenant)):
        return TaskFilter(), f"'tenant' must be a tenant name ({TENANT_PATTERN})"
    if scope is not None:
        if tenant is not None and tenant != scope:
            return TaskFilter(), f"this credential sees only tenant '{scope}', not '{tenant}'"
        tenant = scope
    status = body.get("status")
    if status is not None and status not in STATUSES:
        return TaskFilter(), f"'status' must be one of {', '.join(STATUSES)}; got {str(status)[:40]!r}"
    workflow = body.get("workflow")
    if workflow is not None and (not isinstance(workflow, str) or not 1 <= len(workflow) <= 200):
        return TaskFilter(), "'workflow' must be a workflow name (a string of 1 to 200 characters)"
    since = body.get("since")
    when: datetime | None = None
    if since is not None:
        try:
            when = datetime.fromisoformat(since) if isinstance(since, str) else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            return TaskFilter(), f"'since' must be an ISO 8601 time with its offset, e.g. " \
                                 f"2026-01-31T12:00:00+00:00; got {str(since)[:40]!r}"
    search = body.get("search")
    if search is not None and (not isinstance(search, str) or not 1 <= len(search) <= 200):
        return TaskFilter(), "'search' must be a string of 1 to 200 characters"
    limit = LIMIT_DEFAULT if body.get("limit") is None else body["limit"]  # null is absent, as for every field
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIMIT_MAX:
        return TaskFilter(), f"'limit' must be a whole number from 1 to {LIMIT_MAX}; got {str(limit)[:20]!r}"
    return TaskFilter(tenant, status, workflow, when, search, limit), ""
