"""The audit chain, written: a recorder that links every stored record in the transaction that stores it,
and the checkpoints of the chain head the router publishes outside PostgreSQL.

`AuditedRecorder` is eventsourcing's PostgreSQL application recorder plus one step. The library locks the
events table (EXCLUSIVE) before it inserts, so transactions that insert commit one at a time in
notification order; within that lock this recorder reads the global head and each task's last link, and
inserts one chain row per record (`runtime/audit.py` says what is hashed). A transaction that fails leaves
neither records nor links. The store selects it with eventsourcing's `APPLICATION_RECORDER_TOPIC`.

`Checkpointer` publishes `(position, notification id, head)` of the last link this process committed,
every AE_AUDIT_CHECKPOINT_RECORDS records or AE_AUDIT_CHECKPOINT_S seconds (and at stop), to the stream
AE_AUDIT, which denies deleting and purging messages. It publishes what the writer knows, never a head
read back from the table. How verifying works: docs/audit.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import ProgrammingError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier, Literal

from agent_engine.contracts.subjects import AUDIT_STREAM, audit_subject
from agent_engine.runtime import streams
from agent_engine.runtime.audit import ZERO, Checkpoint, Tables, global_link, record_hash, task_link
from agent_engine.runtime.bus import MSG_ID
from agent_engine.runtime.settings import env_float, env_int

log = logging.getLogger("router.audit")


@dataclass(frozen=True)
class Head:
    position: int
    notification_id: int
    link: bytes


class AuditedRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        if datastore.enable_db_functions:
            raise ProgrammingError("the audit chain is written by the recorder: POSTGRES_ENABLE_DB_FUNCTIONS "
                                   "would insert records without it")
        self.tables = Tables(events_table_name)
        schema = Identifier(datastore.schema)
        chain, meta = Identifier(self.tables.chain), Identifier(self.tables.meta)
        self.sql_create_statements += [
            SQL("CREATE TABLE IF NOT EXISTS {schema}.{chain} ("
                "position bigint PRIMARY KEY, notification_id bigint NOT NULL UNIQUE, "
                "originator_id uuid NOT NULL, originator_version bigint NOT NULL, "
                "record_hash bytea NOT NULL, task_link bytea NOT NULL, global_link bytea NOT NULL, "
                "UNIQUE (originator_id, originator_version))").format(schema=schema, chain=chain),
            SQL("CREATE TABLE IF NOT EXISTS {schema}.{meta} ("
                "one boolean PRIMARY KEY DEFAULT true CHECK (one), chain_id uuid NOT NULL, "
                "created timestamptz NOT NULL DEFAULT now())").format(schema=schema, meta=meta),
            SQL("INSERT INTO {schema}.{meta} (chain_id) VALUES ({id}) ON CONFLICT DO NOTHING").format(
                schema=schema, meta=meta, id=Literal(str(uuid.uuid4()))),
        ]
        self._heads = SQL(
            "(SELECT NULL::uuid AS originator_id, position AS version, global_link AS link "
            " FROM {schema}.{chain} ORDER BY position DESC LIMIT 1) "
            "UNION ALL "
            "(SELECT c.originator_id, c.originator_version, c.task_link FROM {schema}.{chain} c "
            " JOIN unnest(%b::uuid[], %b::bigint[]) AS p(o, v) "
            " ON c.originator_id = p.o AND c.originator_version = p.v)").format(schema=schema, chain=chain)
        self._insert_links = SQL(
            "INSERT INTO {schema}.{chain} (position, notification_id, originator_id, originator_version, "
            "record_hash, task_link, global_link) "
            "SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::uuid[], %b::bigint[], "
            "%b::bytea[], %b::bytea[], %b::bytea[])").format(schema=schema, chain=chain)
        if datastore.originator_id_type != "uuid":
            raise ProgrammingError("the router's events table keys records by uuid")
        # the library's insert sends a composite array its Python dumper writes as text; one array per column,
        # dumped in binary (psycopg's C dumpers) into a prepared statement, stores the same rows for less
        self._insert_records = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id").format(schema=schema, table=Identifier(events_table_name))
        self._chain_id_query = SQL("SELECT chain_id FROM {schema}.{meta}").format(schema=schema, meta=meta)
        self._pending = threading.local()
        self._lock = threading.Lock()
        self.head: Head | None = None
        """The last link this process committed: what its checkpoints publish."""
        self._chain_id: str | None = None

    @property
    def chain_id(self) -> str:
        if self._chain_id is None:
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(self._chain_id_query)
                row = curs.fetchone()
            if row is None:
                raise ProgrammingError(f"{self.tables.meta} has no chain id")
            self._chain_id = str(row["chain_id"])
        return self._chain_id

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        self._pending.head = None
        ids: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
        committed: Head | None = self._pending.head
        if committed is not None:
            with self._lock:
                if self.head is None or committed.position > self.head.position:
                    self.head = committed
        return ids

    def _insert_stored_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent],
                              **kwargs: Any) -> None:
        """The library's lock and insert (one array per column, see __init__), then ask for the heads the new links
        follow. It goes down the same
        pipeline, so its answer comes back with the notification ids: no extra round trip."""
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(self._insert_records, ([_uuid(e.originator_id) for e in stored_events],
                                            [e.originator_version for e in stored_events],
                                            [e.topic for e in stored_events], [e.state for e in stored_events]),
                     prepare=True)
        first: dict[uuid.UUID, int] = {}
        for event in stored_events:
            originator = _uuid(event.originator_id)
            first[originator] = min(first.get(originator, event.originator_version), event.originator_version)
        heads = curs.connection.cursor()
        heads.execute(self._heads, (list(first), [v - 1 for v in first.values()]), prepare=True)
        self._pending.heads = heads

    def _fetch_ids_after_insert_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent],
                                       **kwargs: Any) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        heads: Cursor[DictRow] = self._pending.heads
        with heads:
            found = heads.fetchall()
        if ids:
            self._link(curs, stored_events, ids, found)
        return ids

    def _link(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], ids: Sequence[int],
              heads: list[DictRow]) -> None:
        """Chain the records just inserted (the table lock is held): one row each, in notification order."""
        rows = sorted(zip(ids, stored_events, strict=True), key=lambda r: r[0])
        position, global_head = 0, ZERO
        tasks: dict[uuid.UUID, bytes] = {}
        for found in heads:
            if found["originator_id"] is None:
                position, global_head = int(found["version"]), bytes(found["link"])
            else:
                tasks[_uuid(found["originator_id"])] = bytes(found["link"])
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
        for notification_id, event in rows:
            originator = _uuid(event.originator_id)
            position += 1
            content = record_hash(event.topic, event.state)
            # no link before: the task's first record, or its earlier records predate the chain
            linked = task_link(tasks.get(originator, ZERO), originator, event.originator_version, notification_id,
                               content)
            global_head = global_link(global_head, position, notification_id, originator, linked)
            tasks[originator] = linked
            for column, value in zip(columns, (position, notification_id, originator, event.originator_version,
                                               content, linked, global_head), strict=True):
                column.append(value)
        curs.execute(self._insert_links, columns, prepare=True)
        self._pending.head = Head(position, rows[-1][0], global_head)


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


RECORDER_TOPIC = f"{__name__}:{AuditedRecorder.__qualname__}"
"""What the store sets as eventsourcing's APPLICATION_RECORDER_TOPIC."""


