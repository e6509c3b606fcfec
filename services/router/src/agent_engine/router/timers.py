"""The router's timers, outside the pure core: deadlines and scheduled retries fire as inputs, and runner
heartbeats move a running dispatch's deadline. Timers wait until the router has read every result stored
before their time, so a result already queued settles its node first."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg

from agent_engine.contracts.envelope import Envelope
from agent_engine.router import openwork
from agent_engine.router.datakeys import KeyDestroyed
from agent_engine.router.deadlines import DeadlineIndex
from agent_engine.router.store import TaskStore
from agent_engine.router.tasks import TaskCache

log = logging.getLogger("router")
Apply = Callable[[list[Envelope]], Awaitable[dict[str, str]]]


class Progress:
    """How far the router has read its consumers (each consume loop keeps its own up to date)."""

    def __init__(self) -> None:
        self.consumers: dict[str, tuple[int | None, datetime | None]] = {}

    def saw(self, pending: int, stamp: datetime | None, consumer: str = "router") -> None:
        """A fetch from `consumer`: `pending` messages wait behind it; `stamp`, the stream time of one it read."""
        _, through = self.consumers.get(consumer, (None, None))
        if stamp is not None and (through is None or stamp > through):
            through = stamp
        self.consumers[consumer] = (pending, through)

    def forget(self, consumer: str) -> None:
        """A consumer this router no longer reads (a partition it gave up)."""
        self.consumers.pop(consumer, None)

    @property
    def backlog(self) -> int | None:
        """Messages waiting behind the last ones fetched, over every consumer (0: caught up; None: a consumer
        has not fetched yet)."""
        pendings = [pending for pending, _ in self.consumers.values()]
        return None if not pendings or None in pendings else sum(p for p in pendings if p is not None)

    @property
    def read_through(self) -> datetime | None:
        """Stream time every consumer has read up to: every input stored before it has been read."""
        stamps = [through for _, through in self.consumers.values()]
        return None if not stamps or None in stamps else min(s for s in stamps if s is not None)


class Timers:
    def __init__(self, deadlines: DeadlineIndex, tasks: TaskCache, apply: Apply, progress: Progress,
                 heartbeat_s: float, name: str = "router", read_through: Callable[[], int] = lambda: 0,
                 owns: Callable[[str], bool] = lambda _: True) -> None:
        self.deadlines = deadlines
        self.tasks = tasks
        self.apply = apply
        self.progress = progress
        self.heartbeat_s = heartbeat_s
        self.name = name
        self.read_through = read_through
        """The notification id the index has observed every record up to (the follower's position, follower.py)."""
        self.owns = owns
        """Whether a task is this router's (its partition is owned here): only those tasks' timers fire here."""
        self.checkpointed = time.monotonic()

    def rebuild(self, store: TaskStore) -> int:
        """The index at start: the latest checkpoint of open work, then the records after it (openwork.py).
        Returns the notification id read through: the relay must not start past it, or records committed in
        between by other routers would never reach this index."""
        position, rows = openwork.latest(store.url)
        openwork.restore(self.deadlines, rows)
        count, through = 0, position
        while page := store.notifications(through, 1000):
            through = page[-1][0]
            for _, record in page:
                if record is not None:
                    self.deadlines.observe(record)
                    count += 1
        log.info("open work from the checkpoint at %d (%d entries) and %d records after it; %d open dispatches",
                 position, len(rows), count, len(self.deadlines.open))
        if through > position:
            # at once, not CHECKPOINT_S from now: a router killed sooner after each start would otherwise read the
            # same tail again at every start, and a longer one each time (seen in `make soak`)
            try:
                openwork.save(store.url, self.name, through, openwork.entries(self.deadlines))
            except Exception as exc:  # noqa: BLE001  the next start reads the tail again, as before
                log.warning("open work not checkpointed at start (%s)", exc)
        return through

    async def checkpoint(self, store: TaskStore) -> None:
        """Save the index with the position it has read through (a failure only makes the next start read more).
        The rows are made here, on the event loop that changes the index, not in the worker thread."""
        self.checkpointed = time.monotonic()
        rows, position = openwork.entries(self.deadlines), self.read_through()
        try:
            await asyncio.to_thread(openwork.save, store.url, self.name, position, rows)
        except Exception as exc:  # noqa: BLE001  PostgreSQL away: the next checkpoint, or the start, reads more
            log.warning("open work not checkpointed (%s)", exc)

    async def heartbeat(self, msg: Msg) -> None:
        """A runner's note that a dispatch is still running, on `aehb.<tenant>`: a hint, never a record, so
        one that cannot be read is only logged."""
        try:
            beat = json.loads(msg.data)
            self.deadlines.heartbeat(msg.subject.split(".", 1)[-1], str(beat["task_id"]), str(beat["node"]),
                                     str(beat["dispatch_id"]), datetime.now(UTC))
        except (ValueError, KeyError, TypeError, RecursionError):
            log.warning("ignored a malformed heartbeat on %s", msg.subject)

    async def run(self, stop: asyncio.Event) -> None:
        # after a start, give running calls one heartbeat window to say they are alive
        grace_until = datetime.now(UTC) + timedelta(seconds=2 * self.heartbeat_s)
        while not stop.is_set():
            await asyncio.sleep(0.5)
            if time.monotonic() - self.checkpointed > openwork.CHECKPOINT_S:
                await self.checkpoint(self.tasks.store)
            now = datetime.now(UTC)
            if now < grace_until:
                continue
            due = self.deadlines.expired(now, caught_up=self.progress.backlog == 0,
                                         read_through=self.progress.read_through, mine=self.owns)
            for event in due:  # one at a time: a task that cannot be saved must not hold up the others
                await self._fire(event)
            if due:
                log.info("deadline passed for %d dispatch(es)", len(due))

    async def _fire(self, event: Envelope) -> None:
        node = event.data["node"]
        try:
            refused = await self.apply([event])
        except KeyDestroyed:  # the task was erased: nothing of it runs again
            self.deadlines.drop(event.task_id)
            self.tasks.drop(event.task_id)
            return
        except Exception:
            log.exception("deadline of task %s node %s failed; will retry", event.task_id, node)
            return
        self.deadlines.fired(event.task_id, node)  # a woken retry: given once, whatever it recorded
        if refused:  # the task cannot take it (a bug, or a forged record): stop firing it
            log.error("deadline of task %s node %s refused: %s", event.task_id, node, refused[event.id])
            self.deadlines.open.pop((event.task_id, node), None)
            return
        state = self.tasks.cached(event.task_id)  # an entry the state no longer has was stale: drop it
        if state is not None:
            self.deadlines.sync(state)
