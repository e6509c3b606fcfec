"""The shell around day budgets: a tenant's and a user's budget per UTC day (AE_BUDGET_LIMITS), each a log of
its own in the store (`tenant:<tenant>/budget/<day>[/user/<user>]`), read once and kept, and written in the
same batch (and transaction) as the task records whose reservations and settlements it mirrors.

Before an input of a task the day budgets apply to is decided, what each has left is read and given to the
core with the input (recorded in its `router.input`, so a replay decides the same); after it, every
`budget.reserved` and `budget.settled` the core recorded that counts against a day is appended to that day's
log. Two routers reserving against one day at once conflict on its version, and the loser retries its inputs
one by one on fresh state, as for admission logs. Page: docs/guardrails.md (Budgets).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

from agent_engine.contracts.envelope import Envelope
from agent_engine.router.batch import Batch
from agent_engine.router.budgets import (
    DayLimits,
    DayRoom,
    DayState,
    day_entries,
    day_key,
    day_of,
    evolve_day,
    limits_for,
    mirrored,
    room_of,
)
from agent_engine.router.records import RouterInput
from agent_engine.router.state import TaskState
from agent_engine.router.store import TaskStore


class DayBudgets:
    def __init__(self, store: TaskStore, limits: dict[str, DayLimits]) -> None:
        self.store = store
        self.limits = limits
        """By tenant; "*" for the others. Empty: no day budgets, and nothing is read or written."""

    def apply_to(self, tenant: str) -> bool:
        return bool(self.limits) and limits_for(self.limits, tenant).any

    async def rooms(self, inp: RouterInput, state: TaskState, batch: Batch) -> RouterInput:
        """The input with what the day budgets of its task have left (unchanged when none apply)."""
        event = inp.event
        if not self.apply_to(event.tenant) or state.terminal:
            return inp
        starting = ((event.type in ("task.accepted", "task.admitted") and state.status in ("new", "queued"))
                    or (event.type == "subtask.requested" and state.status == "new" and bool(event.data.get("budget"))))
        if state.budget is None and not starting:
            return inp  # a task that started without them (before they were configured) stays without
        limits = limits_for(self.limits, event.tenant)
        user = state.budget.user if state.budget is not None else _sender(event.data)
        day = day_of(event)
        rooms: list[DayRoom] = []
        if limits.tenant_day is not None:
            rooms.append(room_of("tenant-day", day, limits.tenant_day,
                                 await self._state(day_key(event.tenant, day), batch)))
        if limits.user_day is not None and isinstance(user, str) and user:
            rooms.append(room_of("user-day", day, limits.user_day,
                                 await self._state(day_key(event.tenant, day, user), batch)))
        return replace(inp, rooms=tuple(rooms))

    async def mirror(self, records: list[Envelope], batch: Batch) -> None:
        """Append each reservation and settlement that counts against a day to that day's log."""
        for record in records:
            for scope, key in day_entries(record):
                state = await self._state(key, batch)
                after = evolve_day(state, record)
                batch.append(key, state.version, [mirrored(record, scope, after, self._limit(record.tenant, scope))])
                batch.days[key] = after

    def committed(self, key: str, batch: Batch) -> None:
        """Nothing is kept between batches: each reads the day logs it needs again, so a settlement another
        router made is always seen (a node is never failed on an old reading)."""

    def forget(self) -> None:
        """A save failed, or a tenant was forgotten: nothing is kept, so nothing to drop."""

    def _limit(self, tenant: str, scope: str) -> Decimal | None:
        limits = limits_for(self.limits, tenant)
        return limits.tenant_day if scope == "tenant-day" else limits.user_day

    async def _state(self, key: str, batch: Batch) -> DayState:
        if key not in batch.days:
            batch.days[key] = await asyncio.to_thread(self.store.load_day, key)
        return batch.days[key]


def _sender(data: dict[str, object]) -> object:
    """Whose user-day budget a starting task counts against: its request's sender, or its SPLIT's budget's user."""
    budget = data.get("budget")
    return budget.get("user") if isinstance(budget, dict) else data.get("requested_by")
