"""Snapshots of task states: a cache in front of the fold, so a long task is rebuilt from its latest snapshot
plus the records after it instead of from its first record.

One row per task in `router_task_snapshots` (aggregate, version, key id, code fingerprint, sealed state),
replaced by a newer one. A snapshot is only ever a cache: a missing, older, unreadable or mismatched one costs
time, never correctness, because the store then folds the task's records as before (store.py). Replay,
history, forks and the audit read the full record list, never a snapshot.

Why a table of our own rather than eventsourcing's snapshotting: the library's (`Application.take_snapshot`,
`Snapshot.take`) is built for its `Aggregate` objects (it copies the aggregate's `__dict__` and re-reads the
aggregate through the repository to take one), while a task here is a frozen `TaskState` folded by the
router's own pure `evolve` from plain records; and its snapshot store keeps a row per snapshot taken, so a
long task's snapshots would grow with its history, where one current row per task is all that is needed.

- Sealed like the records: AES-256-GCM under the task's data key (crypto.seal), with associated data that
  names it a snapshot (it never opens as a record, nor a record as it) and the fingerprint of the code that
  folded it. Destroying the key (`agentctl tenant forget`) leaves the snapshot unreadable, and erasure also
  deletes the rows of destroyed keys (`drop_erased`).
- Not in the audit chain: the chain proves the records, and a snapshot is derived from them; a snapshot
  that was tampered with does not open (its seal), and one that does not sit on the stored history (its
  version's record is missing or another) is not used.
- Bound to the code: the state is kept as a pickle, which is exact (frozensets, datetimes, pydantic models,
  int keys) and fast, and only ever unpickled after its seal verified, so only a holder of the data key
  (the router) can have written it. A fold's meaning can change between releases, so each snapshot carries
  the fingerprint of the router's and the contracts' source; a snapshot made by other code is passed over
  (and replaced at the next snapshot).
- Written after the commit of the records whose count crosses a multiple of AE_SNAPSHOT_EVERY, from the
  state the router committed, in a short transaction of its own: a snapshot is never ahead of the store,
  a failed write only costs time, and the events table's lock and transaction size do not grow. A load
  that folded AE_SNAPSHOT_EVERY records or more past the snapshot writes one too (tasks from before
  snapshots, or whose write failed), and one that found an unusable snapshot replaces it, so a bad snapshot
  costs one full fold, not one per load.
Page: docs/architecture.md (the store).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import secrets
import sys
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pydantic
from eventsourcing.postgres import PostgresDatastore

import agent_engine.contracts
import agent_engine.router
from agent_engine.router import manifests
from agent_engine.router.crypto import seal, sealed_key_id, unseal
from agent_engine.router.datakeys import KEYS_TABLE, KeyDestroyed, Keyring, MasterKeyError
from agent_engine.router.state import TaskState
from agent_engine.runtime.settings import env_int

log = logging.getLogger("router.snapshots")
TABLE = "router_task_snapshots"
EVERY_ENV = "AE_SNAPSHOT_EVERY"
DEFAULT_EVERY = 200
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    aggregate uuid PRIMARY KEY,
    version bigint NOT NULL,
    key_id uuid NOT NULL,
    fingerprint bytea NOT NULL,
    state bytea NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {TABLE}_key ON {TABLE} (key_id);
"""
_UPSERT = (f"INSERT INTO {TABLE} (aggregate, version, key_id, fingerprint, state) VALUES (%s, %s, %s, %s, %s) "
           f"ON CONFLICT (aggregate) DO UPDATE SET version = EXCLUDED.version, key_id = EXCLUDED.key_id, "
           f"fingerprint = EXCLUDED.fingerprint, state = EXCLUDED.state, written_at = now() "
           f"WHERE {TABLE}.version < EXCLUDED.version OR {TABLE}.fingerprint <> EXCLUDED.fingerprint")
_REPLACE = _UPSERT[:_UPSERT.rindex(" WHERE ")]


def every_from_env() -> int:
    """Records between snapshots of a task (0: no snapshots)."""
    return max(0, env_int(EVERY_ENV, DEFAULT_EVERY))


def _fingerprint() -> bytes:
    digest = hashlib.sha256(f"{sys.version_info[:2]} {pydantic.VERSION} {pickle.HIGHEST_PROTOCOL}".encode())
    sources = 0
    for package in (agent_engine.router, agent_engine.contracts):
        for root in package.__path__:
            for path in sorted(Path(root).rglob("*.py")):
                digest.update(path.relative_to(root).as_posix().encode() + b"\x00" + path.read_bytes())
                sources += 1
    if not sources:  # installed without its source: no way to tell this code from another's, so trust no one's
        log.warning("router source not found: snapshots are used only by the process that wrote them")
        return secrets.token_bytes(32)
    return digest.digest()


FINGERPRINT = _fingerprint()
"""The code that folds: a snapshot folded by other code is not used."""


