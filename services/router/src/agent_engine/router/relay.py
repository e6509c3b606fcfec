"""The outbox relay: publish what this router committed, in commit order, and nothing else.

Records the router just committed are offered here with their notification ids, so the steady state reads
nothing back from PostgreSQL and publishes only its own commits: with several routers, each publishes what it
committed (another router's ids are gaps here, not holes to fill). The notification log is read (and everything
in it published, JetStream's duplicate window and every consumer's idempotency absorbing the copies) only at
start, after an error or an erasure, and after a failed save, whose records may be committed all the same (then
once no insert is in flight: `TaskStore.settled_end`).

The saved position, with the router's member id (the key of its member lock, partitions.py), says: every record
this router committed up to it is published. It is saved at most every 0.2 s and at stop (with no member then,
unless a save was still in flight: nothing is left to publish). When a router dies, its row's member is no longer
alive, and another router's follower (follower.py) publishes the log from that position on: what the dead router
committed and never published goes out within seconds. An idle relay moves its position up to the log's end as the
follower reads it, so that tail stays short.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable

from nats.errors import MaxPayloadError

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.subjects import dlq_subject
from agent_engine.router.core import INPUT_RECORD
from agent_engine.router.store import STORE_TRANSIENT, TaskStore
from agent_engine.runtime.bus import MSG_ID, Bus
from agent_engine.runtime.inbox import describe, transient

log = logging.getLogger("router")
NAME = "relay"
PAGE = 256


class Relay:
    def __init__(self, bus: Bus, store: TaskStore, name: str = NAME,
                 observe: Callable[[Envelope], None] | None = None,
                 under: Callable[[Envelope], str | None] | None = None,
                 member: Callable[[], int | None] = lambda: None) -> None:
        self.bus = bus
        self.store = store
        self.name = name
        """Key of the saved position: each router process keeps its own."""
        self.under = under
        """The trace context to publish a record under when not its own (a fork's: traces.ForkTraces)."""
        self.observe = observe
        """Told of every record read back from the log (at start and after a failed save)."""
        self.member = member
        """This router's member id, saved with the position: while it is alive, nobody else publishes its tail."""
        self.handoff: deque[tuple[int, Envelope | None]] = deque()
        self.wake = asyncio.Event()
        self.position = self.saved = 0
        self.saved_member: int | None = None
        self.in_sync = False
        """True once the log has been read to its end: from then on, what is offered is all there is to publish."""
        self.last_save = time.monotonic()
        self.committed = 0
        """The last notification id this process committed: at stop, published before the process exits."""
        self.saving = 0
        """Saves in flight (`begin` to `offer` or `failed`): while any is, the position is not moved past the
        offered records, which could leave one of this router's commits behind it unpublished."""
        self.log_end = 0
        """The highest notification id known committed (the follower's reading): an idle relay moves up to it."""
        self.unsettled = False
        """A save failed: before the log is read again, wait for any insert in flight to end."""

    def begin(self) -> None:
        """A save is about to be made: its records are offered (or `failed` called) when it ends."""
        self.saving += 1

    def offer(self, committed: list[tuple[int, Envelope]]) -> None:
        self.saving = max(0, self.saving - 1)
        self.handoff.extend(committed)
        if committed:
            self.committed = max(self.committed, committed[-1][0])
        self.wake.set()

    def failed(self) -> None:
        """The save in flight failed: its records may be committed all the same, so the log is read again, once
        any insert still in flight has ended (its transaction may outlive the error)."""
        self.saving = max(0, self.saving - 1)
        self.unsettled = True
        self.resync()

    def settled(self, saving: asyncio.Future[list[tuple[int, Envelope]]]) -> None:
        """A save whose caller was cancelled has ended in its thread: offer its records, or read the log again."""
        if saving.cancelled() or saving.exception() is not None:
            self.failed()
        else:
            self.offer(saving.result())

    def resync(self) -> None:
        """Read the log again (and publish what is in it) before going on with what is offered."""
        self.in_sync = False
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop`, then make a last pass over what this process committed. The saved position is
        read inside the retry loop: a store that is away at start delays the relay, never ends it."""
        started = drained = False
        try:
            while True:
                try:
                    if not started:
                        self.position = self.saved = await asyncio.to_thread(self.store.relay_position, self.name)
                        started = True
                    if stop.is_set():
                        break
                    await self.step()
                except Exception as exc:
                    if transient(exc, STORE_TRANSIENT):  # NATS or PostgreSQL away (a stream between leaders): expected
                        log.warning("relay paused at position %d (%s); retrying", self.position, describe(exc))
                    else:
                        log.exception("relay failed at position %d; retrying", self.position)
                    self.in_sync = False
                    if stop.is_set():
                        break
                    await asyncio.sleep(1.0)
            drained = await self._last_pass() if started else False
        finally:
            if started and (self.position != self.saved or self.saved_member is not None):
                try:  # drained: no member, so no other router reads this one's (empty) tail
                    await asyncio.to_thread(self.store.set_relay_position, self.name, self.position,
                                            None if drained else self.member())
                    self.saved = self.position
                except Exception:  # noqa: BLE001  the next start republishes a little; consumers absorb it
                    log.warning("could not save the relay position %d on stop", self.position)

    async def _last_pass(self) -> bool:
        """At stop (no input is applied any more): publish up to the last record this process committed, so
        a drained router leaves nothing of its own for the next start to publish. Returns whether it did; given up,
        with a warning, when the bus or the store is away."""
        try:
            if self.unsettled:  # a failed save's records, if committed, may lie past the last offered: read to the end
                self.committed = max(self.committed, await asyncio.to_thread(self.store.settled_end))
                self.unsettled = self.in_sync = False
            while self.position < self.committed:
                if self.in_sync:
                    page = [(n, r) for n, r in self._from_handoff() if n <= self.committed]
                else:
                    page = await asyncio.to_thread(self.store.notifications, self.position, PAGE)
                    page = [(n, r) for n, r in page if n <= self.committed]
                    self._observe(page)
                if not page:
                    break
                await self._publish([r for _, r in page if r is not None and r.type != INPUT_RECORD])
                self.position = page[-1][0]
            return not self.saving  # a save still in its thread: its records are another router's to publish
        except Exception as exc:  # noqa: BLE001  the next start (or another router) publishes the rest
            log.warning("stopping with records up to %d not yet published (%s); they go out at the next start",
                        self.committed, exc)
            return False

    async def step(self) -> None:
        if self.in_sync:
            page = self._from_handoff()
        else:
            if self.unsettled:
                await asyncio.to_thread(self.store.settled_end)
                self.unsettled = False
            page = await asyncio.to_thread(self.store.notifications, self.position, PAGE)
            self.in_sync = not page
            self._observe(page)
        if page:  # an erased record (None) is passed over: it is gone for good, never retried
            await self._publish([r for _, r in page if r is not None and r.type != INPUT_RECORD])
            self.position = page[-1][0]
        elif self.in_sync and not self.saving and not self.handoff and self.log_end > self.position:
            self.position = self.log_end  # idle, nothing of ours in flight: all of ours up to the log's end is out
        member = self.member()
        if (self.position != self.saved or member != self.saved_member) and (
                not page or time.monotonic() - self.last_save > 0.2):
            await asyncio.to_thread(self.store.set_relay_position, self.name, self.position, member)
            self.saved, self.saved_member, self.last_save = self.position, member, time.monotonic()
        if not page:
            self.wake.clear()
            if not self.handoff:
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=0.25)
                except TimeoutError:
                    pass

    def _observe(self, page: list[tuple[int, Envelope | None]]) -> None:
        if self.observe is not None:
            for _, record in page:
                if record is not None:
                    self.observe(record)

    def _from_handoff(self) -> list[tuple[int, Envelope | None]]:
        """The offered records after `position`, in commit order (another router's ids in between are theirs)."""
        while self.handoff and self.handoff[0][0] <= self.position:
            self.handoff.popleft()
        page: list[tuple[int, Envelope | None]] = []
        while self.handoff and len(page) < PAGE:
            page.append(self.handoff.popleft())
        return page

    async def publish_log(self, after: int, through: int, stop: asyncio.Event | None = None) -> int:
        """Publish every record of the log after `after` up to `through` (a dead router's tail: follower.py), until
        `stop`. Returns the last id read."""
        while after < through and not (stop is not None and stop.is_set()):
            page = [(n, r) for n, r in await asyncio.to_thread(self.store.notifications, after, PAGE) if n <= through]
            if not page:
                return through  # ids never committed (rolled back) up to the end
            await self._publish([r for _, r in page if r is not None and r.type != INPUT_RECORD])
            after = page[-1][0]
        return after

    async def _publish_one(self, record: Envelope) -> None:
        under = self.under(record) if self.under is not None else None
        await (self.bus.publish(record, under=under) if under else self.bus.publish(record))

    async def _publish(self, records: list[Envelope]) -> None:
        """Publish a page; a record too large for the bus is dead-lettered as a stub, never retried forever."""
        results = await asyncio.gather(*(self._publish_one(r) for r in records), return_exceptions=True)
        for record, outcome in zip(records, results, strict=True):
            if isinstance(outcome, MaxPayloadError):
                stub = {"id": record.id, "type": record.type, "task_id": record.task_id, "tenant": record.tenant,
                        "bytes": len(record.to_bytes()), "error": "record exceeds the NATS max_payload"}
                await self.bus.js.publish(dlq_subject("router", record.tenant), json.dumps(stub).encode(),
                                          headers={MSG_ID: f"{record.id}:too-large"})
                log.error("record %s (%s) of task %s is too large to publish; dead-lettered a stub",
                          record.id, record.type, record.task_id)
            elif isinstance(outcome, BaseException):
                raise outcome
