"""The router's memory follows the tasks in hand, not the history behind it: its caches in front of the store
are bounded, and a task that ends leaves the cache (a late input loads it again from the store)."""

from __future__ import annotations

import asyncio

import pytest

from agent_engine.router.deadlines import DeadlineIndex
from agent_engine.router.lru import Lru
from agent_engine.router.state import TaskState
from agent_engine.router.tasks import TaskCache


class CountingStore:
    def __init__(self) -> None:
        self.loads: list[str] = []
        self.held: dict[str, TaskState] = {}

    def load(self, task_id: str) -> TaskState:
        self.loads.append(task_id)
        return self.held.get(task_id, TaskState(task_id=task_id))


def cache(limit: int = 3) -> tuple[TaskCache, CountingStore]:
    store = CountingStore()
    return TaskCache(store, DeadlineIndex(), limit=limit), store  # type: ignore[arg-type]


def test_an_lru_map_forgets_the_least_recently_used_entry_first() -> None:
    seen: Lru[str, int] = Lru(2)
    seen["a"], seen["b"] = 1, 2
    assert seen.get("a") == 1  # "a" is now the most recently used
    seen["c"] = 3
    assert "b" not in seen and seen.get("a") == 1 and seen.get("c") == 3 and len(seen) == 2
    with pytest.raises(ValueError, match="at least one"):
        Lru(0)


def test_a_task_that_ends_leaves_the_cache_and_a_late_input_loads_it_from_the_store() -> None:
    tasks, store = cache()
    running = TaskState(task_id="t1", tenant="acme", status="running", version=3)
    tasks.saved("t1", running)
    assert tasks.cached("t1") == running
    done = TaskState(task_id="t1", tenant="acme", status="succeeded", version=4)
    tasks.saved("t1", done)
    assert tasks.cached("t1") is None
    store.held["t1"] = done
    assert asyncio.run(tasks.get("t1")) == done and store.loads == ["t1"]


def test_the_cache_holds_at_most_its_limit_dropping_the_task_least_recently_used() -> None:
    tasks, store = cache(limit=3)
    for name in ("t1", "t2", "t3"):
        tasks.saved(name, TaskState(task_id=name, status="running"))
    asyncio.run(tasks.get("t1"))  # used: t2 is now the oldest
    tasks.saved("t4", TaskState(task_id="t4", status="running"))
    assert [t for t in ("t1", "t2", "t3", "t4") if tasks.cached(t)] == ["t1", "t3", "t4"]
    assert store.loads == [], "t1 came from the cache"


def test_thousands_of_finished_tasks_leave_nothing_behind() -> None:
    tasks, _ = cache(limit=10_000)
    for i in range(5_000):
        tasks.saved(f"t{i}", TaskState(task_id=f"t{i}", status="running"))
        tasks.saved(f"t{i}", TaskState(task_id=f"t{i}", status="succeeded"))
    assert len(tasks.states) == 0


def test_a_bad_cache_size_stops_the_router_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_ROUTER_CACHE_TASKS", "0")
    with pytest.raises(SystemExit, match="AE_ROUTER_CACHE_TASKS=0 must be at least 1"):
        TaskCache(CountingStore(), DeadlineIndex())  # type: ignore[arg-type]


def test_a_load_that_raced_the_tasks_end_is_read_again_rather_than_cached_stale() -> None:
    """Found in review: with ended tasks leaving the cache, a load begun before the end (a refusal check outside the
    router's lock) put the older, still-running state back, and with it the task's open deadlines."""
    tasks, store = cache()
    running = TaskState(task_id="t1", tenant="acme", status="running", version=5)
    ended = TaskState(task_id="t1", tenant="acme", status="failed", version=7)
    loads = iter([running, ended])
    store.load = lambda task_id: next(loads)  # type: ignore[method-assign]
    tasks.saved("t1", ended)  # the end committed while the first load was under way
    assert asyncio.run(tasks.get("t1")) == ended


def test_the_lru_map_can_be_shared_between_threads() -> None:
    import threading

    shared: Lru[int, int] = Lru(50)

    def churn(offset: int) -> None:
        for i in range(20_000):
            shared[(i + offset) % 200] = i
            shared.get((i * 7) % 200)
            shared.pop((i * 13) % 200)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(shared) <= 50
