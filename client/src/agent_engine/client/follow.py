"""Following one task: what the router has stored of it so far, then each event as it is published.

A core NATS subscription on the tenant's events (`tenant_subject`), filtered by task id, is opened first; then
the task's stored history is read (the router's `task.history` query), so nothing that happened between a
submit and the subscription is missed. Every event is yielded once (by event id), in the order it happened.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as Nats
from nats.aio.subscription import Subscription

from agent_engine.client.errors import ClientTimeout
from agent_engine.client.results import END_TYPES
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import INTERNAL_TYPES
from agent_engine.contracts.subjects import subject_problem, tenant_subject

INPUT_RECORD = "router.input"
"""The router's record of an input it applied (the input envelope is its `data.input`): stored, never published."""
LAST_TYPES = END_TYPES | {"task.deduplicated"}
"""After one of these, nothing more happens under the task id."""

History = Callable[[str], Awaitable[list[Envelope]]]


def published(task_id: str, records: list[Envelope]) -> list[Envelope]:
    """The events of a task as they were published, from its stored records: the inputs the router applied
    (the request's `task.accepted`, the runners' results, ...) and its decisions, in order. The router's own
    internal events and records addressed to other tasks are left out."""
    out = []
    for record in records:
        if record.type == INPUT_RECORD:
            inner = record.data.get("input")
            record = Envelope.model_validate(inner) if isinstance(inner, dict) else record
            if record.type == INPUT_RECORD:
                continue
        if record.task_id == task_id and record.type not in INTERNAL_TYPES:
            out.append(record)
    return out


class TaskEvents:
    """The events of one task, each once, in order: an async iterator that ends after the task's last event
    (`task.succeeded`, `task.failed`, `task.cancelled`, `task.rejected` or `task.deduplicated`) unless
    `until_end` is false. Use it as `async with`, which subscribes (and reads the stored history) first.
    The router's internal events (`INTERNAL_TYPES`: its admission and key records, messages to itself) are
    left out, stored or live."""

    def __init__(self, nc: Nats, tenant: str, task_id: str, history: History | None, *, until_end: bool = True,
                 idle_timeout: float | None = None) -> None:
        self.nc = nc
        self.tenant = tenant
        self.task_id = task_id
        self.history = history
        self.until_end = until_end
        self.idle_timeout = idle_timeout
        self.ended = False
        self._live: asyncio.Queue[Envelope] = asyncio.Queue()
        self._stored: deque[Envelope] = deque()
        self._seen: set[str] = set()
        self._sub: Subscription | None = None

    async def __aenter__(self) -> TaskEvents:
        async def on_msg(msg: Any) -> None:
            try:
                event = Envelope.from_bytes(msg.data)
            except ValueError:  # someone else's malformed message is not this task's news
                return
            # an event on a subject it is not published on is not the engine's (say, a task.succeeded sent
            # as a request): the subject is what the server's permissions vouch for
            if (event.task_id == self.task_id and event.type not in INTERNAL_TYPES
                    and not subject_problem(msg.subject, event)):
                self._live.put_nowait(event)

        self._sub = await self.nc.subscribe(tenant_subject(self.tenant), cb=on_msg)
        if self.history is not None:
            for event in published(self.task_id, await self.history(self.task_id)):
                if event.id not in self._seen:
                    self._seen.add(event.id)
                    self._stored.append(event)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001  the connection is closing already: nothing is left to undo
                pass

    def __aiter__(self) -> TaskEvents:
        return self

    async def __anext__(self) -> Envelope:
        if self.ended and self.until_end:
            raise StopAsyncIteration
        return await self.next(self.idle_timeout)

    async def next(self, timeout: float | None = None) -> Envelope:
        """The task's next event; ClientTimeout when none comes within `timeout` seconds (None: wait)."""
        while True:
            if self._stored:
                event = self._stored.popleft()
            else:
                try:
                    event = await asyncio.wait_for(self._live.get(), timeout)
                except TimeoutError:
                    raise ClientTimeout(f"no news of task {self.task_id} for {timeout:g}s") from None
                if event.id in self._seen:
                    continue
                self._seen.add(event.id)
            if event.type in LAST_TYPES:
                self.ended = True
            return event
