"""The shell around idempotency keys: look a new request's key up in the store, and claim it for the task the
request starts, in the same batch (and transaction) as the task's first records.

A key's index is read from the store for each new request that carries a key (a few records; never cached, so
a claim another router made is always seen); with several routers, two claims of one key at the same version
conflict in the store, and the retry reads the winner's claim.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from agent_engine.contracts.envelope import Envelope, caused_by, derive_id
from agent_engine.contracts.events import TenantKeyClaimed
from agent_engine.router.batch import Batch
from agent_engine.router.idempotency import KeyState, duplicate_of, evolve_key, key_aggregate, key_of
from agent_engine.router.records import SOURCE, RouterInput
from agent_engine.router.store import TaskStore


class IdempotencyKeys:
    def __init__(self, store: TaskStore, window_s: float) -> None:
        self.store = store
        self.window_s = window_s
        """0: keys are only carried along, as before."""

    async def check(self, inp: RouterInput, batch: Batch) -> RouterInput:
        """A new task's request: the task its key names within the window, if any, recorded with the input."""
        key = key_of(inp.event)
        if key is None or self.window_s <= 0:
            return inp
        state = await self._state(inp.event.tenant, key, batch)
        found = duplicate_of(state, inp.event, self.window_s)
        return inp if found is None else replace(inp, duplicate=found)

    async def claim(self, event: Envelope, batch: Batch) -> None:
        """The request started (or queued) its task: from now on its key names that task."""
        key = key_of(event)
        if key is None or self.window_s <= 0:
            return
        state = await self._state(event.tenant, key, batch)
        aggregate = key_aggregate(event.tenant, key)
        record = caused_by(event, TenantKeyClaimed(idempotency_key=key), id=derive_id(event.id, "key"),
                           source=SOURCE, time=event.time)
        batch.append(aggregate, state.version, [record])
        batch.keys[aggregate] = evolve_key(state, record)

    async def _state(self, tenant: str, key: str, batch: Batch) -> KeyState:
        aggregate = key_aggregate(tenant, key)
        if aggregate not in batch.keys:
            batch.keys[aggregate] = await asyncio.to_thread(self.store.load_key, aggregate)
        return batch.keys[aggregate]
