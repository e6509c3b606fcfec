"""Memory layers in PostgreSQL: notes an agent saves by key, recalled in later prompts and tool calls.

A note lives in one scope: (tenant, layer, scope key), the scope key being the task id (layer `task`),
the project name (`project`) or "" (`global`: the tenant itself). Every query names the tenant, so one
tenant never sees another's notes. Retention: at most `max_items` notes per scope (saving one more
drops the oldest) and none older than `max_age_days` (never returned; deleted when anything is saved).

Sync API over a small psycopg pool; async callers run it in a thread. Time is PostgreSQL's `now()`,
one clock for every tool-runner and agent-runner.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from agent_engine.contracts.manifest import MemoryLayer
from agent_engine.runtime.settings import env_float, env_int

TABLE = "ae_memory"
MAX_TEXT_BYTES = 8192
"""Per note (UTF-8): a note is a fact to remember, not a document; files are for documents."""
MAX_KEY_CHARS = 200
EXPIRED_PER_SAVE = 500
"""Expired notes deleted per save, so one save never does a long cleanup; later saves do the rest."""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    tenant text NOT NULL,
    layer text NOT NULL,
    scope_key text NOT NULL,
    key text NOT NULL,
    text text NOT NULL,
    task_id text NOT NULL,
    node text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, layer, scope_key, key)
);
CREATE INDEX IF NOT EXISTS {TABLE}_scope_newest ON {TABLE} (tenant, layer, scope_key, updated_at DESC);
CREATE INDEX IF NOT EXISTS {TABLE}_updated ON {TABLE} (updated_at);
"""


class MemoryRefused(ValueError):
    """The call itself is wrong (too large, no project for the project layer, ...): retrying cannot help."""


class MemoryUnavailable(RuntimeError):
    """PostgreSQL could not be reached or failed; another attempt may succeed."""


@dataclass(frozen=True)
class MemoryLimits:
    max_items: int = 200
    """Notes kept per scope; saving beyond it deletes the least recently saved."""
    max_age_days: float = 30.0
    """Notes not saved again for this long are never returned and are deleted."""

    @classmethod
    def from_env(cls) -> MemoryLimits:
        """AE_MEMORY_MAX_ITEMS, AE_MEMORY_MAX_AGE_DAYS; raises ValueError naming a variable that is out of range."""
        limits = cls(env_int("AE_MEMORY_MAX_ITEMS", 200), env_float("AE_MEMORY_MAX_AGE_DAYS", 30.0))
        if limits.max_items < 1:
            raise ValueError(f"AE_MEMORY_MAX_ITEMS={limits.max_items} must be at least 1 (notes kept per scope)")
        if not (math.isfinite(limits.max_age_days) and 0 < limits.max_age_days <= 36500):
            raise ValueError(f"AE_MEMORY_MAX_AGE_DAYS={limits.max_age_days:g} must be a number of days "
                             "greater than 0 and at most 36500")
        return limits

    @property
    def max_age(self) -> timedelta:
        return timedelta(days=self.max_age_days)


@dataclass(frozen=True)
class MemoryScope:
    """Where a note lives within a tenant: a layer and its scope key."""

    layer: MemoryLayer
    key: str

    @classmethod
    def of(cls, layer: MemoryLayer, *, task_id: str, project: str | None) -> MemoryScope:
        """The scope a layer means for a call made in `task_id` of a workflow in `project`."""
        if layer == "task":
            if not task_id:
                raise MemoryRefused("memory layer 'task' needs a task id, and the call has none")
            return cls("task", task_id)
        if layer == "project":
            if not project:
                raise MemoryRefused("memory layer 'project' needs the workflow's project, and the call carries "
                                    "none (the router sets it from the manifest's `project`, else its name)")
            return cls("project", project)
        if layer == "global":
            return cls("global", "")
        raise MemoryRefused(f"unknown memory layer {layer!r}: expected task, project or global")


@dataclass(frozen=True)
class MemoryItem:
    layer: MemoryLayer
    key: str
    text: str
    created_at: datetime
    updated_at: datetime
    task_id: str
    """The task that saved it last, and its node: where a note came from."""
    node: str


