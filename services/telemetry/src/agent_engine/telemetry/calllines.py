"""The ledger's call lines in PostgreSQL (projection.py): a batch's llm.called, each kept once by its event id, its
line, and the sums by tenant, model and day (and by the tenant's model and day, tenantcost.py), in a few statements
for the whole batch (the sums added up here first), not several per call."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from agent_engine.contracts.events import LlmCalled
from agent_engine.telemetry import tenantcost
from agent_engine.telemetry.ledger import Ledger, Message, TaskKey
from agent_engine.telemetry.ledger_schema import LINE_SUMS


def insert(conn: psycopg.Connection[Any], p: str, batch: Sequence[Message], erased: set[TaskKey]) -> list[str]:
    """The batch's llm.called, each once by its event id: a few statements for the whole batch (the sums added
    up here first), not several per call. Returns the types of the calls noted for the first time."""
    first: dict[str, Message] = {}
    for m in batch:
        if m.event is not None and m.call is not None:
            first.setdefault(m.event.id, m)  # a copy in the same batch adds nothing
    if not first:
        return []
    new = {str(r[0]) for r in conn.execute(
        f"INSERT INTO {p}_events (event_id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING "
        "RETURNING event_id", (list(first),))}
    noted = [m for event_id, m in first.items() if event_id in new]
    calls: list[tuple[Any, ...]] = []
    tenant_sums: dict[tuple[str, str, str], list[Any]] = {}
    sums: dict[tuple[str, str], list[Any]] = {}
    for m in noted:
        event, call = m.event, m.call
        assert event is not None and call is not None
        line = line_of(call)
        if (event.tenant, event.task_id) not in erased:  # an erased task's call counts in the totals only
            entry = Ledger.entry(event, call)
            u = call.usage
            calls.append((event.id, event.tenant, event.task_id, m.sequence, call.node, u.input_tokens,
                          u.output_tokens, u.cache_read_tokens, u.cache_write_tokens, line[5], bool(line[6]),
                          call.provider == "mock", Jsonb(entry)))
            for kind in tenantcost.KINDS:  # the tenant's sums by model and day (tenantcost.py)
                _add(tenant_sums, (event.tenant, kind, tenantcost.key_of(entry, kind)), line)
        for key in (("tenant", event.tenant), ("model", f"{call.provider}/{call.model}"),
                    ("day", event.time.date().isoformat())):
            _add(sums, key, line)
    if calls:
        conn.cursor().executemany(
            f"INSERT INTO {p}_calls (event_id, tenant, task_id, sequence, node, input_tokens, output_tokens, "
            "cache_read_tokens, cache_write_tokens, cost_usd, unpriced, mock, entry) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", calls)
    if tenant_sums:  # in one order, whoever writes
        conn.cursor().executemany(
            f"INSERT INTO {p}_tenant_totals (tenant, kind, key, {', '.join(LINE_SUMS)}) "
            f"VALUES (%s, %s, %s, {', '.join(['%s'] * len(LINE_SUMS))}) ON CONFLICT (tenant, kind, key) "
            f"DO UPDATE SET {', '.join(f'{c} = {p}_tenant_totals.{c} + excluded.{c}' for c in LINE_SUMS)}",
            [(*key, *line) for key, line in sorted(tenant_sums.items())])
    sets = ", ".join(f"{c} = {p}_totals.{c} + excluded.{c}" for c in LINE_SUMS)
    conn.cursor().executemany(
        f"INSERT INTO {p}_totals (kind, key, {', '.join(LINE_SUMS)}) "
        f"VALUES (%s, %s, {', '.join(['%s'] * len(LINE_SUMS))}) ON CONFLICT (kind, key) DO UPDATE SET {sets}",
        [(*key, *line) for key, line in sorted(sums.items())])
    return [m.event.type for m in noted if m.event is not None]

def line_of(call: LlmCalled) -> tuple[Any, ...]:
    """One call's figures in LINE_SUMS order."""
    u, unpriced = call.usage, call.cost_usd == "unpriced"
    return (1, u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
            Decimal(0) if unpriced else Decimal(call.cost_usd), int(unpriced), int(call.provider == "mock"))


def _add(sums: dict[Any, list[Any]], key: Any, line: tuple[Any, ...]) -> None:
    """Add one call's figures (`line_of`) to the line kept under `key`."""
    kept = sums.get(key)
    if kept is None:
        sums[key] = list(line)
    else:
        for i, figure in enumerate(line):
            kept[i] += figure
