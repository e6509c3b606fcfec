"""Day budgets: a tenant's and a user's budget per UTC day. The core reserves against what each has left
(given with the input, recorded with it), a dispatch that does not fit fails its node, and the reservations and
settlements are mirrored into the day's log; several tasks of a tenant share it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from budget_testkit import PRICES, budgeted, cost, of_type, parallel_wf
from router_testkit import Run, accepted, completed, dumps, envelope, json_round_trip, linear_workflow, types

from agent_engine.router.budgets import (
    DayLimits,
    DayRoom,
    DayState,
    day_entries,
    evolve_day,
    fold_day,
    mirrored,
    recheck_at,
    room_of,
)
from agent_engine.router.core import RouterInput, replay


def test_day_limits_parse_and_name_what_is_wrong() -> None:
    assert DayLimits.parse("acme=5.00:0.50, beta=1,*=:2") == {
        "acme": DayLimits(Decimal("5.00"), Decimal("0.50")), "beta": DayLimits(Decimal(1), None),
        "*": DayLimits(None, Decimal(2))}
    assert DayLimits.parse("") == {}
    for bad in ("acme=x", "acme", "=1", "acme=-1"):
        with pytest.raises(SystemExit, match=r"AE_BUDGET_LIMITS=.* is not valid: write tenant=tenant_day_usd"):
            DayLimits.parse(bad)


def with_rooms(inp: RouterInput, *rooms: DayRoom) -> RouterInput:
    return replace(inp, prices=PRICES, rooms=rooms)


def test_a_task_without_its_own_budget_reserves_against_the_day_and_says_which_day_and_user() -> None:
    run = Run()
    inp = accepted(linear_workflow())
    inp = replace(inp, event=inp.event.model_copy(update={"data": {**inp.event.data, "requested_by": "ann"}}))
    run.feed(with_rooms(inp, DayRoom("tenant-day", "2025-03-01", Decimal(5), Decimal(5)),
                        DayRoom("user-day", "2025-03-01", Decimal(1), Decimal(1))))
    [opened] = of_type(run.records, "budget.opened")
    assert "limit_usd" not in opened and opened["user"] == "ann"
    [reserved] = of_type(run.records, "budget.reserved")
    assert (reserved["day"], reserved["user"]) == ("2025-03-01", "ann")
    record = next(r for r in run.records if r.type == "budget.reserved")
    assert day_entries(record) == [("tenant-day", "tenant:acme/budget/2025-03-01"),
                                   ("user-day", "tenant:acme/budget/2025-03-01/user/ann")]
    assert run.records[0].data["rooms"][0] == {"scope": "tenant-day", "day": "2025-03-01", "limit": "5",
                                               "available": "5"}
    stored = json_round_trip(run.records)
    assert dumps(replay(stored)) == dumps(stored)


def fanned_out(room: Decimal) -> tuple[Run, list]:  # type: ignore[type-arg]
    """parallel_wf(3) up to the fan-out, which is decided with `room` left in the tenant's day."""
    big = DayRoom("tenant-day", "2025-03-01", Decimal(1), Decimal(1))
    run = Run()
    run.feed(with_rooms(accepted(parallel_wf(3)), big))
    run.feed(with_rooms(completed(run.dispatch("plan")), big))
    return run, run.feed(with_rooms(completed(run.dispatch("fan")), DayRoom("tenant-day", "2025-03-01", Decimal(1),
                                                                            room)))


def test_a_dispatch_the_day_has_no_room_for_fails_its_node_and_names_the_day() -> None:
    _, out = fanned_out(Decimal(1))
    amounts = [Decimal(r.data["amount_usd"]) for r in out if r.type == "budget.reserved"]
    assert len(amounts) == 3
    run, out = fanned_out(amounts[0] + amounts[1])  # room for two of the three, reserved by the same input
    assert [r.data["node"] for r in out if r.type == "budget.reserved"] == ["w0", "w1"]
    [exceeded] = [r.data for r in out if r.type == "budget.exceeded"]
    assert exceeded["scope"] == "tenant-day" and exceeded["node"] == "w2" and exceeded["then"] == "fail"
    assert "tenant-day budget of $1 of tenant 'acme' for 2025-03-01 (UTC) is left" in exceeded["reason"]
    assert "task.failed" in types(out)
    assert {s["outcome"] for s in of_type(run.records, "budget.settled")} == {"unanswered"}


def test_the_day_log_folds_reservations_and_settlements_once() -> None:
    run = Run()
    run.feed(with_rooms(accepted(linear_workflow()), DayRoom("tenant-day", "2025-03-01", Decimal(5), Decimal(5))))
    run.feed(with_rooms(completed(run.dispatch("start"), **cost("0.01")),
                        DayRoom("tenant-day", "2025-03-01", Decimal(5), Decimal(5))))
    day = DayState()
    log = []
    for record in run.records:
        for scope, _ in day_entries(record):
            day = evolve_day(day, record)
            log.append(mirrored(record, scope, day, Decimal(5)))
    assert [r.type for r in log] == ["budget.reserved", "budget.settled", "budget.reserved"]
    assert fold_day(log) == day and day.spent == Decimal("0.01") and len(day.open) == 1
    assert {r.data["scope"] for r in log} == {"tenant-day"} and log[1].data["spent_usd"] == "0.01"
    assert room_of("tenant-day", "2025-03-01", Decimal(5), day).available == Decimal(5) - day.spent - day.reserved


def test_wait_over_a_day_budget_tries_again_on_the_timers_and_at_the_next_day_at_the_latest() -> None:
    wf = budgeted(linear_workflow(), "1", on_exceed="wait")
    run = Run()
    out = run.feed(with_rooms(accepted(wf), DayRoom("tenant-day", "2025-03-01", Decimal(1), Decimal("0.001"))))
    [exceeded] = [r.data for r in out if r.type == "budget.exceeded"]
    [scheduled] = [r for r in out if r.type == "node.retry_scheduled"]
    assert exceeded["scope"] == "tenant-day" and exceeded["then"] == "wait" and "it waits" in exceeded["reason"]
    assert scheduled.data["at"] == (scheduled.time + timedelta(seconds=60)).isoformat().replace("+00:00", "Z")
    assert run.state.status == "waiting" and run.state.nodes["start"].status == "retry_scheduled"
    due = RouterInput(envelope("node.retry_due", {"node": "start", "attempt": 1, "at": scheduled.data["at"]},
                               id="due-1", time=scheduled.time + timedelta(seconds=60)))
    out = run.feed(with_rooms(due, DayRoom("tenant-day", "2025-03-01", Decimal(1), Decimal(1))))  # room freed
    assert types(out)[1:] == ["budget.reserved", "node.dispatched"]
    assert run.state.status == "running"
    late = datetime(2025, 3, 1, 23, 59, 30, tzinfo=UTC)
    assert recheck_at(late) == datetime(2025, 3, 2, tzinfo=UTC)
