"""Verifying the router store's audit chain, straight from PostgreSQL (read access is enough).

`verify_all` walks every stored record in notification order next to the chain table, recomputing each
record's hash, its task's chain and the global chain, and compares the global chain with every checkpoint.
`read_task` and `verify_chain` do the same for one aggregate (a task, or a tenant's admission log), and
anchor it by walking the global chain from its last link to the first checkpoint after it (the last link
covers every record before it, and where each stands in the global order). `bundle` holds what
`verify_chain` reads, as a bundle that `scripts/verify_audit_bundle.py` checks
with nothing but the standard library. The first broken link raises `Broken`, naming it.

Records stored before the chain existed (the router ran an earlier version) have no link: they are
counted as not covered, and a task's chain starts at its first linked record. The hashes: runtime/audit.py.
Reading happens in one REPEATABLE READ, read-only transaction; checkpoints are read before it starts, so
every checkpoint names a position the snapshot holds.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.sql import SQL, Composed, Identifier

from agent_engine.runtime.audit import (
    BUNDLE_FORMAT,
    ROUTER,
    ZERO,
    Checkpoint,
    Tables,
    global_link,
    owner,
    record_hash,
    task_link,
)


class Broken(Exception):
    """The first link that does not hold; its message names the record and what is wrong with it."""


class NoChain(Exception):
    """The store has no audit chain (the router has not run with it yet)."""


@dataclass(frozen=True)
class Record:
    """One stored record as PostgreSQL holds it."""

    notification_id: int
    originator_id: uuid.UUID
    version: int
    topic: str
    state: bytes


@dataclass(frozen=True)
class Link:
    """One row of the chain table."""

    position: int
    notification_id: int
    originator_id: uuid.UUID
    version: int
    record_hash: bytes
    task_link: bytes
    global_link: bytes


@dataclass
class Report:
    records: int = 0
    """Linked records verified."""
    aggregates: int = 0
    unchained: int = 0
    """Records stored before the chain began: not covered."""
    last_position: int = 0
    checkpoint: Checkpoint | None = None
    """The last checkpoint the chain was compared with (and matched)."""
    checkpoints: int = 0
    task: str | None = None

    def summary(self) -> str:
        what = f"task {self.task}: {self.records} records" if self.task else \
            f"{self.records} records of {self.aggregates} task{'' if self.aggregates == 1 else 's'}"
        if self.checkpoint is None:
            text = f"{what} verified; no checkpoint covers them yet"
        else:
            text = f"{what} verified up to checkpoint {self.checkpoint.position}"
            later = self.last_position - self.checkpoint.position
            if later > 0 and not self.task:
                text += f" ({later} later records not yet checkpointed)"
        if self.unchained:
            text += f"; {self.unchained} records stored before the audit chain began are not covered"
        return text


def name(originator: uuid.UUID, version: int, notification_id: int) -> str:
    return f"task {originator} record {version} (notification {notification_id})"


# --- the walk: pure, over records and links ---------------------------------------------------------------


@dataclass
class Walk:
    """The chains as recomputed so far. Feed it (record, link) pairs in notification order."""

    checkpoints: Mapping[int, Checkpoint]
    chain_start: int | None
    """The first linked notification id: records before it predate the chain."""
    moved: Callable[[uuid.UUID, bytes], int | None] = lambda _o, _h: None
    """The version of the aggregate whose link holds this record hash, if any (to name a reordering)."""
    position: int = 0
    head: bytes = ZERO
    tasks: dict[uuid.UUID, tuple[int, bytes | None]] = field(default_factory=dict)
    report: Report = field(default_factory=Report)

    def step(self, record: Record | None, link: Link | None) -> None:
        if link is None:
            assert record is not None
            if self.chain_start is None or record.notification_id < self.chain_start:
                self.tasks[record.originator_id] = (record.version, None)
                self.report.unchained += 1
                return
            raise Broken(f"{name(record.originator_id, record.version, record.notification_id)} is not in the "
                         "chain: it was added, or moved, outside the router")
        if record is None:
            raise Broken(f"{name(link.originator_id, link.version, link.notification_id)} is missing: "
                         "it was deleted from the store (its link is still in the chain)")
        linked = self.task_step(record, link)
        self.global_step(link, linked)

    def task_step(self, record: Record, link: Link) -> bytes:
        """Check a record against its link and its task's chain; the recomputed task link."""
        if (record.originator_id, record.version) != (link.originator_id, link.version):
            raise Broken(f"notification {record.notification_id} holds task {record.originator_id} record "
                         f"{record.version}, but the chain has task {link.originator_id} record {link.version} "
                         "there: records were reordered")
        if record.notification_id != link.notification_id:
            raise Broken(f"{name(record.originator_id, record.version, record.notification_id)} was linked "
                         f"at notification {link.notification_id}: records were reordered")
        here = name(record.originator_id, record.version, record.notification_id)
        content = record_hash(record.topic, record.state)
        if content != link.record_hash:
            other = self.moved(record.originator_id, content)
            if other is not None and other != record.version:
                raise Broken(f"{here} holds what was stored as record {other}: records were reordered")
            raise Broken(f"{here}: payload does not match its hash")
        before = self.tasks.get(record.originator_id)
        if before is None and record.version != 1:
            missing = "record 1 is" if record.version == 2 else f"records 1..{record.version - 1} are"
            raise Broken(f"task {record.originator_id} {missing} missing (before record {record.version}, "
                         f"notification {record.notification_id}): deleted from the store")
        if before is not None and before[0] != record.version - 1:
            if before[0] >= record.version:
                raise Broken(f"{here} comes after record {before[0]} of its task: records were reordered")
            raise Broken(f"task {record.originator_id} record {record.version - 1} is missing (the record before "
                         f"{here}): deleted from the store")
        linked = task_link(before[1] or ZERO if before else ZERO, record.originator_id, record.version,
                           record.notification_id, content)
        if linked != link.task_link:
            raise Broken(f"{here}: its link does not follow from the record before it (the chain table was edited)")
        if before is None or before[1] is None:
            self.report.aggregates += 1
        self.tasks[record.originator_id] = (record.version, linked)
        return linked

    def global_step(self, link: Link, linked: bytes) -> None:
        """Advance the global chain by one row whose task link is `linked`."""
        expected = self.position + 1
        here = name(link.originator_id, link.version, link.notification_id)
        if link.position != expected:
            if link.position > expected:
                gap = f"position {expected}" if link.position == expected + 1 else \
                    f"positions {expected}..{link.position - 1}"
                raise Broken(f"chain {gap} missing before {here}: records and their links were deleted")
            raise Broken(f"chain position {link.position} appears again at notification {link.notification_id}: "
                         "the chain table was edited")
        head = global_link(self.head, link.position, link.notification_id, link.originator_id, linked)
        if head != link.global_link:
            raise Broken(f"chain position {link.position} ({here}): its global link does not follow from the one "
                         "before (the chain table was edited)")
        self.position, self.head = link.position, head
        self.report.records += 1
        self.report.last_position = link.position
        checkpoint = self.checkpoints.get(link.position)
        if checkpoint is not None:
            self.check(checkpoint, link.notification_id)

    def check(self, checkpoint: Checkpoint, notification_id: int) -> None:
        if checkpoint.head != self.head.hex() or checkpoint.notification_id != notification_id:
            since = f"since checkpoint {self.report.checkpoint.position} (which still matches)" \
                if self.report.checkpoint else "at or before it"
            raise Broken(f"the chain at position {checkpoint.position} differs from checkpoint {checkpoint.position}"
                         f" (published {checkpoint.time}, stream sequence {checkpoint.stream_sequence}): "
                         f"the chain was rewritten; the rewritten records are {since}")
        self.report.checkpoint = checkpoint
        self.report.checkpoints += 1

    def finish(self) -> Report:
        beyond = [c for p, c in self.checkpoints.items() if p > self.position]
        if beyond:
            last = max(beyond, key=lambda c: c.position)
            raise Broken(f"checkpoint {last.position} (published {last.time}) is past the end of the chain at "
                         f"position {self.position}: records were removed from the end")
        return self.report


