"""Agent scores: per agent and model, from every LLM call attempt in history (`agentctl agents stats`, and the
agent-runner's `fallback_order: by_score`).

Folded in the ledger's own pass over the stream, in the same transaction as its position (projection.py), so
the figures are exact after a restart and cost nothing at query time but one indexed read:

- one row per call attempt: llm.called (the model answered) and llm.call_failed (it did not; a model skipped
  because its circuit was open, or whose provider is not configured, was never asked, so it is not counted);
- one row per task: its workflow (from task.started), so figures can be had per workflow.

What a row counts: `success` is an answer usable as it came (any llm.called but an `invalid` one, which went
back to the model as a repair turn); a failed attempt or an invalid reply is not. `repairs` counts the replies
to repair turns (llm.called with repair > 0). Latency is the provider's time to answer (llm.called
`latency_ms`, absent in events older than it). Cost is the sum of the priced answers; an unpriced one is counted
apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import LlmCalled, LlmCallFailed, TaskStarted

SUBJECT_SUFFIXES = (".llm.call_failed", ".task.started")
"""What the ledger parses for the scores besides llm.called (which it parses anyway)."""
ONLY_SCORES = ("llm.call_failed", "task.started")
"""Types the ledger itself does not fold."""
NEVER_ASKED = ("CircuitOpen", "NotConfigured")


@dataclass(frozen=True)
class Attempt:
    event_id: str
    tenant: str
    task_id: str
    time: datetime
    agent: str
    provider: str
    model: str
    answered: bool
    success: bool
    repair: bool
    latency_ms: float | None
    cost_usd: Decimal | None
    """None: no price (an unpriced answer, or a failed attempt, which costs nothing)."""
    unpriced: bool


def attempt_of(event: Envelope) -> Attempt | None:
    """The call attempt an llm.called or llm.call_failed records (None for other events, and for a model that
    was never asked)."""
    if event.type == LlmCalled.TYPE:
        call = LlmCalled.model_validate(event.data)
        unpriced = call.cost_usd == "unpriced"
        return Attempt(event.id, event.tenant, event.task_id, event.time, call.agent or "", call.provider,
                       call.model, True, call.outcome != "invalid", call.repair > 0, call.latency_ms,
                       None if unpriced else Decimal(call.cost_usd), unpriced)
    if event.type == LlmCallFailed.TYPE:
        failed = LlmCallFailed.model_validate(event.data)
        if failed.error_class in NEVER_ASKED:
            return None
        return Attempt(event.id, event.tenant, event.task_id, event.time, failed.agent or "", failed.provider,
                       failed.model, False, False, False, None, None, False)
    return None


def workflow_of(event: Envelope) -> str | None:
    """The workflow a task.started names (None for other events); read without validating the whole manifest."""
    if event.type != TaskStarted.TYPE:
        return None
    name = event.data.get("workflow")
    return name if isinstance(name, str) else None


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile (p in 0-100) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def stats(attempts: Iterable[Attempt]) -> list[dict[str, Any]]:
    """One row per (agent, provider, model), sorted by agent then model."""
    groups: dict[tuple[str, str, str], list[Attempt]] = {}
    for a in attempts:
        groups.setdefault((a.agent, a.provider, a.model), []).append(a)
    rows = []
    for (agent, provider, model), group in sorted(groups.items()):
        answered = [a for a in group if a.answered]
        latencies = [a.latency_ms for a in answered if a.latency_ms is not None]
        rows.append(figures(agent, provider, model, attempts=len(group), answered=len(answered),
                            successes=sum(1 for a in group if a.success), repairs=sum(1 for a in group if a.repair),
                            p50=percentile(latencies, 50), p95=percentile(latencies, 95),
                            cost=sum((a.cost_usd for a in answered if a.cost_usd is not None), Decimal(0)),
                            unpriced=sum(1 for a in answered if a.unpriced)))
    return rows


def figures(agent: str, provider: str, model: str, *, attempts: int, answered: int, successes: int, repairs: int,
            p50: float | None, p95: float | None, cost: Decimal, unpriced: int) -> dict[str, Any]:
    """One row as `agentctl agents stats --json` shows it (the same from memory and from PostgreSQL)."""
    return {
        "agent": agent, "provider": provider, "model": model, "attempts": attempts, "answered": answered,
        "failed": attempts - answered, "successes": successes, "success_rate": round(successes / attempts, 4),
        "repairs": repairs, "invalid": answered - successes, "latency_ms_p50": p50, "latency_ms_p95": p95,
        "cost_usd": str(cost), "cost_per_call_usd": str(cost / answered) if answered else "0",
        "unpriced_calls": unpriced,
    }


@dataclass
class Filter:
    tenant: str | None = None
    workflow: str | None = None
    since: datetime | None = None


def read_filter(query: dict[str, Any], scope: str | None) -> Filter:
    """The query's filters; a tenant credential's scope replaces any tenant it names. ValueError names a bad one."""
    since = query.get("since")
    when = None
    if since is not None:
        try:
            when = datetime.fromisoformat(str(since))
        except ValueError:
            raise ValueError(f"since {str(since)[:40]!r} is not an ISO 8601 time") from None
        if when.tzinfo is None:
            raise ValueError(f"since {str(since)[:40]!r} has no time zone")
    for name in ("tenant", "workflow"):
        if query.get(name) is not None and not isinstance(query[name], str):
            raise ValueError(f"{name} must be a string")
    return Filter(scope or query.get("tenant"), query.get("workflow"), when)


@dataclass
class ScoreStore:
    """The in-memory form (telemetry without PostgreSQL)."""

    attempts: dict[str, Attempt] = field(default_factory=dict)
    workflows: dict[tuple[str, str], str] = field(default_factory=dict)

    def observe(self, event: Envelope) -> None:
        attempt = attempt_of(event)
        if attempt is not None:
            self.attempts.setdefault(attempt.event_id, attempt)
        workflow = workflow_of(event)
        if workflow is not None:
            self.workflows[(event.tenant, event.task_id)] = workflow

    def forget(self, tenant: str, task_ids: list[str] | None) -> None:
        for key in [k for k, a in self.attempts.items() if a.tenant == tenant
                    and (task_ids is None or a.task_id in task_ids)]:
            del self.attempts[key]
        for owner in [k for k in self.workflows if k[0] == tenant and (task_ids is None or k[1] in task_ids)]:
            del self.workflows[owner]  # per-task data too: a forget leaves no row of the task

    def query(self, f: Filter) -> list[dict[str, Any]]:
        return stats(a for a in self.attempts.values()
                     if (f.tenant is None or a.tenant == f.tenant) and (f.since is None or a.time >= f.since)
                     and (f.workflow is None or self.workflows.get((a.tenant, a.task_id)) == f.workflow))


def schema(p: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {p}_attempts (
    event_id text PRIMARY KEY,
    tenant text NOT NULL,
    task_id text NOT NULL,
    time timestamptz NOT NULL,
    agent text NOT NULL,
    provider text NOT NULL,
    model text NOT NULL,
    answered boolean NOT NULL,
    success boolean NOT NULL,
    repair boolean NOT NULL,
    latency_ms double precision,
    cost_usd numeric,
    unpriced boolean NOT NULL
);
CREATE INDEX IF NOT EXISTS {p}_attempts_tenant_time ON {p}_attempts (tenant, time);
CREATE TABLE IF NOT EXISTS {p}_task_workflows (
    tenant text NOT NULL,
    task_id text NOT NULL,
    workflow text NOT NULL,
    PRIMARY KEY (tenant, task_id)
);
"""


