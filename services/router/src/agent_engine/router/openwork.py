"""What the router needs at start, kept small and current: the open dispatches and scheduled retries (the
deadline index) as of a notification id, so a start reads that row and the records after it instead of every
record ever stored.

Each router saves its index every CHECKPOINT_S seconds and at stop, under its own name, with the position its relay
has read the log through: every record up to it has been observed by the index (read back by the relay, or committed
by this router); and once right after its start, with the position the start read to, so a router killed sooner than
CHECKPOINT_S after each start does not read the same, ever longer tail at every start. A start restores the
checkpoint with the highest position, whichever router wrote it (each router's index follows every record), then
observes the records after it. Observing a record again is harmless (a dispatch seen again keeps its deadline; a
result removes the entry), so a checkpoint that also holds some of this router's newer commits is still exact once
the tail is read. Heartbeats are not kept: after a start, running calls get a heartbeat window before any deadline
fires (timers.py).

The rows hold task ids, tenants and deadlines, never payloads. A forgotten task that a checkpoint still names
fires once at most, meets its destroyed key, and is dropped (timers.py).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from agent_engine.router.deadlines import DeadlineIndex, Open, Room

TABLE = "router_open_work"
SCHEMA = (f"CREATE TABLE IF NOT EXISTS {TABLE} (name text PRIMARY KEY, position bigint NOT NULL, "
          "entries jsonb NOT NULL, saved_at timestamptz NOT NULL DEFAULT now())")
CHECKPOINT_S = 15.0


def entries(index: DeadlineIndex) -> list[dict[str, Any]]:
    return [{"task": task, "node": node, "dispatch_id": o.dispatch_id, "attempt": o.attempt,
             "deadline": o.deadline.isoformat(), "tenant": o.tenant, "correlation_id": o.correlation_id,
             "retry": o.retry, "window_s": o.window.total_seconds(),
             **({"room": {"scope": o.room.scope, "day": o.room.day, "needed": str(o.room.needed)}} if o.room else {})}
            for (task, node), o in index.open.items()]


def restore(index: DeadlineIndex, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        room = row.get("room")  # absent in checkpoints saved before day-budget waits were woken early
        index.open[(row["task"], row["node"])] = Open(
            row["dispatch_id"], int(row["attempt"]), datetime.fromisoformat(row["deadline"]), row["tenant"],
            row["correlation_id"], retry=bool(row["retry"]), window=timedelta(seconds=float(row["window_s"])),
            room=Room(room["scope"], room["day"], Decimal(room["needed"])) if room else None)


def latest(url: str) -> tuple[int, list[dict[str, Any]]]:
    """The checkpoint with the highest position, any router's: (position, entries); (0, []) when none."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT position, entries FROM {TABLE} ORDER BY position DESC LIMIT 1").fetchone()
    if row is None:
        return 0, []
    raw = row[1]
    return int(row[0]), list(json.loads(raw) if isinstance(raw, str | bytes) else raw)


def save(url: str, name: str, position: int, rows: list[dict[str, Any]]) -> None:
    """Save `rows` (made by `entries` on the event loop, which owns the index) as router `name`'s checkpoint. Rows
    of routers gone for a day (each Kubernetes pod has its own name) are deleted, the furthest one always kept."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {TABLE} (name, position, entries) VALUES (%s, %s, %s) ON CONFLICT (name) DO "
                     "UPDATE SET position = EXCLUDED.position, entries = EXCLUDED.entries, saved_at = now()",
                     (name, position, json.dumps(rows)))
        conn.execute(f"DELETE FROM {TABLE} WHERE saved_at < now() - interval '1 day' AND position < "
                     f"(SELECT max(position) FROM {TABLE})")