# --- reading PostgreSQL ------------------------------------------------------------------------------------


def chain_id(conn: psycopg.Connection[Any], tables: Tables = ROUTER) -> str:
    try:
        row = conn.execute(SQL("SELECT chain_id FROM {}").format(Identifier(tables.meta))).fetchone()
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        raise NoChain(f"this store has no audit chain ({tables.meta} is missing): "
                      "the router has not run since the upgrade") from None
    if row is None:
        raise NoChain(f"{tables.meta} names no chain")
    return str(row[0])


def _snapshot(conn: psycopg.Connection[Any]) -> None:
    conn.rollback()
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")


def _chain_start(conn: psycopg.Connection[Any], tables: Tables) -> int | None:
    row = conn.execute(SQL("SELECT min(notification_id) FROM {}").format(Identifier(tables.chain))).fetchone()
    return int(row[0]) if row and row[0] is not None else None


EVENT_COLUMNS = "notification_id, originator_id, originator_version, topic, state"
LINK_COLUMNS = "position, notification_id, originator_id, originator_version, record_hash, task_link, global_link"


def _record(row: Sequence[Any]) -> Record:
    return Record(int(row[0]), row[1], int(row[2]), str(row[3]), bytes(row[4]))


def _link(row: Sequence[Any]) -> Link:
    return Link(int(row[0]), int(row[1]), row[2], int(row[3]), bytes(row[4]), bytes(row[5]), bytes(row[6]))


