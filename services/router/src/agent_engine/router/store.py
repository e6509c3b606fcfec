"""The task event store: the `eventsourcing` library on PostgreSQL (psycopg 3).

Every record of a task (applied inputs and decisions) is one stored event in the task's aggregate
sequence; one `save` call commits the records of a whole batch of tasks in one transaction, with
optimistic concurrency on each task's version. The notification log orders every record ever
committed, which the relay publishes from. A task is loaded from its latest snapshot plus the records
after it (snapshots.py, a cache: without a usable one, from all its records); `records` is always the
full list, which replay, history and forks use.
"""

from __future__ import annotations

import logging
import time
import uuid
import weakref
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import unquote, urlparse

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import InterfaceError as PersistenceInterfaceError
from eventsourcing.persistence import Mapper, Notification
from eventsourcing.persistence import OperationalError as PersistenceOperationalError
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier
from psycopg_pool import ConnectionPool

from agent_engine.contracts.envelope import Envelope
from agent_engine.router import openwork, sealing
from agent_engine.router.admission import TENANT_KEY, TenantState, fold_tenant
from agent_engine.router.audit import RECORDER_TOPIC
from agent_engine.router.budgets import DayState, fold_day
from agent_engine.router.core import fold
from agent_engine.router.crypto import EncodedRecord, SealingMapper
from agent_engine.router.datakeys import KeyDestroyed, Keyring, master_key_from_env
from agent_engine.router.idempotency import KeyState, fold_key
from agent_engine.router.snapshots import Snapshot, SnapshotStore, every_from_env
from agent_engine.router.state import TaskState
from agent_engine.runtime.audit import aggregate_id, task_aggregate_id


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


class TaskRecord(DomainEvent):
    """One stored record of a task: a contract envelope as JSON."""

    envelope: dict[str, Any]


TASK_RECORD_TOPIC = get_topic(TaskRecord)


class _RouterApplication(Application[uuid.UUID]):
    name = "router"

    def __init__(self, env: dict[str, str], keyring: Keyring) -> None:
        self.keyring = keyring
        super().__init__(env=env)

    def construct_mapper(self) -> Mapper[uuid.UUID]:
        return SealingMapper(self.construct_transcoder(), self.keyring)  # records are stored sealed


def eventsourcing_env(postgres_url: str) -> dict[str, str]:
    url = urlparse(postgres_url)
    if url.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"AE_POSTGRES_URL must be a postgresql:// URL, got '{url.scheme}://...'")
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": (url.path or "/postgres").lstrip("/") or "postgres",
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_POOL_SIZE": "4",
        "POSTGRES_PRE_PING": "y",
        "CREATE_TABLE": "y",
    }


task_uuid = task_aggregate_id
"""The aggregate id of a task (runtime.audit holds the rule, which agentctl's auditor shares)."""
aggregate_uuid = aggregate_id
"""A task's aggregate id, or for a "tenant:<name>" key that tenant's admission log, and for
"tenant:<name>/key/<key>" the index of one of its idempotency keys (hashed ids, so no task id can name them)."""


PING_AFTER_S = 1.0
"""A pooled connection is pinged before use only when it has not passed a ping for this long (see `IdlePing`)."""


class IdlePing:
    """The pool's check before handing out a connection (eventsourcing's POSTGRES_PRE_PING pings every time): a
    ping only for a connection that has not passed one within PING_AFTER_S. A busy router takes a connection
    for every load and save, and a ping each time was a round trip more on every one. A connection that
    broke since its last ping fails its statement instead, which the router handles as the outage it is
    (the batch is redelivered; the pool discards the broken connection), as it must anyway for a server
    that goes away between the ping and the statement."""

    def __init__(self, after_s: float = PING_AFTER_S) -> None:
        self.after_s = after_s
        self.passed: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = weakref.WeakKeyDictionary()

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        now = time.monotonic()
        if now - self.passed.get(conn, -self.after_s) < self.after_s:
            return
        ConnectionPool.check_connection(conn)
        self.passed[conn] = now


STORE_TRANSIENT = (PersistenceOperationalError, PersistenceInterfaceError, OSError)
"""The event store's outages, besides the runtime's list (OSError: a socket error the driver passes on raw)."""
log = logging.getLogger("router.store")


