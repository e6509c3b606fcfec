"""The router's cache of task states, in front of the store; the deadline index follows what it loads."""

from __future__ import annotations

import asyncio

from agent_engine.router.deadlines import DeadlineIndex
from agent_engine.router.state import TaskState
from agent_engine.router.store import TaskStore

CACHE_LIMIT = 10_000


class TaskCache:
    def __init__(self, store: TaskStore, deadlines: DeadlineIndex) -> None:
        self.store = store
        self.deadlines = deadlines
        self.states: dict[str, TaskState] = {}

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
        if len(self.states) > CACHE_LIMIT:
            self.states.clear()
        self.put(task_id, state)
        return state

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
        """A state this router just committed (its records already fed the deadline index)."""
        self.states[task_id] = state

    def drop(self, task_id: str) -> None:
        self.states.pop(task_id, None)