def _stream(conn: psycopg.Connection[Any], name: str, query: Composed, params: Sequence[Any] = ()) -> Iterator[Any]:
    with conn.cursor(name=name) as cur:
        cur.itersize = 2000
        cur.execute(query, params)
        yield from cur


def _moved(conn: psycopg.Connection[Any], tables: Tables) -> Callable[[uuid.UUID, bytes], int | None]:
    def find(originator: uuid.UUID, content: bytes) -> int | None:
        row = conn.execute(SQL("SELECT originator_version FROM {} WHERE originator_id = %s AND record_hash = %s "
                               "ORDER BY originator_version LIMIT 1").format(Identifier(tables.chain)),
                           (originator, content)).fetchone()
        return int(row[0]) if row else None
    return find


def verify_all(conn: psycopg.Connection[Any], checkpoints: Sequence[Checkpoint], tables: Tables = ROUTER) -> Report:
    """Every record of the store, in notification order, against the chain and the checkpoints."""
    _snapshot(conn)
    walk = Walk(_by_position(checkpoints), _chain_start(conn, tables), _moved(conn, tables))
    records = (_record(r) for r in _stream(conn, "audit_records", SQL(
        "SELECT " + EVENT_COLUMNS + " FROM {} ORDER BY notification_id").format(Identifier(tables.events))))
    links = (_link(r) for r in _stream(conn, "audit_links", SQL(
        "SELECT " + LINK_COLUMNS + " FROM {} ORDER BY position").format(Identifier(tables.chain))))
    record, link = next(records, None), next(links, None)
    while record is not None or link is not None:
        if record is not None and link is not None and record.notification_id == link.notification_id:
            walk.step(record, link)
            record, link = next(records, None), next(links, None)
        elif link is None or (record is not None and record.notification_id < link.notification_id):
            walk.step(record, None)
            record = next(records, None)
        else:
            walk.step(None, link)
            link = next(links, None)
    report = walk.finish()
    conn.rollback()
    return report


@dataclass
class TaskChain:
    """What verifying one aggregate reads: its records and links, and the global chain around them."""

    originator_id: uuid.UUID
    records: list[Record]
    links: list[Link]
    chain_start: int | None
    before: bytes
    """The global link just before the segment (zeros when it starts at position 1)."""
    segment: list[Link]
    """The global chain from the aggregate's last link to the checkpoint after it (or the chain's end)."""
    checkpoint: Checkpoint | None


def read_task(conn: psycopg.Connection[Any], originator: uuid.UUID, checkpoints: Sequence[Checkpoint],
              tables: Tables = ROUTER) -> TaskChain:
    _snapshot(conn)
    events, chain = Identifier(tables.events), Identifier(tables.chain)
    records = [_record(r) for r in conn.execute(SQL(
        "SELECT " + EVENT_COLUMNS + " FROM {} WHERE originator_id = %s ORDER BY originator_version").format(events),
        (originator,))]
    links = [_link(r) for r in conn.execute(SQL(
        "SELECT " + LINK_COLUMNS + " FROM {} WHERE originator_id = %s ORDER BY originator_version").format(chain),
        (originator,))]
    if not records and not links:
        conn.rollback()
        raise NoChain(f"the store holds no records of task {originator}")
    start = _chain_start(conn, tables)
    before, segment, checkpoint = ZERO, [], None
    if links:
        last = max(k.position for k in links)
        after = [c for c in checkpoints if c.position >= last]
        checkpoint = min(after, key=lambda c: c.position) if after else None
        end = checkpoint.position if checkpoint else None
        row = conn.execute(SQL("SELECT global_link FROM {} WHERE position = %s").format(chain), (last - 1,)).fetchone()
        if last > 1 and row is None:
            conn.rollback()
            raise Broken(f"chain position {last - 1} (just before task {originator}'s last link) is missing: "
                         "records and their links were deleted")
        before = bytes(row[0]) if row else ZERO
        segment = [_link(r) for r in conn.execute(SQL(
            "SELECT " + LINK_COLUMNS + " FROM {} WHERE position >= %s AND (%s::bigint IS NULL OR position <= %s) "
            "ORDER BY position").format(chain), (last, end, end))]
    conn.rollback()
    return TaskChain(originator, records, links, start, before, segment, checkpoint)


