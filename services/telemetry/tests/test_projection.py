"""The ledger in PostgreSQL answers as the in-memory one does; a batch and its position are written together, so
a crash or a lost position never counts a call twice; a forgotten tenant's lines go."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import LlmCalled, Usage
from agent_engine.contracts.subjects import subject_for
from agent_engine.telemetry.ledger import Ledger, Message, call_of
from agent_engine.telemetry.projection import PgLedger
from agent_engine.testkit.events import llm_called, other

pytestmark = pytest.mark.integration
STREAM = "AE_EVENTS created test"


@pytest.fixture
def pg(postgres_url: str) -> Iterator[PgLedger]:
    """A ledger in tables of its own (a unique prefix), so tests sharing the server keep apart."""
    ledger = PgLedger(postgres_url, f"ae_ledger_t{uuid.uuid4().hex[:8]}")
    ledger.resume(STREAM, 0)
    yield ledger
    ledger.close()


def messages(events: list[Envelope], first: int = 1) -> list[Message]:
    """As telemetry reads the stream: only an llm.called is parsed; any other message is counted by subject."""
    return [Message(first + i, subject_for(e), e, call_of(e)) if e.type == LlmCalled.TYPE
            else Message(first + i, subject_for(e)) for i, e in enumerate(events)]


def history(n: int, seed: int = 7) -> list[Envelope]:
    """Calls of three tenants, several tasks, nodes, models and days; some unpriced, some mock, some
    duplicates (a republished event), and other events between them."""
    rnd = random.Random(seed)
    events: list[Envelope] = []
    for i in range(n):
        if rnd.random() < 0.2:
            events.append(other("node.completed", task=f"task{rnd.randrange(6)}"))
            continue
        if events and rnd.random() < 0.05:
            events.append(events[rnd.randrange(len(events))])  # the same event id again
            continue
        provider = rnd.choice(["anthropic", "anthropic", "mock"])
        events.append(llm_called(
            task=f"task{rnd.randrange(6)}", tenant=rnd.choice(["acme", "globex", "initech"]), provider=provider,
            model=rnd.choice(["claude-sonnet-4-5", "claude-haiku-4-5"]), day=1 + rnd.randrange(3),
            node=rnd.choice(["draft", "review"]), event_id=f"ev{uuid.uuid4().hex[:10]}-{i}",
            cost="0" if provider == "mock" else rnd.choice(["0.000003", "0.1", "0.25", "1.5", "unpriced"]),
            usage=Usage(input_tokens=rnd.randrange(1000), output_tokens=rnd.randrange(100),
                        cache_read_tokens=rnd.randrange(50), cache_write_tokens=rnd.randrange(5))))
    return events


def answers(ledger: Ledger | PgLedger, events: list[Envelope]) -> dict[str, Any]:
    tasks = sorted({(e.tenant, e.task_id) for e in events})
    return {"all": ledger.query(),
            **{f"tenant {t}": ledger.query(tenant=t) for t in sorted({e.tenant for e in events})},
            **{f"task {k}": ledger.query(k[1], k[0]) for k in tasks},
            **{f"task {k[1]} unscoped": ledger.query(k[1]) for k in tasks}}


def in_memory(events: list[Envelope]) -> Ledger:
    ledger = Ledger()
    ledger.apply(messages(events))
    return ledger


def test_answers_equal_the_in_memory_ledgers(pg: PgLedger) -> None:
    events = history(400)
    for start in range(0, len(events), 37):  # batches of any size
        pg.apply(messages(events[start:start + 37], first=start + 1))
    assert answers(pg, events) == answers(in_memory(events), events)
    assert pg.position() == len(events)


def test_exact_to_the_cent_and_the_empty_lines(pg: PgLedger) -> None:
    pg.apply(messages([llm_called(task="t1", cost="0.1"), llm_called(task="t1", cost="0.2"),
                       *(llm_called(task="t2", cost="0.000003") for _ in range(1000))]))
    assert pg.query("t1")["cost_usd"] == "0.3"
    assert pg.query("t2")["cost_usd"] == "0.003000"
    assert pg.query("nope") == Ledger().query("nope")
    assert pg.query(tenant="nobody") == Ledger().query(tenant="nobody")


def test_a_batch_already_folded_is_passed_over(pg: PgLedger) -> None:
    """A redelivery after a reconnect, or another replica's batch: at or before the position, nothing counts."""
    batch = messages(history(50))
    assert pg.apply(batch) == 50
    before = pg.query()
    assert pg.apply(batch) == 0
    assert pg.apply(batch[40:]) == 0
    assert pg.query() == before


def test_a_lost_position_never_counts_a_call_twice(pg: PgLedger) -> None:
    """Re-reading from the first message (a position of another stream): each call is kept once by its id."""
    events = history(120)
    pg.apply(messages(events))
    calls = pg.query()["tenants"]
    assert pg.resume("AE_EVENTS created later", 120) == 0  # another stream: from its start
    pg.apply(messages(events))
    assert pg.query()["tenants"] == calls
    assert answers(pg, events)["task ('acme', 'task1')"] == answers(in_memory(events), events)["task ('acme', 'task1')"]


def test_a_position_beyond_the_streams_end_starts_again(pg: PgLedger) -> None:
    pg.apply(messages(history(30)))
    assert pg.resume(STREAM, 30) == 30
    assert pg.resume(STREAM, 10) == 0


