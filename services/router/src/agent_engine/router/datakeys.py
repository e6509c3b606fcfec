"""Data keys of the router's store: one per tenant, and one per (tenant, data subject) when a request names
its data subject. Each is 32 random bytes (AES-256), kept in PostgreSQL wrapped (AES-256-GCM) by the
master key, which is read from the file `AE_MASTER_KEY_FILE` and never stored with the data.

Erasure is destroying a key: its wrapped bytes are set to NULL and the table is rewritten (VACUUM FULL),
so no copy of the wrapped key stays in the table's files. Records sealed under it are never edited; they
simply cannot be opened any more. Page: docs/data-lifecycle.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent_engine.router.lru import Lru

MASTER_KEY_ENV = "AE_MASTER_KEY_FILE"
KEYS_TABLE = "router_data_keys"
USE_TABLE = "router_data_key_use"
KEY_CACHE_S = 30.0
"""How long an unwrapped key is used before the table is asked again: a router that missed a forget (it
was not running, or the query went to another) stops using a destroyed key within this time."""
KEYS_CACHED = 10_000
"""Unwrapped keys (one per tenant, and per data subject) held in memory at most."""
USES_CACHED = 8_192
"""Which key seals each aggregate's new records, held in memory for at most this many aggregates (tasks): more
than the tasks in hand (the task cache keeps 5,000 by default); an older task's is read from the table again. Not
more, so the router's memory stays flat as finished tasks accumulate (20,000 of them were about 5 MB)."""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {KEYS_TABLE} (
    key_id uuid PRIMARY KEY,
    tenant text NOT NULL,
    subject text NOT NULL,
    wrapped bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS {KEYS_TABLE}_live ON {KEYS_TABLE} (tenant, subject) WHERE wrapped IS NOT NULL;