@dataclass(frozen=True)
class Snapshot:
    version: int
    last_id: str
    """The id of the task's record at `version`: the snapshot is used only on the history it was made from."""
    state: TaskState


def encode(snapshot: Snapshot) -> bytes:
    return pickle.dumps((snapshot.version, snapshot.last_id, snapshot.state), protocol=pickle.HIGHEST_PROTOCOL)


def decode(plain: bytes) -> Snapshot:
    version, last_id, state = pickle.loads(plain)  # only after its seal verified (see above)
    if not isinstance(state, TaskState) or not isinstance(last_id, str) or state.version != version:
        raise ValueError("not a task snapshot")
    if state.manifest is not None and state.workflow is not None and state.revision is not None:
        state = replace(state, manifest=manifests.adopt(state.manifest, state.workflow, state.revision))
    return Snapshot(version, last_id, state)


def _context(fingerprint: bytes) -> bytes:
    return b"\x00task snapshot\x00" + fingerprint


class SnapshotStore:
    """Over the event store's connection pool; every method is a short transaction of its own."""

    def __init__(self, datastore: PostgresDatastore, keyring: Keyring, every: int) -> None:
        self.datastore = datastore
        self.keyring = keyring
        self.every = every
        with self.datastore.transaction(commit=True) as curs:
            curs.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{TABLE} schema",))
            curs.execute(SCHEMA)

    def due(self, base: int, version: int) -> bool:
        """Records from `base` to `version` cross a multiple of `every`."""
        return self.every > 0 and version // self.every > base // self.every

    def read(self, aggregate: uuid.UUID) -> Snapshot | None:
        """The task's snapshot, or None when it has none this code can use."""
        return self.lookup(aggregate)[0]

    def lookup(self, aggregate: uuid.UUID) -> tuple[Snapshot | None, bool]:
        """(the task's snapshot or None when it has none this code can use, whether it has a row at all).
        Raises KeyDestroyed for an erased task (its records would too), and psycopg's errors (the store is
        away: so is its history)."""
        if self.every <= 0:
            return None, False
        with self.datastore.get_connection() as conn, conn.cursor() as curs:  # autocommit: one round trip
            curs.execute(f"SELECT version, fingerprint, state FROM {TABLE} WHERE aggregate = %s", (aggregate,),
                         prepare=True)
            row = curs.fetchone()
        if row is None:
            return None, False
        if bytes(row["fingerprint"]) != FINGERPRINT:
            return None, True
        version, stored = int(row["version"]), bytes(row["state"])
        try:
            key_id = sealed_key_id(stored)
            if key_id is None:
                raise ValueError("not sealed")
            snapshot = decode(unseal(self.keyring.key(key_id), aggregate, version, stored, _context(FINGERPRINT)))
        except (KeyDestroyed, MasterKeyError):
            raise
        except Exception as exc:  # noqa: BLE001  a cache: whatever is wrong with it, the records are the truth
            log.warning("snapshot of aggregate %s at version %d is unreadable (%s); folding its records",
                        aggregate, version, type(exc).__name__)
            return None, True
        return snapshot, True

    def write(self, aggregate: uuid.UUID, snapshot: Snapshot, *, replacing: bool = False) -> bool:
        """Seal and store the snapshot, unless a newer one is there (`replacing`: whatever is there, which a
        load found unusable). Never raises: a snapshot not written costs time only. Returns whether it was
        handed to the table."""
        try:
            key_id = self.keyring.key_of(aggregate)
            if key_id is None:  # records stored before sealing began: their state is not stored sealed either
                return False
            state = seal(self.keyring.key(key_id), aggregate, snapshot.version, encode(snapshot),
                         _context(FINGERPRINT))
            with self.datastore.transaction(commit=True) as curs:
                curs.execute(_REPLACE if replacing else _UPSERT,
                             (aggregate, snapshot.version, key_id, FINGERPRINT, state))
        except Exception as exc:  # noqa: BLE001
            log.warning("snapshot of aggregate %s at version %d not written (%s: %s)", aggregate,
                        snapshot.version, type(exc).__name__, exc)
            return False
        return True


def drop_erased(url: str) -> int:
    """Delete the snapshots sealed under destroyed keys (they no longer open; this frees their rows).
    Returns how many were deleted."""
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
        if found is None or found[0] is None:
            return 0
        cur = conn.execute(f"DELETE FROM {TABLE} s USING {KEYS_TABLE} k "
                           "WHERE s.key_id = k.key_id AND k.wrapped IS NULL")
        return cur.rowcount


def stored(url: str, aggregate: uuid.UUID) -> dict[str, Any] | None:
    """The task's snapshot row as stored (for tests and operators): version, key id, sealed bytes."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT version, key_id, state FROM {TABLE} WHERE aggregate = %s",
                           (aggregate,)).fetchone()
    return None if row is None else {"version": int(row[0]), "key_id": row[1], "state": bytes(row[2])}
