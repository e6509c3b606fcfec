"""Which router partitions this router owns: PostgreSQL session advisory locks on a connection of its own.

Every router holds a member lock (keyed by its member id, drawn at random once per process), so the routers alive
are the member locks granted; each wants its fair share of the partition locks (PARTITIONS / routers; the first
few by member id one more when it does not divide). A router that dies loses its connection and with it its locks,
and the others take its partitions at their next look (`CHECK_S`); a router that joins makes the others' fair
share smaller, and they give up the excess, which it then takes. Ownership only steers inputs: a task's
records are still guarded by the store's optimistic concurrency, so two routers that both believe they own a
partition for a moment conflict and retry, never corrupt (docs/scaling.md).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

import psycopg

from agent_engine.contracts.subjects import PARTITIONS

log = logging.getLogger("router")

MEMBER_LOCK = 0x41455200
"""The first key of a router's member lock ("AER\\0"); the second is its member id (`new_member`)."""
PARTITION_LOCK = 0x41455201
"""The first key of a partition's lock; the second is the partition."""
CHECK_S = 1.0
"""How often a router looks at who is alive and what is free."""

SESSION_OPTIONS = ("-c statement_timeout=5000 -c idle_session_timeout=0 -c tcp_keepalives_idle=5 "
                   "-c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 -c tcp_user_timeout=10000")
"""The server gives up a router it cannot reach within about 10 s (its locks go with the session): a router
whose node left the network sends no FIN, and the server's default keepalive would hold its partitions for
two hours."""
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
              "tcp_user_timeout": 10000}
"""The same on the router's side: a look on a dead connection fails within about 10 s instead of 15 minutes."""


def new_member() -> int:
    """A member id: random, positive, within PostgreSQL's int4 (an advisory lock's key)."""
    return secrets.randbelow(2**31 - 2) + 1


_HELD = """SELECT pid, objid::bigint FROM pg_locks
           WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = %s::oid
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""


def holders(url: str) -> dict[int, list[int]]:
    """Who owns what, as the server sees it: the partitions each PostgreSQL backend (one per router) holds."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(_HELD, (PARTITION_LOCK,)).fetchall()
    held: dict[int, list[int]] = {}
    for pid, partition in rows:
        held.setdefault(pid, []).append(partition)
    return {pid: sorted(parts) for pid, parts in held.items()}


@dataclass(frozen=True)
class Change:
    """What one look decided: partitions just taken, and partitions to give up (once their inputs in hand are
    settled, `release` unlocks them)."""

    taken: frozenset[int] = frozenset()
    to_release: frozenset[int] = frozenset()


class Ownership:
    def __init__(self, url: str, partitions: int = PARTITIONS) -> None:
        self.url = url
        self.partitions = partitions
        self.owned: set[int] = set()
        self.conn: psycopg.Connection | None = None
        self.member = new_member()
        """This router's member id, drawn once per process and kept over reconnections (a backend pid would be
        reused after a PostgreSQL restart): the second key of its member lock, its rank among the routers, and
        what its relay saves with its position; other routers publish that relay's tail once no member lock holds
        the id (follower.py)."""

    def owns(self, partition: int) -> bool:
        return partition in self.owned

    def look(self) -> Change:
        """Take free partitions up to this router's fair share, or name the ones over it. Raises when
        PostgreSQL cannot be asked: the caller must then `lose` everything (the locks may be gone)."""
        conn = self._connect()
        members = sorted(member for _, member in conn.execute(_HELD, (MEMBER_LOCK,)).fetchall())
        rank = members.index(self.member)
        fair = self.partitions // len(members) + (rank < self.partitions % len(members))
        order = self._preference(rank, len(members))
        if len(self.owned) > fair:
            keep = [p for p in order if p in self.owned][:fair]
            return Change(to_release=frozenset(self.owned - set(keep)))
        held = {partition for _, partition in conn.execute(_HELD, (PARTITION_LOCK,)).fetchall()}
        taken: set[int] = set()
        for partition in order:
            if len(self.owned) + len(taken) >= fair:
                break
            if partition in self.owned or partition in held:
                continue
            if conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (PARTITION_LOCK, partition)).fetchone() == (True,):
                taken.add(partition)
        self.owned |= taken
        return Change(taken=frozenset(taken))

    def release(self, partitions: frozenset[int]) -> None:
        """Unlock partitions whose inputs in hand are settled (best effort: a lost connection frees them all)."""
        self.owned -= partitions
        try:
            conn = self._connect()
            for partition in sorted(partitions):
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (PARTITION_LOCK, partition))
        except psycopg.Error as exc:
            log.warning("could not unlock partitions %s (%s); the connection is closed, which frees them",
                        sorted(partitions), exc)
            self.lose()

    def lose(self) -> frozenset[int]:
        """Forget every partition and close the connection (its locks go with it). Returns what was owned."""
        owned, self.owned = frozenset(self.owned), set()
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
            self.conn = None
        return owned

    def _connect(self) -> psycopg.Connection:
        if self.conn is not None and not self.conn.closed:
            return self.conn
        self.owned.clear()  # a new session holds no lock
        conn = psycopg.connect(psycopg.conninfo.make_conninfo(self.url, connect_timeout=5, options=SESSION_OPTIONS,
                                                              **KEEPALIVES), autocommit=True)
        while conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (MEMBER_LOCK, self.member)).fetchone() != (True,):
            self.member = new_member()  # another router drew the same (one chance in a billion)
        self.conn = conn
        return conn

    def _preference(self, rank: int, members: int) -> list[int]:
        """The partitions in the order this router prefers them: its own stretch first (the one the rank'th of
        `members` routers would have in an even split), so routers starting together rarely contend."""
        start = (rank * self.partitions) // members
        return [(start + i) % self.partitions for i in range(self.partitions)]
