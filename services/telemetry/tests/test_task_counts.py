"""Tasks by status (the `ae_tasks` gauge) come from the task index, one row per task: a terminal event read
twice, even as a second message with a new id (a republish after JetStream's duplicate window), counts the
task once; in PostgreSQL the counts table always equals the index counted by status, through batches, a
forget, a rebuild, an upgrade from a version without the table and a drift put right at start."""

from __future__ import annotations

from collections import Counter

import psycopg
import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.runtime import metrics
from agent_engine.telemetry import taskmetrics
from agent_engine.telemetry.ledger import Ledger
from agent_engine.telemetry.projection import PgLedger
from agent_engine.telemetry.rebuild import backfill_hint
from agent_engine.telemetry.taskindex import STATUSES, by_status, status_changes

from .test_projection_tasks import history, messages
from .test_taskindex import event, lifecycle


def republished(e: Envelope) -> Envelope:
    """The same record sent again as a new message: what a router relay that crashed between publishing and
    saving its position does when it comes back after the duplicate window (here, with a new event id too)."""
    return e.model_copy(update={"id": f"{e.id}-again"})


def test_status_changes_move_a_task_from_one_status_to_the_next() -> None:
    before = {("acme", "t1"): "running", ("acme", "t2"): "succeeded", ("acme", "t3"): "accepted"}
    after = {("acme", "t1"): "succeeded", ("acme", "t2"): "succeeded", ("acme", "t4"): "rejected"}
    assert status_changes(before, after) == Counter({"running": -1, "succeeded": 1, "accepted": -1, "rejected": 1})
    assert status_changes(before, before) == Counter()


def test_by_status_names_every_status() -> None:
    shown = by_status([("running", 2), ("succeeded", 5)])
    assert list(shown)[:len(STATUSES)] == list(STATUSES)
    assert shown["running"] == 2 and shown["succeeded"] == 5 and shown["failed"] == 0


def test_a_terminal_event_republished_with_a_new_id_counts_the_task_once_in_memory() -> None:
    ledger = Ledger()
    events = lifecycle("t1")
    ledger.apply(messages([*events, republished(events[-1])]))
    assert ledger.task_counts()["succeeded"] == 1
    assert sum(ledger.task_counts().values()) == 1



def counted_in_the_index(pg: PgLedger) -> dict[str, int]:
    with pg.pool.connection() as conn:
        return by_status((str(r[0]), int(r[1])) for r in conn.execute(
            f"SELECT status, count(*) FROM {pg.p}_tasks GROUP BY status"))


@pytest.mark.integration
def test_a_terminal_event_republished_with_a_new_id_counts_the_task_once(pg: PgLedger) -> None:
    events = lifecycle("t1")
    pg.apply(messages(events))
    assert pg.task_counts()["succeeded"] == 1
    pg.apply(messages([republished(events[-1])], first=len(events) + 1))  # another message, another id
    assert pg.task_counts() == {**dict.fromkeys(STATUSES, 0), "succeeded": 1}


@pytest.mark.integration
def test_the_counts_equal_the_index_through_batches_a_forget_and_a_rebuild(pg: PgLedger) -> None:
    events = history()
    events += [republished(e) for e in events if e.type in ("task.succeeded", "task.failed")][:5]
    events += [event("task.accepted", "late", "globex", at=900, workflow="triage", input={"q": "x"}),
               event("task.rejected", "refused", "globex", at=901, reason="input blocked")]
    for start in range(0, len(events), 7):  # a task's events split over batches
        pg.apply(messages(events[start:start + 7], first=start + 1))
    counts = pg.task_counts()
    assert counts == counted_in_the_index(pg)
    assert sum(counts.values()) == 30 + 3 and counts["queued"] == 1 and counts["accepted"] == 1

    pg.forget("acme", ["task00"])
    pg.forget("globex", None)
    assert pg.task_counts() == counted_in_the_index(pg)
    left = pg.task_counts()
    assert sum(left.values()) == 15  # acme's 15 tasks but task00; globex's none

    pg.reset()  # `agentctl cost rebuild`: empty, then fold the stream again
    assert sum(pg.task_counts().values()) == 0
    pg.apply(messages(events))
    assert pg.task_counts() == left == counted_in_the_index(pg)  # the erased stay erased


@pytest.mark.integration
def test_an_index_from_before_the_counts_table_or_counts_gone_wrong_are_counted_at_start(
        pg: PgLedger, postgres_url: str) -> None:
    pg.apply(messages(history()))
    expected = pg.task_counts()
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # as the previous version left the database
        conn.execute(f"DROP TABLE {pg.p}_task_counts")
    upgraded = PgLedger(postgres_url, pg.p)
    try:
        assert upgraded.task_counts() == expected == counted_in_the_index(upgraded)
    finally:
        upgraded.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # a replica of that version folded meanwhile
        conn.execute(f"UPDATE {pg.p}_tasks SET status = 'failed' WHERE task_id = 'task00'")
        conn.execute(f"UPDATE {pg.p}_task_counts SET n = n + 7 WHERE status = 'running'")
    restarted = PgLedger(postgres_url, pg.p)
    try:
        assert restarted.task_counts() == counted_in_the_index(restarted) != expected
        assert restarted.task_counts()["failed"] == expected["failed"] + 1
    finally:
        restarted.close()


def test_the_backfill_hint_names_the_new_tables_only_over_a_folded_ledger() -> None:
    hint = backfill_hint({"attempts", "task_workflows"}, 1234)
    assert "ae_ledger_attempts, ae_ledger_task_workflows start empty" in hint and "sequence 1234" in hint
    assert hint.count("the agent scores (agents stats)") == 1 and "agentctl cost rebuild" in hint
    assert "the task index" in backfill_hint({"tasks"}, 5)
    assert backfill_hint({"attempts"}, 0) == ""  # a first start: the fold reads everything anyway
    assert backfill_hint(set(), 99) == ""


@pytest.mark.integration
def test_a_start_over_a_ledger_without_the_scores_tables_says_how_to_backfill(
        pg: PgLedger, postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    pg.apply(messages(history()))
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # as a version before agent scores left it
        conn.execute(f"DROP TABLE {pg.p}_attempts, {pg.p}_task_workflows")
    upgraded = PgLedger(postgres_url, pg.p)
    try:
        with caplog.at_level("WARNING", logger="telemetry"):
            upgraded.position()
        assert f"{pg.p}_attempts, {pg.p}_task_workflows start empty" in caplog.text
        assert "run `agentctl cost rebuild`" in caplog.text
    finally:
        upgraded.close()


async def test_the_sampler_sets_every_status_so_an_emptied_one_shows_zero() -> None:
    ledger = Ledger()
    ledger.apply(messages(lifecycle("t1", end="task.failed")))

    async def counts() -> dict[str, int]:
        return ledger.task_counts()

    def shown() -> dict[str, float]:
        return {s.labels["status"]: s.value for s in metrics.TASKS.collect()[0].samples
                if s.labels["service"] == metrics.SERVICE[0]}

    sample = taskmetrics.sampler(counts)
    await sample()
    assert shown() == {**dict.fromkeys(STATUSES, 0.0), "failed": 1.0}
    ledger.forget("acme", None)
    await sample()
    assert shown() == dict.fromkeys(STATUSES, 0.0)