CREATE TABLE IF NOT EXISTS {USE_TABLE} (
    aggregate uuid PRIMARY KEY,
    key_id uuid NOT NULL,
    tenant text NOT NULL,
    task_id text NOT NULL
);
CREATE INDEX IF NOT EXISTS {USE_TABLE}_key ON {USE_TABLE} (key_id);
"""


class KeyDestroyed(LookupError):
    """The data key a record was sealed under was destroyed (its tenant or data subject was forgotten):
    a known, final state. The record is never readable again."""

    def __init__(self, key_id: uuid.UUID, tenant: str | None = None) -> None:
        super().__init__(f"data key {key_id} was destroyed")
        self.key_id = key_id
        self.tenant = tenant
        """Whose key it was (None: no such key was ever made)."""


class MasterKeyError(ValueError):
    """The master key file is missing, unreadable or not a 32-byte key."""


@dataclass(frozen=True)
class DataKey:
    key_id: uuid.UUID
    tenant: str
    secret: bytes


@dataclass(frozen=True)
class Destroyed:
    """What a forget destroyed: the keys, and the tasks whose records they sealed."""

    keys: int
    task_ids: list[str]


def read_master_key(path: str | os.PathLike[str]) -> bytes:
    """A 32-byte key from a file holding it as 64 hex digits or base64 (surrounding whitespace ignored)."""
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise MasterKeyError(f"{MASTER_KEY_ENV}: cannot read the master key file {path}: {exc.strerror}") from None
    key: bytes | None = None
    try:
        key = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        key = None
    if key is None or len(key) != 32:
        raise MasterKeyError(f"{MASTER_KEY_ENV}: {path} must hold a 32-byte key as 64 hex digits or base64 "
                             "(e.g. `openssl rand -hex 32 > master.key`)")
    return key


def master_key_from_env() -> bytes:
    path = os.environ.get(MASTER_KEY_ENV, "")
    if not path:
        raise MasterKeyError(f"{MASTER_KEY_ENV} is not set: the router seals stored records under data keys that "
                             "a master key wraps; point it at a file holding 32 random bytes as hex "
                             "(`agentctl up` creates $AE_HOME/master.key)")
    return read_master_key(path)


class Keyring:
    """The data keys, over one kept PostgreSQL connection (calls take turns; they are short)."""

    def __init__(self, url: str, master: bytes) -> None:
        if len(master) != 32:
            raise MasterKeyError("the master key must be 32 bytes")
        self.url = url
        self._master = AESGCM(master)
        self._hmac_key = hmac.new(master, b"agent-engine data subject", hashlib.sha256).digest()
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        # caches of the key tables, bounded: a miss costs one query, and memory stays flat as tasks accumulate
        self._keys: Lru[uuid.UUID, tuple[DataKey, float]] = Lru(KEYS_CACHED)
        self._use: Lru[uuid.UUID, uuid.UUID] = Lru(USES_CACHED)
        """Aggregate -> the key its new records are sealed under."""
        self._live: Lru[tuple[str, str], uuid.UUID] = Lru(KEYS_CACHED)
        """(tenant, subject) -> its current key (checked against the table through `key`)."""
        with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{KEYS_TABLE} schema",))
            conn.execute(SCHEMA)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def subject_ref(self, tenant: str, person: str | None) -> str:
        """How a data subject is named in the key table: an HMAC under the master key, never the id itself."""
        if not person:
            return ""
        return hmac.new(self._hmac_key, f"{tenant}\x00{person}".encode(), hashlib.sha256).hexdigest()

    # --- reading ------------------------------------------------------------------------------

    def key(self, key_id: uuid.UUID) -> DataKey:
        """The unwrapped key; raises KeyDestroyed when it was destroyed (or never existed)."""
        cached = self._keys.get(key_id)
        if cached is not None and time.monotonic() - cached[1] < KEY_CACHE_S:
            return cached[0]
        row = self._query("SELECT tenant, subject, wrapped FROM " + KEYS_TABLE + " WHERE key_id = %s", (key_id,))
        if not row or row[0][2] is None:
            self._keys.pop(key_id, None)
            raise KeyDestroyed(key_id, row[0][0] if row else None)
        tenant, subject, wrapped = row[0]
        try:
            secret = self._master.decrypt(bytes(wrapped[:12]), bytes(wrapped[12:]), _wrap_aad(key_id, tenant, subject))
        except InvalidTag:
            raise MasterKeyError(f"data key {key_id} of tenant '{tenant}' does not open with this master key: "
                                 f"{MASTER_KEY_ENV} names another key than the one the store was made with") from None
        found = DataKey(key_id, tenant, secret)
        self._keys[key_id] = (found, time.monotonic())
        return found

    def key_of(self, aggregate: uuid.UUID) -> uuid.UUID | None:
        """The key new records of `aggregate` are sealed under (None: it has none yet)."""
        found = self._use.get(aggregate)
        if found is None:
            row = self._query(f"SELECT key_id FROM {USE_TABLE} WHERE aggregate = %s", (aggregate,))
            if row:
                found = self._use[aggregate] = row[0][0]
        return found

    def keys_of(self, aggregates: Iterable[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        """`key_of` for several aggregates, asking the table once for all those not cached (a batch's new tasks
        have none yet: one query for the batch instead of one each)."""
        found: dict[uuid.UUID, uuid.UUID] = {}
        missing = []
        for aggregate in aggregates:
            cached = self._use.get(aggregate)
            if cached is None:
                missing.append(aggregate)
            else:
                found[aggregate] = cached
        if missing:
            for aggregate, key_id in self._query(f"SELECT aggregate, key_id FROM {USE_TABLE} WHERE aggregate = ANY(%s)",
                                                 (missing,)):
                found[aggregate] = self._use[aggregate] = key_id
        return found

    # --- writing ------------------------------------------------------------------------------

    def live_key(self, tenant: str, person: str | None = None) -> DataKey:
        """The tenant's (or the tenant's data subject's) current key, made on first use."""
        subject = self.subject_ref(tenant, person)
        known = self._live.get((tenant, subject))
        if known is not None:
            try:
                return self.key(known)
            except KeyDestroyed:
                self._live.pop((tenant, subject), None)
        select = f"SELECT key_id FROM {KEYS_TABLE} WHERE tenant = %s AND subject = %s AND wrapped IS NOT NULL"
        row = self._query(select, (tenant, subject))
        if not row:
            key_id, secret = uuid.uuid4(), secrets.token_bytes(32)
            nonce = secrets.token_bytes(12)
            wrapped = nonce + self._master.encrypt(nonce, secret, _wrap_aad(key_id, tenant, subject))
            self._query(f"INSERT INTO {KEYS_TABLE} (key_id, tenant, subject, wrapped) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT DO NOTHING", (key_id, tenant, subject, wrapped), fetch=False)
            row = self._query(select, (tenant, subject))  # ours, or another router's made in between
        self._live[(tenant, subject)] = row[0][0]
        return self.key(row[0][0])

    def assign(self, uses: Iterable[tuple[uuid.UUID, uuid.UUID, str, str]]) -> None:
        """Record which key seals the new records of each aggregate: (aggregate, key id, tenant, task id)."""
        rows = [u for u in uses if self._use.get(u[0]) != u[1]]
        if not rows:
            return
        with self._lock:
            conn = self._connection()
            try:
                with conn.cursor() as cur:
                    cur.executemany(f"INSERT INTO {USE_TABLE} (aggregate, key_id, tenant, task_id) "
                                    "VALUES (%s, %s, %s, %s) ON CONFLICT (aggregate) DO UPDATE "
                                    "SET key_id = EXCLUDED.key_id", rows)
            except psycopg.Error:
                self._reset()
                raise
        for aggregate, key_id, _, _ in rows:
            self._use[aggregate] = key_id

    def destroy(self, tenant: str, person: str | None = None) -> Destroyed:
        """Destroy the tenant's keys (every one: its own and its data subjects'), or one data subject's."""
        where = "tenant = %s AND subject = %s" if person else "tenant = %s"
        params: tuple[str, ...] = (tenant, self.subject_ref(tenant, person)) if person else (tenant,)
        with self._lock:
            destroyed = self._query(f"UPDATE {KEYS_TABLE} SET wrapped = NULL, destroyed_at = now() "
                                    f"WHERE {where} AND wrapped IS NOT NULL RETURNING key_id", params)
            ids = [r[0] for r in destroyed]
            every = self._query(f"SELECT key_id FROM {KEYS_TABLE} WHERE {where}", params)
            tasks = self._query(f"SELECT DISTINCT task_id FROM {USE_TABLE} WHERE key_id = ANY(%s) ORDER BY 1",
                                ([r[0] for r in every],))
            # the old row versions still hold the wrapped keys until the table is rewritten
            self._query(f"VACUUM FULL {KEYS_TABLE}", (), fetch=False)
        for key_id in ids:
            self._keys.pop(key_id, None)
        for aggregate in [a for a, k in self._use.items() if k in set(ids)]:
            self._use.pop(aggregate)
        for scope in [s for s in self._live if s[0] == tenant]:
            self._live.pop(scope)
        return Destroyed(len(ids), [r[0] for r in tasks])

    def forget_cached(self, tenant: str) -> None:
        """Drop every unwrapped key of the tenant held in memory (another router destroyed some)."""
        for key_id in [k for k, (v, _) in self._keys.items() if v.tenant == tenant]:
            self._keys.pop(key_id, None)
        self._use.clear()
        for scope in [s for s in self._live if s[0] == tenant]:
            self._live.pop(scope)

    # --- connection ---------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any], fetch: bool = True) -> list[Any]:
        with self._lock:
            conn = self._connection()
            try:
                cur = conn.execute(sql, params)
                return cur.fetchall() if fetch else []
            except psycopg.Error:
                self._reset()
                raise

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=True)
        return self._conn

    def _reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


def _wrap_aad(key_id: uuid.UUID, tenant: str, subject: str) -> bytes:
    return b"agent-engine data key\x00" + key_id.bytes + f"{tenant}\x00{subject}".encode()