def verify_chain(task: TaskChain, label: str | None = None) -> Report:
    """One aggregate's records against its links, then its links in the global chain up to the checkpoint."""
    by_version = {k.version: k for k in task.links}

    def moved(_originator: uuid.UUID, content: bytes) -> int | None:
        return next((k.version for k in task.links if k.record_hash == content), None)

    walk = Walk({}, task.chain_start, moved)
    linked: dict[int, bytes] = {}
    seen = set()
    for record in task.records:
        link = by_version.get(record.version)
        seen.add(record.version)
        if link is None:
            walk.step(record, None)
        else:
            linked[link.position] = walk.task_step(record, link)
    for link in task.links:
        if link.version not in seen:
            raise Broken(f"{name(link.originator_id, link.version, link.notification_id)} is missing: "
                         "it was deleted from the store (its link is still in the chain)")
    report = walk.report
    report.task = label or str(task.originator_id)
    report.records = len(linked)
    if task.segment:
        anchor = Walk({task.checkpoint.position: task.checkpoint} if task.checkpoint else {}, task.chain_start,
                      position=task.segment[0].position - 1, head=task.before)
        for link in task.segment:
            if link.originator_id == task.originator_id and link.position not in linked:
                here = name(link.originator_id, link.version, link.notification_id)
                raise Broken(f"chain position {link.position} holds {here}, which is not among the task's records")
            anchor.global_step(link, linked.get(link.position, link.task_link))
        if task.checkpoint is not None and anchor.report.checkpoint is None:
            raise Broken(f"checkpoint {task.checkpoint.position} (published {task.checkpoint.time}) is past the end "
                         f"of the chain at position {anchor.position}: records were removed from the end")
        report.checkpoint, report.last_position = anchor.report.checkpoint, anchor.position
    return report


def _by_position(checkpoints: Sequence[Checkpoint]) -> dict[int, Checkpoint]:
    return {c.position: c for c in sorted(checkpoints, key=lambda c: c.stream_sequence)}


# --- bundles -----------------------------------------------------------------------------------------------


def bundle(task: TaskChain, task_id: str, chain: str) -> dict[str, Any]:
    """Everything needed to verify one task offline. Other tasks' rows in the global segment carry only their
    position, notification id, owner tag and task link: hashes, naming neither the task nor what it holds."""
    return {
        "format": BUNDLE_FORMAT,
        "exported": datetime.now(UTC).isoformat(),
        "chain": chain,
        "task_id": task_id,
        "originator_id": str(task.originator_id),
        "chain_start": task.chain_start,
        "records": [{"notification_id": r.notification_id, "version": r.version, "topic": r.topic,
                     "state": base64.b64encode(r.state).decode()} for r in task.records],
        "links": [{"position": k.position, "notification_id": k.notification_id, "version": k.version,
                   "record_hash": k.record_hash.hex(), "task_link": k.task_link.hex(),
                   "global_link": k.global_link.hex()} for k in task.links],
        "segment": {
            "before": task.before.hex(),
            "links": [{"position": k.position, "notification_id": k.notification_id,
                       "owner": owner(k.originator_id, k.position).hex(), "task_link": k.task_link.hex(),
                       "global_link": k.global_link.hex()} for k in task.segment],
        },
        "checkpoint": None if task.checkpoint is None else {
            "chain": task.checkpoint.chain, "position": task.checkpoint.position,
            "notification_id": task.checkpoint.notification_id, "head": task.checkpoint.head,
            "time": task.checkpoint.time, "router": task.checkpoint.router,
            "stream_sequence": task.checkpoint.stream_sequence},
    }
