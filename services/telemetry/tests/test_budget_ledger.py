"""Budgets in the ledger: a task's limit, what is reserved now and what was spent, and a tenant's by UTC day,
folded from the router's budget records, once per event id; the PostgreSQL projection answers the same."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.subjects import subject_for
from agent_engine.telemetry.ledger import Ledger, Message, call_of
from agent_engine.telemetry.projection import PgLedger

PRICES = {"version": "test-1", "models": {"mock": {"input": "1", "output": "2", "cache_read": "0", "cache_write": "1"}}}


def record(type_: str, data: dict[str, Any], *, task: str = "t1", tenant: str = "acme", day: int = 1) -> Envelope:
    return Envelope(id=f"b-{uuid.uuid4().hex}", source="agent-engine/router", type=type_,
                    time=datetime(2026, 3, day, 12, tzinfo=UTC), tenant=tenant, task_id=task, correlation_id=task,
                    data=data)


def history() -> list[Envelope]:
    """Task t1 (limit 0.01): two reservations, one settled with its actual cost; then one over the budget. Task
    t2 (next day): one reservation left open. One record delivered twice."""
    opened = {"limit_usd": "0.01", "on_exceed": "fail", "prices": PRICES}
    common = {"limit_usd": "0.01", "spent_usd": "0", "reserved_usd": "0"}
    settled = record("budget.settled", {**common, "dispatch_id": "d1", "node": "a", "released_usd": "0.004",
                                        "cost_usd": "0.0012", "outcome": "result"})
    return [
        record("budget.opened", opened),
        record("budget.reserved", {**common, "dispatch_id": "d1", "node": "a", "amount_usd": "0.004"}),
        settled, settled,
        record("budget.reserved", {**common, "dispatch_id": "d2", "node": "b", "amount_usd": "0.005"}),
        record("budget.exceeded", {"node": "c", "attempt": 1, "needed_usd": "0.006", "available_usd": "0.0038",
                                   "limit_usd": "0.01", "then": "fail", "reason": "over"}),
        record("budget.opened", {**opened, "limit_usd": "1"}, task="t2", day=2),
        record("budget.reserved", {**common, "dispatch_id": "d3", "node": "a", "amount_usd": "0.25"}, task="t2",
               day=2),
    ]


def messages(events: list[Envelope]) -> list[Message]:
    """As telemetry reads the stream: llm.called and budget records parsed."""
    return [Message(i + 1, subject_for(e), e, call_of(e)) for i, e in enumerate(events)]


def test_a_task_line_shows_its_limit_reserved_and_spent() -> None:
    ledger = Ledger()
    ledger.apply(messages(history()))
    budget = ledger.query("t1")["budget"]
    assert {k: v for k, v in budget.items() if k != "log"} == {
        "limit_usd": "0.01", "reserved_usd": "0.005", "spent_usd": "0.0012", "reservations": 2, "settlements": 1,
        "exceeded": 1, "alerts": 0}
    assert [row["type"] for row in budget["log"]] == ["budget.opened", "budget.reserved", "budget.settled",
                                                      "budget.reserved", "budget.exceeded"]
    assert "prices" not in budget["log"][0]


def test_a_tenant_line_shows_reserved_and_spent_by_utc_day() -> None:
    ledger = Ledger()
    ledger.apply(messages(history()))
    days = ledger.query(tenant="acme")["budget_days"]
    assert {day: (line["reserved_usd"], line["spent_usd"]) for day, line in days.items()} == {
        "2026-03-01": ("0.005", "0.0012"), "2026-03-02": ("0.25", "0")}


def test_a_task_without_a_budget_has_no_budget_line() -> None:
    assert "budget" not in Ledger().query("t1")



@pytest.mark.integration
def test_the_projection_answers_as_the_in_memory_ledger_and_forgets_budget_lines(pg: PgLedger) -> None:
    events = history()
    pg.apply(messages(events))
    memory = Ledger()
    memory.apply(messages(events))
    for query in ({"task_id": "t1"}, {"task_id": "t2"}, {"task_id": "t1", "tenant": "acme"}, {"tenant": "acme"}):
        assert pg.query(**query) == memory.query(**query), query
    assert pg.forget("acme", ["t1"]) == 1
    assert pg.query("t1", "acme").get("erased") is True


def test_a_task_with_only_day_budgets_and_the_day_logs_copies() -> None:
    """A task without a limit of its own (only its tenant's day budget applies) has a line without a limit; the
    copies of its records in the day's log (scope tenant-day) are not counted again."""
    common = {"spent_usd": "0", "reserved_usd": "0", "day": "2026-03-01"}
    reserved = {**common, "dispatch_id": "d1", "node": "a", "amount_usd": "0.004"}
    ledger = Ledger()
    over = {"scope": "tenant-day", "node": "b", "attempt": 1, "needed_usd": "0.01", "available_usd": "0.001",
            "limit_usd": "5", "then": "fail", "reason": "over the day"}
    ledger.apply(messages([record("budget.opened", {"prices": PRICES}), record("budget.reserved", reserved),
                           record("budget.reserved", {**reserved, "scope": "tenant-day", "limit_usd": "5"}),
                           record("budget.exceeded", over)]))
    budget = ledger.query("t1")["budget"]
    assert "limit_usd" not in budget and (budget["reserved_usd"], budget["reservations"]) == ("0.004", 1)
    assert budget["exceeded"] == 1  # over its tenant's day budget: recorded in the task's own history
