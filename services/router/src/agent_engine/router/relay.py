"""The outbox relay: publish what the store committed, in commit order, and nothing else.

Records the router just committed are offered here with their notification ids, so the steady
state reads nothing back from PostgreSQL. The notification log itself is read at start, on a gap
in the ids, after a failed save (whose records may be committed all the same), after an error, and
at least once a second. The position is saved at most every 0.2 s and on stop: a crash republishes
at most that much, which JetStream's duplicate window and every consumer's idempotency absorb.
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
                 under: Callable[[Envelope], str | None] | None = None) -> None:
        self.bus = bus
        self.store = store
        self.name = name
        self.under = under
        """The trace context to publish a record under when not its own (a fork's: traces.ForkTraces)."""
        self.observe = observe
        """Told of every record read back from the log, including other routers' (their dispatches'
        deadlines then live here too, so a router that dies does not take them with it)."""
        """Key of the saved position: each router process keeps its own (they all publish every record;
        JetStream drops the copies by Nats-Msg-Id)."""
        self.handoff: deque[tuple[int, Envelope | None]] = deque()
        self.wake = asyncio.Event()
        self.position = self.saved = 0
        self.in_sync = False
        """True while the handoff is known to hold everything after `position`."""
        self.last_save = self.last_read = time.monotonic()
        self.committed = 0
        self.start_by: int | None = None
        """At most where to start (the router's start read the log through here): another router's relay may have
        saved a position past it, and the records in between must still reach `observe`."""
        """The last notification id this process committed: at stop, published before the process exits."""

    def offer(self, committed: list[tuple[int, Envelope]]) -> None:
        self.handoff.extend(committed)
        if committed:
            self.committed = max(self.committed, committed[-1][0])
        self.wake.set()

    def resync(self) -> None:
        self.in_sync = False
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop`, then make a last pass over what this process committed. The saved position is
        read inside the retry loop: a store that is away at start delays the relay, never ends it."""
        started = False
        try:
            while True:
                try:
                    if not started:
                        saved = await asyncio.to_thread(self.store.relay_position, self.name)
                        self.position = self.saved = min(saved, self.start_by) if self.start_by is not None else saved
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
            if started:
                await self._last_pass()
        finally:
            if started and self.position != self.saved:
                try:
                    await asyncio.to_thread(self.store.set_relay_position, self.name, self.position)
                    self.saved = self.position
                except Exception:  # noqa: BLE001  the next start republishes a little; consumers absorb it
                    log.warning("could not save the relay position %d on stop", self.position)

    async def _last_pass(self) -> None:
        """At stop (no input is applied any more): publish up to the last record this process committed, so
        a drained router leaves nothing of its own for the next start to publish. Other routers' records past
        it are theirs to publish. Given up, with a warning, when the bus or the store is away."""
        try:
            while self.position < self.committed:
                page = await asyncio.to_thread(self.store.notifications, self.position, PAGE)
                page = [(n, r) for n, r in page if n <= self.committed]
                if not page:
                    break
                if self.observe is not None:  # other routers' records among them: the index follows them too
                    for _, record in page:
                        if record is not None:
                            self.observe(record)
                await self._publish([r for _, r in page if r is not None and r.type != INPUT_RECORD])
                self.position = page[-1][0]
        except Exception as exc:  # noqa: BLE001  the next start (or another router) publishes the rest
            log.warning("stopping with records up to %d not yet published (%s); they go out at the next start",
                        self.committed, exc)

    async def step(self) -> None:
        if time.monotonic() - self.last_read > 1.0:
            self.in_sync = False
        page = self._from_handoff() if self.in_sync else None
        if page is None:
            page = await asyncio.to_thread(self.store.notifications, self.position, PAGE)
            self.in_sync, self.last_read = not page, time.monotonic()
            if self.observe is not None:
                for _, record in page:
                    if record is not None:
                        self.observe(record)
        if page:  # an erased record (None) is passed over: it is gone for good, never retried
            await self._publish([r for _, r in page if r is not None and r.type != INPUT_RECORD])
            self.position = page[-1][0]
            while self.handoff and self.handoff[0][0] <= self.position:
                self.handoff.popleft()
        if self.position != self.saved and (not page or time.monotonic() - self.last_save > 0.2):
            await asyncio.to_thread(self.store.set_relay_position, self.name, self.position)
            self.saved, self.last_save = self.position, time.monotonic()
        if not page:
            self.wake.clear()
            if not self.handoff:
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=0.25)
                except TimeoutError:
                    pass

    def _from_handoff(self) -> list[tuple[int, Envelope | None]] | None:
        """The offered records right after `position`; None when there is a gap to read from the log."""
        while self.handoff and self.handoff[0][0] <= self.position:
            self.handoff.popleft()
        if not self.handoff:
            return []
        if self.handoff[0][0] != self.position + 1:
            return None
        page: list[tuple[int, Envelope | None]] = []
        expected = self.position + 1
        while self.handoff and len(page) < PAGE and self.handoff[0][0] == expected:
            page.append(self.handoff.popleft())
            expected += 1
        return page

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
