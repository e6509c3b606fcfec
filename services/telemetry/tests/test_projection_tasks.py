"""The task index in PostgreSQL answers `tasks.list` as the in-memory one does, whatever the batches; a
forgotten tenant's rows go and do not come back when its events are read again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.subjects import subject_for
from agent_engine.telemetry.ledger import Ledger, Message, call_of
from agent_engine.telemetry.projection import PgLedger
from agent_engine.telemetry.taskindex import is_lifecycle, read_filter
from agent_engine.testkit.events import llm_called

from .test_taskindex import T0, event, lifecycle

pytestmark = pytest.mark.integration



def messages(events: list[Envelope], first: int = 1) -> list[Message]:
    """As telemetry reads the stream: llm.called and lifecycle events parsed, the rest counted by subject."""
    return [Message(first + i, subject_for(e), e, call_of(e))
            if e.type == "llm.called" or is_lifecycle(subject_for(e)) else Message(first + i, subject_for(e))
            for i, e in enumerate(events)]


def history() -> list[Envelope]:
    events: list[Envelope] = []
    for i in range(30):
        tenant = ("acme", "globex")[i % 2]
        end = ("task.succeeded", "task.failed", "task.cancelled")[i % 3]
        events += lifecycle(f"task{i:02d}", tenant, at=i * 5, end=end, text=f"case {i} 100%_off",
                            workflow=("triage", "billing")[i % 4 == 0], reason=f"reason {i}")
        events += [llm_called(task=f"task{i:02d}", tenant=tenant, cost="0.1"), event("node.completed", f"task{i:02d}")]
    events += [event("task.requested", "queued1", at=500, workflow="triage"),
               event("task.queued", "queued1", at=501, workflow="triage", revision="r2")]
    events.insert(7, events[3])  # a redelivered event
    return events


QUESTIONS: list[dict[str, Any]] = [
    {}, {"tenant": "acme"}, {"status": "failed"}, {"status": "queued"}, {"workflow": "billing", "limit": 3},
    {"since": (T0 + timedelta(seconds=100)).isoformat()}, {"search": "task1"}, {"search": "CASE 2"},
    {"search": "100%_"}, {"search": "%"}, {"search": "reason 7"}, {"limit": 500}]


def test_answers_equal_the_in_memory_ledgers(pg: PgLedger) -> None:
    events = history()
    memory = Ledger()
    memory.apply(messages(events))
    for start in range(0, len(events), 11):
        pg.apply(messages(events[start:start + 11], first=start + 1))
    for question in QUESTIONS:
        wanted = read_filter(question, None)[0]
        assert pg.list_tasks(wanted) == memory.list_tasks(wanted), question
    found = [t["task_id"] for t in pg.list_tasks(read_filter({"search": "_", "limit": 500}, None)[0])["tasks"]]
    assert len(found) == 30 and "queued1" not in found  # LIKE's wildcards are searched as text
    assert pg.list_tasks(read_filter({"search": "task03"}, None)[0])["tasks"][0]["cost_usd"] == "0.1"


def test_a_forgotten_tenants_rows_go_and_stay_gone(pg: PgLedger) -> None:
    events = history()
    pg.apply(messages(events))
    assert pg.forget("acme", None) == 16
    assert {t["tenant"] for t in pg.list_tasks(read_filter({"limit": 500}, None)[0])["tasks"]} == {"globex"}
    pg.apply(messages(events, first=len(events) + 1))  # read again (a lost position)
    assert {t["tenant"] for t in pg.list_tasks(read_filter({"limit": 500}, None)[0])["tasks"]} == {"globex"}


def test_a_reset_and_refold_equals_the_ledger_and_keeps_erased_tasks_erased(pg: PgLedger) -> None:
    events = history()
    pg.apply(messages(events))
    assert pg.forget("acme", ["task00"]) == 1
    before = pg.query()
    wanted = read_filter({"limit": 500}, None)[0]
    listed = pg.list_tasks(wanted)
    pg.reset()
    assert pg.position() == 0 and pg.list_tasks(wanted) == {"tasks": []}
    pg.apply(messages(events))
    assert pg.query() == before  # the erased task's calls still count in the totals, as before the reset
    assert pg.list_tasks(wanted) == listed
    assert pg.query("task00", "acme")["erased"] is True

    memory = Ledger()  # the same in memory
    memory.apply(messages(events))
    memory.forget("acme", ["task00"])
    memory.reset()
    memory.apply(messages(events))
    assert memory.list_tasks(wanted) == listed and memory.query("task00", "acme")["erased"] is True
    assert memory.query()["tenants"] == before["tenants"]
