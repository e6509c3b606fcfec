"""What the router needs at start, kept small: the open dispatches as of a position, so a start reads one row and
the records after it, not every record ever stored (over a real PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.router import openwork
from agent_engine.router.deadlines import DeadlineIndex, Open
from agent_engine.router.store import TaskStore
from agent_engine.router.timers import Progress, Timers

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def index_with(task: str) -> DeadlineIndex:
    index = DeadlineIndex()
    index.open[(task, "draft")] = Open(f"{task}/draft/1", 1, T0, "acme", task, window=timedelta(seconds=30))
    index.open[(task, "review")] = Open("", 2, T0 + timedelta(minutes=1), "acme", task, retry=True)
    return index


def test_open_work_round_trips_and_the_furthest_checkpoint_wins(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # as a TaskStore makes it
        conn.execute(openwork.SCHEMA)
    task = str(uuid.uuid4())
    furthest, _ = openwork.latest(postgres_url)
    try:
        openwork.save(postgres_url, f"router-{task[:6]}", furthest + 100, openwork.entries(index_with(task)))
        openwork.save(postgres_url, f"other-{task[:6]}", furthest + 50, [])  # behind: not used
        position, rows = openwork.latest(postgres_url)
    finally:
        forget(postgres_url, f"router-{task[:6]}", f"other-{task[:6]}")
    restored = DeadlineIndex()
    openwork.restore(restored, rows)
    assert position == furthest + 100 and restored.open == index_with(task).open


def forget(url: str, *names: str) -> None:
    """No checkpoint past the real log stays behind for the routers of other tests sharing this PostgreSQL."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DELETE FROM {openwork.TABLE} WHERE name = ANY(%s)", (list(names),))


def test_a_start_reads_the_checkpoint_and_only_the_records_after_it(postgres_url: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    store = TaskStore(postgres_url)
    try:
        task = str(uuid.uuid4())
        furthest, _ = openwork.latest(postgres_url)
        at = furthest + 1_000_000
        openwork.save(postgres_url, f"router-{task[:6]}", at, openwork.entries(index_with(task)))
        asked: list[int] = []
        tail = [(at + 1, Envelope(id="s", source="r", type="node.succeeded", time=T0, tenant="acme", task_id=task,
                                  correlation_id=task, data={"node": "draft"}))]

        def notifications(after: int, limit: int) -> list[tuple[int, Envelope | None]]:
            asked.append(after)
            return [n for n in tail if n[0] > after]

        monkeypatch.setattr(store, "notifications", notifications)
        timers = Timers(DeadlineIndex(), None, None, Progress(), 1.0, name=f"started-{task[:6]}")  # type: ignore[arg-type]
        through = timers.rebuild(store)
        assert asked[0] == at, "the start read the log from before its checkpoint"
        assert list(timers.deadlines.open) == [(task, "review")], "the record after the checkpoint was not applied"
        assert through == at + 1, "the relay must start no later than where the rebuild read to"

        # killed before its first periodic checkpoint: the next start still reads only what came after this one
        asked.clear()
        again = Timers(DeadlineIndex(), None, None, Progress(), 1.0, name=f"again-{task[:6]}")  # type: ignore[arg-type]
        assert again.rebuild(store) == at + 1 and asked[0] == at + 1, "the next start read the same tail again"
        assert again.deadlines.open == timers.deadlines.open
    finally:
        forget(postgres_url, f"router-{task[:6]}", f"started-{task[:6]}", f"again-{task[:6]}")
        store.close()