def _json(record: Envelope, encoded: Mapping[str, tuple[Envelope, bytes]]) -> bytes:
    known = encoded.get(record.id)
    return known[1] if known is not None and known[0] is record else record.to_bytes()


class TaskStore:
    def __init__(self, postgres_url: str, master_key: bytes | None = None, snapshot_every: int | None = None) -> None:
        """`master_key` (32 bytes) wraps the data keys; by default read from AE_MASTER_KEY_FILE.
        `snapshot_every`: records between a task's snapshots (0: none); by default AE_SNAPSHOT_EVERY."""
        self.url = postgres_url
        self.keyring = Keyring(postgres_url, master_key if master_key is not None else master_key_from_env())
        # every record is hash-chained, as stored (sealed), in the transaction that stores it (router/audit.py)
        self.app = _RouterApplication({**eventsourcing_env(postgres_url), "APPLICATION_RECORDER_TOPIC": RECORDER_TOPIC},
                                      self.keyring)
        pool = self.app.recorder.datastore.pool  # type: ignore[attr-defined]
        if not hasattr(pool, "_check"):
            raise RuntimeError("psycopg_pool's ConnectionPool has no _check any more: see IdlePing")
        pool._check = IdlePing()
        self.snapshots = SnapshotStore(self.app.recorder.datastore,  # type: ignore[attr-defined]
                                       self.keyring, every_from_env() if snapshot_every is None else snapshot_every)
        self._position_conn: psycopg.Connection[Any] | None = None
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS router_relay_position "
                         "(name text PRIMARY KEY, position bigint NOT NULL)")
            # the router whose relay it is, while it may have records of its own to publish (relay.py)
            conn.execute("ALTER TABLE router_relay_position ADD COLUMN IF NOT EXISTS member integer")
            conn.execute(openwork.SCHEMA)

    def close(self) -> None:
        if self._position_conn is not None:
            self._position_conn.close()
        self.app.close()
        self.keyring.close()

    def records(self, task_id: str) -> list[Envelope]:
        """The task's stored records; raises keys.KeyDestroyed when they were erased."""
        return [Envelope.model_validate(e.envelope)  # type: ignore[attr-defined]
                for e in self.app.events.get(aggregate_uuid(task_id))]

    def load_tenant(self, tenant: str) -> TenantState:
        """The tenant's admission log; records erased with the tenant's key are passed over (their tasks
        were erased with them), and new records follow on from the last stored version."""
        readable, version = [], 0
        for stored in self.app.recorder.select_events(aggregate_uuid(TENANT_KEY + tenant)):
            version = stored.originator_version
            try:
                readable.append(Envelope.model_validate(self.app.mapper.to_domain_event(stored).envelope))  # type: ignore[attr-defined]
            except KeyDestroyed:
                continue
        state = fold_tenant(readable)
        return state if state.version == version else replace(state, version=version)

    def load_day(self, aggregate: str) -> DayState:
        """A day budget's log (`budgets.day_key`); records erased with the tenant's key are passed over."""
        readable, version = [], 0
        for stored in self.app.recorder.select_events(aggregate_uuid(aggregate)):
            version = stored.originator_version
            try:
                readable.append(Envelope.model_validate(self.app.mapper.to_domain_event(stored).envelope))  # type: ignore[attr-defined]
            except KeyDestroyed:
                continue
        state = fold_day(readable)
        return state if state.version == version else replace(state, version=version)

    def load_key(self, aggregate: str) -> KeyState:
        """The index of one tenant's idempotency key (`idempotency.key_aggregate`)."""
        return fold_key(self.records(aggregate))

    def unrecorded(self, task_ids: Iterable[str]) -> set[str]:
        """Which of the tasks have no stored record at all (so `load` would find them new), in one query: the
        router asks this once per batch for the tasks it has not cached, instead of loading each new one."""
        ids = {aggregate_uuid(t): t for t in task_ids}
        if not ids:
            return set()
        recorder = self.app.recorder
        # one index probe per task, however long its history
        query = SQL("SELECT o AS originator_id FROM unnest(%s::uuid[]) AS o WHERE EXISTS "
                    "(SELECT 1 FROM {schema}.{table} WHERE originator_id = o)").format(
            schema=Identifier(recorder.datastore.schema),  # type: ignore[attr-defined]
            table=Identifier(recorder.events_table_name))  # type: ignore[attr-defined]
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:  # type: ignore[attr-defined]
            curs.execute(query, (list(ids),), prepare=True)  # autocommit: one round trip
            found = {_uuid(row["originator_id"]) for row in curs.fetchall()}
        return {task_id for aggregate, task_id in ids.items() if aggregate not in found}

    def load(self, task_id: str) -> TaskState:
        """The task's state: its snapshot plus the records after it, or the fold of all its records when it
        has no snapshot this code can use on this history. Raises KeyDestroyed when the task was erased."""
        aggregate = aggregate_uuid(task_id)
        snapshot, present = self.snapshots.lookup(aggregate)
        tail: list[Envelope] | None = None
        if snapshot is not None:
            # from the snapshot's own version: its record must be there, and be the one it was made on
            found = list(self.app.events.get(aggregate, gt=snapshot.version - 1))
            if (found and found[0].originator_version == snapshot.version
                    and found[0].envelope.get("id") == snapshot.last_id):  # type: ignore[attr-defined]
                tail = [Envelope.model_validate(e.envelope) for e in found[1:]]  # type: ignore[attr-defined]
            else:
                log.warning("snapshot of task %s at version %d does not sit on its stored history; folding its "
                            "records", task_id, snapshot.version)
        if snapshot is None or tail is None:
            tail = self.records(task_id)
            state = fold(tail)
            unusable = present  # replaced by one that is, or it would cost a full fold at every load
        else:
            state = fold(tail, snapshot.state)
            unusable = False
        if tail and (unusable or (self.snapshots.every and len(tail) >= self.snapshots.every)):
            self.snapshots.write(aggregate, Snapshot(state.version, tail[-1].id, state), replacing=unusable)
        return state

    def save(self, pending: Mapping[str, tuple[int, Sequence[Envelope]]],
             states: Mapping[str, TaskState] | None = None,
             encoded: Mapping[str, tuple[Envelope, bytes]] | None = None) -> list[tuple[int, Envelope]]:
        """Commit new records for several tasks in one transaction; returns (notification id, record).

        `pending` maps task id -> (version the records build on, records). Raises
        eventsourcing's IntegrityError when another writer got there first. `states` (task id -> the state
        after its records, as the router folded them) lets a task whose records cross a multiple of
        AE_SNAPSHOT_EVERY be snapshotted once they are committed. `encoded`: records' JSON (`to_bytes`) by record
        id, with the record, where the caller has it already.
        """
        encoded = encoded or {}
        events = []
        flat: list[Envelope] = []
        for task_id, (base_version, records) in pending.items():
            flat.extend(records)
            originator = aggregate_uuid(task_id)
            for offset, record in enumerate(records, start=1):  # stored as TaskRecord(timestamp, envelope)
                events.append(EncodedRecord(originator, base_version + offset, TASK_RECORD_TOPIC, record.time,
                                            _json(record, encoded)))
        if not events:
            return []
        sealing.choose_keys(self.keyring, {task_id: (aggregate_uuid(task_id), records)
                                           for task_id, (_, records) in pending.items() if records},
                            aggregate_uuid, new={task_id for task_id, (base, _) in pending.items() if base == 0})
        recordings = self.app.save(*events)
        for task_id, (base_version, records) in pending.items():
            state = (states or {}).get(task_id)
            if (state is not None and records and state.version == base_version + len(records)
                    and self.snapshots.due(base_version, state.version)):
                self.snapshots.write(aggregate_uuid(task_id), Snapshot(state.version, records[-1].id, state))
        return [(r.notification.id, record) for r, record in zip(recordings, flat, strict=True)]

    def notifications(self, after: int, limit: int) -> list[tuple[int, Envelope | None]]:
        """The log after `after`: (notification id, record), the record None where it was erased."""
        found = self.app.recorder.select_notifications(start=after + 1, limit=limit)
        page: list[tuple[int, Envelope | None]] = []
        for n in found:
            try:
                page.append((n.id, Envelope.model_validate(self.app.mapper.to_domain_event(n).envelope)))  # type: ignore[attr-defined]
            except KeyDestroyed:
                page.append((n.id, None))
        return page

    def all_records(self, batch: int = 1000) -> Iterable[Envelope]:
        """Every readable record in log order (erased ones are passed over)."""
        position = 0
        while True:
            page = self.notifications(position, batch)
            if not page:
                return
            position = page[-1][0]
            for _, record in page:
                if record is not None:
                    yield record

    def relay_position(self, name: str) -> int:
        """Where relay `name` resumes: its own saved position (everything it committed up to there went out); for
        a name never seen (in Kubernetes, each pod's), the furthest any relay saved, so that it does not republish
        the whole log (it has committed nothing before that)."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute("SELECT coalesce((SELECT position FROM router_relay_position WHERE name = %s), "
                               "(SELECT max(position) FROM router_relay_position))", (name,)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def set_relay_position(self, name: str, position: int, member: int | None = None) -> None:
        """Store the relay position over one kept connection (reopened after a failure). `member`: the router's
        member id while it may leave records of its own unpublished (None once it has drained)."""
        try:
            if self._position_conn is None or self._position_conn.closed:
                self._position_conn = psycopg.connect(self.url, autocommit=True)
            self._position_conn.execute(
                "INSERT INTO router_relay_position (name, position, member) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, member = EXCLUDED.member",
                (name, position, member))
        except psycopg.Error:
            if self._position_conn is not None:
                self._position_conn.close()
            self._position_conn = None
            raise

    def log_end(self) -> int:
        """The highest notification id committed."""
        return int(self.app.recorder.max_notification_id() or 0)

    def settled_end(self) -> int:
        """The highest notification id committed once no insert is in flight: each insert holds the events table's
        EXCLUSIVE lock until it commits or rolls back (which is what makes the ids commit in order), and this
        waits for it with a SHARE lock. A save whose outcome is unknown (it failed, or its router died mid-commit)
        is then in the log or never will be."""
        recorder = self.app.recorder
        table = SQL("{schema}.{table}").format(
            schema=Identifier(recorder.datastore.schema),  # type: ignore[attr-defined]
            table=Identifier(recorder.events_table_name))  # type: ignore[attr-defined]
        with recorder.datastore.get_connection() as conn, conn.transaction():  # type: ignore[attr-defined]
            conn.execute(SQL("LOCK TABLE {table} IN SHARE MODE").format(table=table))
            row = conn.execute(SQL("SELECT max(notification_id) AS n FROM {table}").format(table=table)).fetchone()
        return int(row["n"]) if row and row["n"] is not None else 0

    def others(self, after: int, limit: int, skip: Collection[int]) -> tuple[int, list[Envelope]]:
        """The log after `after` without the records whose ids are in `skip` (this router's own, which it has
        seen already): those are neither fetched nor unsealed. Erased records are passed over. Returns (the last
        id read, the records)."""
        recorder = self.app.recorder
        query = SQL("SELECT notification_id, originator_id, originator_version, topic, "
                    "CASE WHEN notification_id = ANY(%s::bigint[]) THEN NULL ELSE state END AS state "
                    "FROM {schema}.{table} WHERE notification_id > %s ORDER BY notification_id LIMIT %s").format(
            schema=Identifier(recorder.datastore.schema),  # type: ignore[attr-defined]
            table=Identifier(recorder.events_table_name))  # type: ignore[attr-defined]
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:  # type: ignore[attr-defined]
            curs.execute(query, (list(skip), after, limit), prepare=True)
            rows = curs.fetchall()
        records: list[Envelope] = []
        for row in rows:
            if row["state"] is None:
                continue
            stored = Notification(id=row["notification_id"], originator_id=row["originator_id"],
                                  originator_version=row["originator_version"], topic=row["topic"],
                                  state=bytes(row["state"]))
            try:
                records.append(Envelope.model_validate(self.app.mapper.to_domain_event(stored).envelope))  # type: ignore[attr-defined]
            except KeyDestroyed:
                continue
        return (int(rows[-1]["notification_id"]) if rows else after), records
