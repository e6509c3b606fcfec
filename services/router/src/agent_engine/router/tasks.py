"""The router's cache of task states, in front of the store; the deadline index follows what it loads.

Bounded: a task that ends leaves the cache (a late input for it loads it again, from its snapshot), and past
AE_ROUTER_CACHE_TASKS tasks the least recently used go; so the router's memory follows the tasks in hand,
not every task it ever ran."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from agent_engine.router.core import fold
from agent_engine.router.deadlines import DeadlineIndex
from agent_engine.router.lru import Lru
from agent_engine.router.state import TaskState
from agent_engine.router.store import TaskStore
from agent_engine.runtime.settings import env_int

CACHE_ENV = "AE_ROUTER_CACHE_TASKS"
DEFAULT_CACHE_TASKS = 5_000
ENDED_KEPT = 4_096
"""Ended tasks remembered by id and version only, to recognise a load that raced the end: a race lasts as long
as one load, and this covers tens of seconds of ends at the bench's rate. Kept small so the router's memory does
not grow with its history (50,000 of them were about 9 MB); a load that raced an end forgotten here still
cannot commit over it, since the store refuses a stale version."""


def cache_limit() -> int:
    limit = env_int(CACHE_ENV, DEFAULT_CACHE_TASKS)
    if limit < 1:
        raise SystemExit(f"{CACHE_ENV}={limit} must be at least 1 (tasks the router keeps in memory)")
    return limit


class TaskCache:
    def __init__(self, store: TaskStore, deadlines: DeadlineIndex, limit: int | None = None) -> None:
        self.store = store
        self.deadlines = deadlines
        self.states: Lru[str, TaskState] = Lru(limit or cache_limit())
        self.ended: Lru[str, int] = Lru(ENDED_KEPT)
        """Tasks that ended here, with their final version: a load that raced the end is recognised as stale."""

    def __contains__(self, task_id: str) -> bool:
        return task_id in self.states

    def cached(self, task_id: str) -> TaskState | None:
        return self.states.get(task_id)

    async def get(self, task_id: str) -> TaskState:
        """The task as this router last saw it, else as the store holds it ("new" when it does not exist)."""
        cached = self.states.get(task_id)
        if cached is not None:
            return cached
        state = await asyncio.to_thread(self.store.load, task_id)
        newer = self.states.get(task_id)  # saved by another coroutine while this one was loading
        if newer is not None and newer.version >= state.version:
            return newer
        if state.version < (self.ended.get(task_id) or 0):  # the task ended while this load ran: read it again
            state = await asyncio.to_thread(self.store.load, task_id)
        self.put(task_id, state)
        return state

    async def prefetch(self, task_ids: Iterable[str]) -> None:
        """Cache as new, with one query for them all, those of the tasks not cached that the store has no record
        of: a batch's new tasks, which `get` would otherwise look up one by one (two queries each)."""
        missing = {t for t in task_ids if t not in self.states and t not in self.ended}
        if not missing:
            return
        for task_id in await asyncio.to_thread(self.store.unrecorded, missing):
            if task_id not in self.states:  # another coroutine may have cached it meanwhile
                self.put(task_id, fold([]))

    async def fresh(self, task_id: str) -> TaskState:
        """The task as the store holds it now (another router may have moved it on since it was cached)."""
        state = await asyncio.to_thread(self.store.load, task_id)
        if state.status != "new" or task_id in self.states:
            self.put(task_id, state)
        return state

    def put(self, task_id: str, state: TaskState) -> None:
        """A state read from the store: the deadline index is made to match it."""
        self.states[task_id] = state
        self.deadlines.sync(state)

    def saved(self, task_id: str, state: TaskState) -> None:
        """A state this router just committed (its records already fed the deadline index). A task that has
        ended is not kept: the store has it, and nothing but a stray late input asks for it again."""
        if state.terminal:
            self.states.pop(task_id)
            self.ended[task_id] = state.version
        else:
            self.states[task_id] = state

    def drop(self, task_id: str) -> None:
        self.states.pop(task_id, None)
