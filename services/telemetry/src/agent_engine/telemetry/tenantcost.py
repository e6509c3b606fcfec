"""Cost by model and by day per tenant: what a person or credential limited to some tenants may be shown (the
ledger's own sums by model and day are over every tenant).

What is summed: the calls of the tenant's tasks that are not erased, which is exactly what the ledger's call log
holds (`Ledger.calls`, PostgreSQL's `ae_ledger_calls`). So a forget (of a tenant, or of a data subject's tasks)
recounts the tenant's sums from what is left, a rebuild folds them again to the same figures, and a ledger
upgraded from a version without them fills them from the call log at start, exactly. The platform's sums by
tenant, model and day keep an erased task's calls (they name no task); these do not.

A query names the tenants (`tenants`: one name or a list) and gets the platform summary's shape over those
tenants only: their lines, and their sums by model and by day. A tenant's credential gets its own tenant's,
whatever it names (its scope replaces the list), as for every other ledger query.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from agent_engine.telemetry.ledger_schema import SUM_COLUMNS

MAX_TENANTS = 1000
"""Tenants one query may name (a dashboard operator's list): more is refused rather than read."""

KINDS = ("model", "day")


def read_tenants(query: dict[str, Any], scope: str | None) -> list[str] | None:
    """The tenants a `ledger` query names in `tenants` (None: it names none, so it is some other ledger query).
    A tenant credential's scope replaces them. ValueError names what is wrong."""
    wanted = query.get("tenants")
    if wanted is None:
        return None
    if isinstance(wanted, str):
        wanted = [wanted]
    if not isinstance(wanted, list) or not wanted or not all(isinstance(t, str) and t for t in wanted):
        raise ValueError("tenants must be a tenant name or a list of tenant names")
    if len(wanted) > MAX_TENANTS:
        raise ValueError(f"tenants names {len(wanted)} tenants; at most {MAX_TENANTS} in one query")
    if scope is not None:  # a tenant's credential sees its own figures only
        return [scope]
    return sorted(set(wanted))


def key_of(entry: dict[str, Any], kind: str) -> str:
    """A call log entry's model (`provider/model`, as the ledger's sums name it) or UTC day."""
    if kind == "model":
        return f"{entry['provider']}/{entry['model']}"
    return str(entry["time"])[:10]  # the event time's isoformat: its date is the first ten characters


def summary(tenants: Iterable[str], lines: dict[str, dict[str, Any]], models: dict[str, dict[str, Any]],
            days: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The answer: the platform summary's shape (tenants, models, days) over the tenants asked, each sorted."""
    return {"tenants": {t: lines[t] for t in sorted(tenants)}, "models": dict(sorted(models.items())),
            "days": dict(sorted(days.items()))}


def breakdown(summary: dict[str, Any]) -> dict[str, Any]:
    """What a tenant's own ledger line gains (`ledger` with a tenant, `agentctl cost --tenant`): its sums by
    model and by day, when it has calls in them (a line without calls reads as before)."""
    return {kind: summary[kind] for kind in ("models", "days") if summary[kind]}


def schema(p: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {p}_tenant_totals (
    tenant text NOT NULL,
    kind text NOT NULL,
    key text NOT NULL,
{SUM_COLUMNS}
    PRIMARY KEY (tenant, kind, key)
);
"""


def _from_calls(p: str, where: str) -> str:
    """The sums of the call log's rows that match `where`, by tenant and model and by tenant and day."""
    sums = ("count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens), "
            "sum(cost_usd), count(*) FILTER (WHERE unpriced), count(*) FILTER (WHERE mock)")
    return (f"INSERT INTO {p}_tenant_totals (tenant, kind, key, calls, input_tokens, output_tokens, "
            "cache_read_tokens, cache_write_tokens, cost_usd, unpriced_calls, mock_calls) "
            f"SELECT tenant, 'model', (entry->>'provider') || '/' || (entry->>'model'), {sums} FROM {p}_calls "
            f"WHERE {where} GROUP BY 1, 3 "
            f"UNION ALL SELECT tenant, 'day', left(entry->>'time', 10), {sums} FROM {p}_calls "
            f"WHERE {where} GROUP BY 1, 3")


def create(conn: psycopg.Connection[Any], p: str) -> int | None:
    """Create the table (in the caller's transaction, under its schema lock); when it is new, fill it from the
    call log, which holds exactly what it sums (a ledger from a version without it). Returns how many calls
    were summed into a new table, None when it was there already."""
    new = conn.execute("SELECT to_regclass(%s) IS NULL", (f"{p}_tenant_totals",)).fetchone()
    conn.execute(schema(p))
    if not (new and new[0]):
        return None
    conn.execute(_from_calls(p, "true"))
    row = conn.execute(f"SELECT count(*) FROM {p}_calls").fetchone()
    return int(row[0]) if row else 0


def recount(conn: psycopg.Connection[Any], p: str, tenant: str) -> None:
    """Sum the tenant afresh from its calls left in the call log (after a forget dropped some, in its
    transaction): one read of that tenant's rows."""
    conn.execute(f"DELETE FROM {p}_tenant_totals WHERE tenant = %s", (tenant,))
    conn.execute(_from_calls(p, "tenant = %(tenant)s"), {"tenant": tenant})
