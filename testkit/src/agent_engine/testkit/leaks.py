"""Where a value that must not be kept could hide: every message of the event and dead-letter streams, and
every value of every table of the engine's database. Tests search these for secrets and personal data."""

from __future__ import annotations

import json

import psycopg

from agent_engine.testkit.client import EngineClient


async def everything_on_the_bus(engine: EngineClient) -> bytes:
    """Every message body and its headers, of AE_EVENTS and AE_DLQ."""
    nc = await engine.connect()
    try:
        js = nc.jetstream()
        out = []
        for stream, subject in (("AE_EVENTS", "ae.*.>"), ("AE_DLQ", "aedlq.>")):
            if (await js.stream_info(stream)).state.messages == 0:
                continue
            sub = await js.subscribe(subject, ordered_consumer=True)
            while True:
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except Exception:  # noqa: BLE001  drained
                    break
                out.append(msg.data + json.dumps(msg.headers or {}).encode())
            await sub.unsubscribe()
        return b"".join(out)
    finally:
        await nc.close()


def everything_in_the_database(url: str) -> bytes:
    """Every value of every table outside PostgreSQL's own catalogues: text as text, bytes as stored."""
    out: list[bytes] = []
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'")]
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table}"):
                out.extend(v if isinstance(v, bytes) else str(v).encode() for v in row)
    return b"\n".join(out)