def test_a_failed_batch_changes_nothing_neither_lines_nor_position(pg: PgLedger, postgres_url: str) -> None:
    """A crash between the ledger's rows and the position cannot happen: they are one transaction."""
    events = history(60)
    pg.apply(messages(events[:30]))
    before, position = pg.query(), pg.position()
    broken = messages(events[30:])
    broken.append(Message(999, "ae.acme.llm.called", events[1], None))  # folds nothing...
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # ...but the table it would need is gone
        conn.execute(f"ALTER TABLE {pg.p}_counts RENAME TO {pg.p}_counts_away")
        try:
            with pytest.raises(psycopg.Error):
                pg.apply(broken)
        finally:
            conn.execute(f"ALTER TABLE {pg.p}_counts_away RENAME TO {pg.p}_counts")
    assert (pg.query(), pg.position()) == (before, position)
    pg.apply(messages(events[30:], first=31))
    assert answers(pg, events) == answers(in_memory(events), events)


def test_a_forgotten_tenants_task_lines_go_and_read_as_erased(pg: PgLedger, postgres_url: str) -> None:
    pg.apply(messages([llm_called(task="a", tenant="gone"), llm_called(task="b", tenant="gone"),
                       llm_called(task="c", tenant="kept")]))
    assert pg.forget("gone", ["a"]) == 1  # one data subject's task
    assert pg.query("a")["erased"] is True and pg.query("b")["calls"] == 1
    assert pg.forget("gone", None) == 1  # then the whole tenant
    assert pg.query("b", "gone")["erased"] is True and "nodes" not in pg.query("b", "gone")
    assert pg.query("c")["calls"] == 1  # another tenant's line stays
    assert pg.query(tenant="gone")["calls"] == 2  # totals name no task, and keep their sums
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(f"SELECT count(*) FROM {pg.p}_calls WHERE tenant = 'gone'").fetchone()
    assert rows == (0,)


def test_another_tenants_call_naming_a_task_id_never_shows_in_its_owners_line(pg: PgLedger) -> None:
    pg.apply(messages([llm_called(task="t-v", tenant="victim", cost="1"),
                       llm_called(task="t-v", tenant="intruder", cost="1000")]))
    assert pg.query("t-v", "victim")["cost_usd"] == "1"
    assert pg.query("t-v", "intruder")["cost_usd"] == "1000"
    assert "several tenants (intruder, victim)" in pg.query("t-v")["error"]


def test_a_call_postgresql_refuses_is_counted_by_subject_and_stops_nothing(pg: PgLedger) -> None:
    """A forged llm.called with a NUL in its node name (text cannot hold it) must not stall the ledger on a
    batch retried for ever: the rest of its batch is folded, it is counted by subject only."""
    good, forged, later = llm_called(task="p1", cost="1"), llm_called(task="p1", node="a\x00b"), llm_called(task="p1")
    assert pg.apply(messages([good, forged, later])) == 3
    assert pg.position() == 3
    assert (pg.query("p1")["calls"], pg.query("p1")["cost_usd"]) == (2, "1.1")
    assert pg.query()["messages_by_subject"] == {"llm.called": 3}



def test_agent_scores_in_postgresql_answer_as_in_memory_and_survive_a_repeated_batch(pg: PgLedger) -> None:
    from datetime import timedelta

    from agent_engine.telemetry.scores import Filter

    rnd = random.Random(11)
    events: list[Envelope] = []
    for i in range(60):
        task, tenant = f"task{i % 5}", rnd.choice(["acme", "globex"])
        if i < 5:
            events.append(Envelope.model_validate({**other("task.started", task=task).model_dump(mode="json",
                                                                                               by_alias=True),
                                                   "tenant": tenant, "data": {"workflow": f"wf{i % 2}"}}))
        if rnd.random() < 0.3:
            data: dict[str, Any] = {"dispatch_id": "d", "node": "n", "provider": "anthropic", "model": "m1",
                                    "error_class": "InternalServerError", "call": 1, "then": "fallback",
                                    "agent": "writer"}
            kind = "llm.call_failed"
        else:
            data = {"dispatch_id": "d", "node": "n", "provider": "anthropic", "model": rnd.choice(["m1", "m2"]),
                    "usage": {}, "cost_usd": rnd.choice(["0.1", "0.02", "unpriced"]), "repair": rnd.choice([0, 1]),
                    "outcome": rnd.choice(["valid", "invalid"]), "agent": rnd.choice(["writer", "reviewer"]),
                    "latency_ms": rnd.randrange(10, 500)}
            kind = "llm.called"
        base = other(kind, task=task).model_dump(mode="json", by_alias=True)
        events.append(Envelope.model_validate({**base, "tenant": tenant, "data": data,
                                               "time": (events[0].time + timedelta(minutes=i)).isoformat()}))
    batch = [Message(i + 1, subject_for(e), e, call_of(e)) for i, e in enumerate(events)]
    memory = Ledger()
    memory.apply(batch)
    pg.apply(batch[:30])
    pg.resume(STREAM, 0)  # the position lost: the stream read again from the first
    pg.apply(batch)
    since = events[0].time + timedelta(minutes=20)
    assert memory.agents(Filter(workflow="wf1")) and memory.agents(Filter(since=since))
    for f in (Filter(), Filter(tenant="acme"), Filter(workflow="wf1"), Filter(since=since),
              Filter(tenant="globex", workflow="wf0", since=since)):
        assert pg.agents(f) == memory.agents(f), f
    assert sum(r["attempts"] for r in pg.agents(Filter())) == len([e for e in events if e.type.startswith("llm.")])
