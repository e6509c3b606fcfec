"""What a router reads of the other routers' commits, off the publishing path: their records reach this router's
deadline index (so a dispatch of a router that dies keeps its deadline here, and a settlement another router
committed wakes a node waiting for day-budget room here), and a dead router's unpublished tail is published.

Each relay publishes only what its own router committed (relay.py). The follower reads the notification log behind
it, every FOLLOW_S, skipping (without fetching) the records this router committed itself, which the index saw at
commit. Every ADOPT_S, in a loop of its own, it looks for relay positions whose member id no member lock holds
(partitions.py): that router died with records it may not have published. The follower waits until no insert is in
flight (the dead router's last commit may still be under way), publishes the log from that position to its end
(copies of what was published are dropped by JetStream's duplicate window or absorbed by every consumer's
idempotency) and marks the row drained, if nobody changed it meanwhile (the router back, or another router's
follower that got there first).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import psycopg

from agent_engine.contracts.envelope import Envelope
from agent_engine.router.partitions import MEMBER_LOCK
from agent_engine.router.relay import Relay
from agent_engine.router.store import STORE_TRANSIENT, TaskStore
from agent_engine.runtime.inbox import describe, transient

log = logging.getLogger("router")
FOLLOW_S = 0.5
ADOPT_S = 2.0
PAGE = 1000

_ORPHANS = """SELECT name, position, member FROM router_relay_position r
              WHERE member IS NOT NULL AND name <> %s AND NOT EXISTS (
                SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2
                  AND classid = %s::oid AND objid::bigint = r.member
                  AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"""


def orphans(url: str, me: str) -> list[tuple[str, int, int]]:
    """Relay positions of routers that died (their member lock is gone) before they had drained: (name, position,
    member)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return [(str(n), int(p), int(m)) for n, p, m in conn.execute(_ORPHANS, (me, MEMBER_LOCK)).fetchall()]


def drained(url: str, name: str, member: int, was: int, through: int) -> bool:
    """Mark a dead router's relay drained through `through`, unless its row changed since it was read at `was`."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        done = conn.execute("UPDATE router_relay_position SET position = %s, member = NULL "
                            "WHERE name = %s AND member = %s AND position = %s", (through, name, member, was))
        return done.rowcount == 1


class Follower:
    def __init__(self, store: TaskStore, relay: Relay, observe: Callable[[Envelope], None]) -> None:
        self.store = store
        self.relay = relay
        self.observe = observe
        self.position = 0
        """Every record up to this notification id has reached the index (this router's own at commit)."""
        self.mine: set[int] = set()
        """Ids this router committed after `position`: not read again."""

    def committed(self, committed: list[tuple[int, Envelope]]) -> None:
        self.mine.update(n for n, _ in committed if n > self.position)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the log and adopt dead routers' tails, each in its own loop (a long tail to publish does not hold
        up the index), until `stop`."""
        await asyncio.gather(self._every(FOLLOW_S, self._follow, stop), self._every(ADOPT_S, self.adopt, stop))

    async def _follow(self, stop: asyncio.Event) -> None:
        while await self.step() and not stop.is_set():  # a full page: more to read at once
            pass

    async def _every(self, seconds: float, work: Callable[[asyncio.Event], Awaitable[None]],
                     stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await work(stop)
            except Exception as exc:
                if transient(exc, STORE_TRANSIENT):
                    log.warning("follower paused at %d (%s); retrying", self.position, describe(exc))
                else:
                    log.exception("follower failed at %d; retrying", self.position)
            try:
                await asyncio.wait_for(stop.wait(), seconds)
            except TimeoutError:
                pass

    async def step(self) -> bool:
        """Read one page of the log; returns whether there may be more at once."""
        before = self.position
        through, records = await asyncio.to_thread(self.store.others, before, PAGE, frozenset(self.mine))
        for record in records:
            self.observe(record)
        if through > before:
            self.position = through
            self.mine = {n for n in self.mine if n > through}
            self.relay.log_end = max(self.relay.log_end, through)
        return through - before >= PAGE

    async def adopt(self, stop: asyncio.Event | None = None) -> None:
        """Publish the unpublished tails of routers that died. The log's end is read once no insert is in flight: a
        router killed mid-commit may still have one, whose records must not land past the tail published."""
        dead = await asyncio.to_thread(orphans, self.store.url, self.relay.name)
        if not dead:
            return
        end = await asyncio.to_thread(self.store.settled_end)
        for name, position, member in dead:
            through = await self.relay.publish_log(position, end, stop)
            if through < end:
                return  # stopping: the row stays as it was, for another router or the next look
            if await asyncio.to_thread(drained, self.store.url, name, member, position, through):
                log.info("published the tail of router relay %s (dead): records %d to %d", name, position, through)