COLUMNS = ("event_id", "tenant", "task_id", "time", "agent", "provider", "model", "answered", "success", "repair",
           "latency_ms", "cost_usd", "unpriced")


def insert(conn: psycopg.Connection[Any], p: str, events: Sequence[Envelope]) -> None:
    """Fold a batch's events into the tables (in the caller's transaction), one statement per table; a repeat
    adds nothing."""
    attempts = [a for a in map(attempt_of, events) if a is not None]
    if attempts:
        conn.cursor().executemany(
            f"INSERT INTO {p}_attempts ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
            "ON CONFLICT DO NOTHING", [tuple(getattr(a, c) for c in COLUMNS) for a in attempts])
    workflows = [(e.tenant, e.task_id, w) for e in events if (w := workflow_of(e)) is not None]
    if workflows:
        conn.cursor().executemany(f"INSERT INTO {p}_task_workflows (tenant, task_id, workflow) VALUES (%s, %s, %s) "
                                  "ON CONFLICT DO NOTHING", workflows)


def select(conn: psycopg.Connection[Any], p: str, f: Filter) -> list[dict[str, Any]]:
    """The figures, summed in PostgreSQL (percentile_disc is the nearest rank, as `percentile` is)."""
    where: list[str] = ["true"]
    params: list[Any] = []
    if f.tenant is not None:
        where.append("a.tenant = %s")
        params.append(f.tenant)
    if f.since is not None:
        where.append("a.time >= %s")
        params.append(f.since)
    if f.workflow is not None:
        where.append("w.workflow = %s")
        params.append(f.workflow)
    latency = "percentile_disc({}) WITHIN GROUP (ORDER BY a.latency_ms) FILTER (WHERE a.answered)"
    rows = conn.execute(
        "SELECT a.agent, a.provider, a.model, count(*), count(*) FILTER (WHERE a.answered), "
        "count(*) FILTER (WHERE a.success), count(*) FILTER (WHERE a.repair), "
        f"{latency.format(0.5)}, {latency.format(0.95)}, "
        "coalesce(sum(a.cost_usd) FILTER (WHERE a.answered), 0), count(*) FILTER (WHERE a.answered AND a.unpriced) "
        f"FROM {p}_attempts a LEFT JOIN {p}_task_workflows w ON w.tenant = a.tenant AND w.task_id = a.task_id "
        f"WHERE {' AND '.join(where)} GROUP BY a.agent, a.provider, a.model", params).fetchall()
    return [figures(str(r[0]), str(r[1]), str(r[2]), attempts=int(r[3]), answered=int(r[4]), successes=int(r[5]),
                    repairs=int(r[6]), p50=r[7], p95=r[8], cost=Decimal(r[9]), unpriced=int(r[10]))
            for r in sorted(rows, key=lambda r: (r[0], r[1], r[2]))]
