"""Saves are split so no transaction reaches the size at which psycopg's pipeline deadlocks."""

from __future__ import annotations

from datetime import UTC, datetime

from agent_engine.contracts.envelope import Envelope
from agent_engine.router.batch import SAVE_CHUNK_BYTES, chunks


def record(task_id: str, size: int) -> Envelope:
    return Envelope(id=f"{task_id}-{size}", source="t", type="x", time=datetime(2026, 1, 1, tzinfo=UTC),
                    tenant="t", task_id=task_id, correlation_id="c", data={"k": "v" * size})


def test_nothing_to_save_gives_no_transaction() -> None:
    assert chunks({}) == []


def test_one_task_is_one_transaction_however_large() -> None:
    pending = {"a": (0, [record("a", SAVE_CHUNK_BYTES)] * 2)}
    assert chunks(pending) == [pending]


def test_small_tasks_share_one_transaction() -> None:
    pending = {t: (0, [record(t, 1000)] * 3) for t in "abcdef"}
    assert chunks(pending) == [pending]


def test_large_batches_split_by_task_and_stay_under_the_limit() -> None:
    pending = {t: (0, [record(t, 400_000)] * 2) for t in "abcdefgh"}  # about 6.4 MB in all
    split = chunks(pending)
    assert len(split) > 1
    assert [t for c in split for t in c] == list("abcdefgh")  # order kept, no task split or lost
    for chunk in split:
        assert sum(len(r.model_dump_json()) for _, recs in chunk.values() for r in recs) <= SAVE_CHUNK_BYTES
