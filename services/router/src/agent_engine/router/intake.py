"""The router's inputs: a shared consumer every router reads (clients' requests, and inputs sent without a
partition), and one durable consumer per partition this router owns. What they fetch is merged into one batch,
so one transaction still serves inputs of every partition (docs/scaling.md).

A partition's consumer is its own durable (`router-p<n>`, `partition_durable`): when a partition changes
hands, its new owner binds the same consumer and goes on from where the last owner's acks left it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg

from agent_engine.contracts.subjects import (
    COMMAND_SENDERS,
    PARTITIONED,
    consume_subjects,
    partition_durable,
    partition_subject,
    type_subject,
)
from agent_engine.router.partitions import CHECK_S, Ownership
from agent_engine.router.timers import Progress
from agent_engine.runtime.bus import FETCH_S, Bus

log = logging.getLogger("router")
SHARED = "router"
"""The shared consumer's durable name (the router's only consumer before partitions, so it keeps its place)."""


def shared_subjects(inputs: tuple[str, ...]) -> list[str]:
    """Clients' requests (with and without their sender), and partitioned inputs sent bare."""
    return ([s for t in inputs if t in COMMAND_SENDERS for s in consume_subjects(t)]
            + [type_subject(t) for t in inputs if t in PARTITIONED])


def partition_subjects(partition: int) -> list[str]:
    return [partition_subject(t, "*", partition) for t in sorted(PARTITIONED)]


@dataclass
class _Fetched:
    msgs: list[Msg]
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Intake:
    def __init__(self, bus: Bus, handle: Callable[[list[Msg]], Awaitable[None]], inputs: tuple[str, ...], *,
                 batch: int, ack_wait: float, progress: Progress, ownership: Ownership,
                 on_taken: Callable[[frozenset[int]], None] = lambda _: None) -> None:
        self.bus = bus
        self.handle = handle
        self.inputs = inputs
        self.batch = batch
        self.ack_wait = ack_wait
        self.progress = progress
        self.ownership = ownership
        self.on_taken = on_taken
        """Called with partitions just taken, before their consumers start (the router drops what it cached of
        their tasks: another router may have moved them on)."""
        self.queue: asyncio.Queue[_Fetched] = asyncio.Queue()
        self.consumers: dict[int, tuple[asyncio.Event, asyncio.Task[None]]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        applying = asyncio.create_task(self._apply())
        shared = asyncio.create_task(self._consume(SHARED, shared_subjects(self.inputs), stop))
        try:
            await self._own(stop)
            # every consumer finishes the batch in hand (the applier still running), then the applier stops
            await asyncio.gather(*(task for _, task in self.consumers.values()), shared, return_exceptions=True)
        except asyncio.CancelledError:  # the grace period ran out: hand back what is in hand, at once
            for task in [shared, *(task for _, task in self.consumers.values())]:
                task.cancel()
            raise
        finally:
            applying.cancel()
            owned = self.ownership.lose()
            if owned:
                log.info("router gave up partitions %s", sorted(owned))

    async def _own(self, stop: asyncio.Event) -> None:
        """Look at who is alive every CHECK_S: take free partitions up to a fair share, give up the excess; then
        make the consumers match what is owned (whatever the look, a release or a lost connection left)."""
        while not stop.is_set():
            try:
                change = await asyncio.to_thread(self.ownership.look)
            except Exception as exc:  # noqa: BLE001  PostgreSQL away: the locks may be gone with the connection
                log.warning("cannot check partition ownership (%s); stopping all partition consumers", exc)
                await self._stop(frozenset(self.consumers))
                await asyncio.to_thread(self.ownership.lose)
            else:
                if change.to_release:
                    await self._stop(change.to_release)
                    await asyncio.to_thread(self.ownership.release, change.to_release)
                    log.info("router gave up partitions %s", sorted(change.to_release))
            await self._follow()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CHECK_S)
        for event, _ in self.consumers.values():
            event.set()

    async def _follow(self) -> None:
        """Consumers for exactly the partitions owned: stop those of partitions no longer owned (a release that
        failed loses them all), start those of partitions taken, and start again one whose loop ended."""
        owned = set(self.ownership.owned)
        for partition, (_, task) in list(self.consumers.items()):
            if partition in owned and task.done():
                log.error("the consumer of partition %d stopped (%s); starting it again", partition,
                          "cancelled" if task.cancelled() else task.exception())
                del self.consumers[partition]
        stray = frozenset(set(self.consumers) - owned)
        if stray:
            await self._stop(stray)
            log.warning("router stopped reading partitions %s, which it no longer owns", sorted(stray))
        taken = frozenset(owned - set(self.consumers))
        if taken:
            self.on_taken(taken)
            for partition in sorted(taken):
                self._start(partition)
            log.info("router took partitions %s (owns %s)", sorted(taken), sorted(owned))

    def _start(self, partition: int) -> None:
        """A partition's consume loop, until its own event is set (`_stop`, or `_own` when the router stops)."""
        mine = asyncio.Event()
        task = asyncio.create_task(self._consume(partition_durable(partition), partition_subjects(partition), mine))
        self.consumers[partition] = (mine, task)

    async def _stop(self, partitions: frozenset[int]) -> None:
        """Stop the partitions' consumers; returns once the inputs they had in hand are settled."""
        stopping = [self.consumers.pop(p) for p in partitions if p in self.consumers]
        for event, _ in stopping:
            event.set()
        await asyncio.gather(*(task for _, task in stopping), return_exceptions=True)
        for partition in partitions:
            self.progress.forget(partition_durable(partition))

    async def _consume(self, name: str, subjects: list[str], stop: asyncio.Event) -> None:
        async def fetched(msgs: list[Msg]) -> None:
            for msg in msgs:
                if msg.metadata is not None:
                    self.progress.saw(msg.metadata.num_pending, msg.metadata.timestamp, name)
            item = _Fetched(msgs)
            await self.queue.put(item)
            await item.done

        def idle() -> None:
            # a fetch that found nothing: every input stored before it began has been read (a quiet consumer
            # must not hold back the deadlines of the others, which wait until everything before them is read)
            self.progress.saw(0, datetime.now(UTC) - timedelta(seconds=FETCH_S), name)

        await self.bus.consume(name, subjects, fetched, batch=self.batch, ack_wait=self.ack_wait, stop=stop,
                               on_idle=idle)

    async def _apply(self) -> None:
        """Merge what the consumers fetched into batches, one handling at a time: whole fetches are taken while the
        batch holds fewer than `batch` inputs (so at most 2 x batch - 1)."""
        while True:
            items = [await self.queue.get()]
            count = len(items[0].msgs)
            while count < self.batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
                count += len(items[-1].msgs)
            try:
                await self.handle([m for item in items for m in item.msgs])
            except asyncio.CancelledError:
                for item in items:
                    item.done.cancel()
                raise
            except Exception as exc:  # noqa: BLE001  each consumer logs it; the messages are redelivered
                for item in items:
                    item.done.set_exception(exc)
            else:
                for item in items:
                    item.done.set_result(None)