@dataclass(frozen=True)
class Saved:
    bytes: int
    replaced: bool
    """The key held a different, unexpired text before."""
    evicted: int
    """Older notes of the scope deleted to stay within max_items."""


class MemoryStore:
    def __init__(self, url: str, limits: MemoryLimits | None = None, *, max_connections: int = 4) -> None:
        if not url:
            raise MemoryRefused("memory needs AE_POSTGRES_URL: no PostgreSQL URL given")
        self.limits = limits or MemoryLimits()
        # min_size=1 and a background connect: a service starts even while PostgreSQL is down, and memory
        # calls then fail (retryably) instead of the whole service; `check` drops connections a restart broke.
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url, min_size=1, max_size=max_connections, open=True, name="memory",
            kwargs={"autocommit": True, "connect_timeout": 5}, check=ConnectionPool.check_connection)
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    def close(self) -> None:
        self.pool.close()

    def save(self, tenant: str, scope: MemoryScope, key: str, text: str, *, task_id: str = "", node: str = "",
             timeout: float = 10.0) -> Saved:
        """Upsert the note `key` of `scope`: saving the same key and text twice leaves what saving it once
        does (only its time moves on, which keeps a note that is still being saved from expiring)."""
        _check_tenant(tenant)
        _check_key(key)
        size = len(text.encode())
        if size > MAX_TEXT_BYTES:
            raise MemoryRefused(f"memory text is {size} bytes (UTF-8), over the {MAX_TEXT_BYTES}-byte limit "
                                "per note; save a shorter note, or write a workspace file and save its path")
        if "\x00" in text:
            raise MemoryRefused("memory text contains a NUL character (\\u0000), which PostgreSQL text cannot hold")
        where = {"tenant": tenant, "layer": scope.layer, "scope": scope.key, "key": key}
        with self._connection(timeout) as conn, conn.transaction():
            # Saves to one scope take turns: the eviction below then sees every note of the scope, and two
            # saves can never deadlock on each other's rows.
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                         (f"{TABLE}\x1f{tenant}\x1f{scope.layer}\x1f{scope.key}",))
            conn.execute(f"DELETE FROM {TABLE} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {TABLE} "
                         "WHERE updated_at < now() - %s LIMIT %s FOR UPDATE SKIP LOCKED))",
                         (self.limits.max_age, EXPIRED_PER_SAVE))  # SKIP LOCKED: never waits on another save
            before = conn.execute(f"SELECT text FROM {TABLE} WHERE tenant = %(tenant)s AND layer = %(layer)s "
                                  "AND scope_key = %(scope)s AND key = %(key)s", where).fetchone()
            conn.execute(
                f"INSERT INTO {TABLE} (tenant, layer, scope_key, key, text, task_id, node, created_at, updated_at) "
                "VALUES (%(tenant)s, %(layer)s, %(scope)s, %(key)s, %(text)s, %(task)s, %(node)s, now(), now()) "
                "ON CONFLICT (tenant, layer, scope_key, key) DO UPDATE SET text = EXCLUDED.text, "
                "task_id = EXCLUDED.task_id, node = EXCLUDED.node, updated_at = EXCLUDED.updated_at",
                {**where, "text": text, "task": task_id, "node": node})
            # The note just saved is kept whatever the timestamps say: it is what the caller asked for.
            evicted = conn.execute(
                f"DELETE FROM {TABLE} WHERE tenant = %(tenant)s AND layer = %(layer)s AND scope_key = %(scope)s "
                f"AND key IN (SELECT key FROM {TABLE} WHERE tenant = %(tenant)s AND layer = %(layer)s "
                "AND scope_key = %(scope)s AND key <> %(key)s ORDER BY updated_at DESC, key OFFSET %(keep)s)",
                {**where, "keep": self.limits.max_items - 1}).rowcount
        return Saved(bytes=size, replaced=before is not None and before[0] != text, evicted=max(evicted, 0))

    def recall(self, tenant: str, scopes: Sequence[MemoryScope], query: str | None = None, limit: int = 50,
               timeout: float = 10.0) -> list[MemoryItem]:
        """The tenant's unexpired notes in `scopes`, newest first, at most `limit`; with `query`, only those
        whose key or text contains it (case-insensitive)."""
        if limit < 1:
            raise MemoryRefused(f"memory recall limit {limit} must be at least 1")
        where, params = self._where(tenant, scopes, query)
        if where is None:
            return []
        with self._connection(timeout) as conn:
            rows = conn.execute(f"SELECT layer, key, text, created_at, updated_at, task_id, node FROM {TABLE} "
                                f"WHERE {where} ORDER BY updated_at DESC, layer, key LIMIT %s",
                                [*params, limit]).fetchall()
        return [MemoryItem(*row) for row in rows]

    def count(self, tenant: str, scopes: Sequence[MemoryScope], query: str | None = None,
              timeout: float = 10.0) -> int:
        """How many notes `recall` would return without a limit."""
        where, params = self._where(tenant, scopes, query)
        if where is None:
            return 0
        with self._connection(timeout) as conn:
            row = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE {where}", params).fetchone()
        return int(row[0]) if row else 0

    def forget(self, tenant: str, task_ids: Sequence[str] | None = None, timeout: float = 60.0) -> int:
        """Delete every note of the tenant, or (with `task_ids`) those those tasks saved last or that are
        scoped to them; then rewrite the table (VACUUM FULL) so no deleted note stays in its files.
        Returns how many notes were deleted. Page: docs/data-lifecycle.md."""
        _check_tenant(tenant)
        with self._connection(timeout) as conn:
            if task_ids is None:
                deleted = conn.execute(f"DELETE FROM {TABLE} WHERE tenant = %s", (tenant,)).rowcount
            else:
                ids = list(task_ids)
                deleted = conn.execute(f"DELETE FROM {TABLE} WHERE tenant = %s AND (task_id = ANY(%s) "
                                       "OR (layer = 'task' AND scope_key = ANY(%s)))", (tenant, ids, ids)).rowcount
            conn.execute(f"VACUUM FULL {TABLE}")
        return max(deleted, 0)

    def _where(self, tenant: str, scopes: Sequence[MemoryScope], query: str | None) -> tuple[str | None, list[Any]]:
        _check_tenant(tenant)
        unique = list(dict.fromkeys(scopes))
        if not unique:
            return None, []
        where = ("tenant = %s AND updated_at >= now() - %s AND ("
                 + " OR ".join(["(layer = %s AND scope_key = %s)"] * len(unique)) + ")")
        params: list[Any] = [tenant, self.limits.max_age, *(v for s in unique for v in (s.layer, s.key))]
        if query:
            # strpos, not LIKE: a query's % and _ are plain characters
            where += " AND (strpos(lower(key), lower(%s)) > 0 OR strpos(lower(text), lower(%s)) > 0)"
            params += [query, query]
        return where, params

    @contextmanager
    def _connection(self, timeout: float) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection with the table in place; connection trouble becomes MemoryUnavailable."""
        try:
            with self.pool.connection(timeout=max(timeout, 0.1)) as conn:
                self._ensure_schema(conn)
                yield conn
        except PoolTimeout:
            raise MemoryUnavailable(f"memory: no PostgreSQL connection within {timeout:.2g}s "
                                    "(is the server at AE_POSTGRES_URL up?)") from None
        except psycopg.OperationalError as exc:
            raise MemoryUnavailable(f"memory: PostgreSQL failed: {exc}") from None

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            # CREATE ... IF NOT EXISTS races with itself across processes; an advisory lock makes them take turns.
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{TABLE} schema",))
                conn.execute(SCHEMA)
            self._schema_ready = True


def _check_tenant(tenant: str) -> None:
    if not tenant:
        raise MemoryRefused("memory needs a tenant, and the call has none")


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_CHARS:
        raise MemoryRefused(f"memory key must be 1 to {MAX_KEY_CHARS} characters, got {len(key)}")
    if "\x00" in key:
        raise MemoryRefused("memory key contains a NUL character (\\u0000), which PostgreSQL text cannot hold")