async def ensure_stream(js: JetStreamContext) -> None:
    """The checkpoint stream: file storage, kept for ever, messages neither deletable nor purgeable; AE_STREAM_REPLICAS
    replicas, like the event stream."""
    await streams.ensure_stream(js, StreamConfig(name=AUDIT_STREAM, subjects=[audit_subject(">")],
                                                 storage=StorageType.FILE, duplicate_window=120.0, deny_delete=True,
                                                 deny_purge=True))


class Checkpointer:
    def __init__(self, js: JetStreamContext, recorder: AuditedRecorder, router: str, *,
                 every_records: int | None = None, every_s: float | None = None) -> None:
        self.js = js
        self.recorder = recorder
        self.router = router
        self.every_records = every_records or env_int("AE_AUDIT_CHECKPOINT_RECORDS", 1000)
        self.every_s = every_s or env_float("AE_AUDIT_CHECKPOINT_S", 10.0)
        self.published: Head | None = None
        self._published_at = time.monotonic()

    def due(self) -> bool:
        head = self.recorder.head
        if head is None or (self.published is not None and head.position <= self.published.position):
            return False
        done = self.published.position if self.published else 0
        return (head.position - done >= self.every_records
                or time.monotonic() - self._published_at >= self.every_s)

    async def publish(self) -> Checkpoint | None:
        """Publish the head this process last committed, if it moved since the last checkpoint."""
        head = self.recorder.head
        if head is None or (self.published is not None and head.position <= self.published.position):
            return None
        chain = await asyncio.to_thread(lambda: self.recorder.chain_id)
        checkpoint = Checkpoint(chain=chain, position=head.position, notification_id=head.notification_id,
                                head=head.link.hex(), time=datetime.now(UTC).isoformat(), router=self.router)
        ack = await self.js.publish(audit_subject(chain), checkpoint.to_json(),
                                    headers={MSG_ID: f"{chain}:{head.position}"})
        self.published, self._published_at = head, time.monotonic()
        return Checkpoint(**{**checkpoint.__dict__, "stream_sequence": ack.seq})

    async def run(self, stop: asyncio.Event, tick: float = 0.5) -> None:
        """Until `stop`; then one last checkpoint of what this process wrote."""
        ready = False
        while True:
            stopping = stop.is_set()
            if not stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), tick)
            try:
                if not ready:
                    await ensure_stream(self.js)
                    ready = True
                if stopping or stop.is_set() or self.due():
                    await asyncio.wait_for(self.publish(), 5.0)
            except Exception as exc:  # noqa: BLE001  NATS or PostgreSQL away: the next tick tries again
                log.warning("audit checkpoint not published (%s); retrying", exc)
            if stopping or stop.is_set():
                return

async def checkpoints(js: JetStreamContext, recorder: object, router: str, stop: asyncio.Event) -> None:
    """The router's checkpoint loop (a store without the audited recorder has no chain to checkpoint)."""
    if isinstance(recorder, AuditedRecorder):
        await Checkpointer(js, recorder, router).run(stop)
