"""A SPLIT in a task with a budget: each subtask gets an even share of what is left, reserved in the parent
until the subtask says what it spent, so the parent's spent + reserved stays within its limit and what the
subtasks spend is counted in it."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from budget_testkit import budgeted, cost, of_type, priced
from router_testkit import TASK, accepted, completed, envelope, types
from test_roles import Tasks, assert_replays, split_wf, subtask_id

from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.router.budgets import DayRoom, Ledger
from agent_engine.router.core import RouterInput


def fanned(wf: WorkflowManifest, items: list[Any], plan_cost: str = "0", fan_cost: str = "0") -> Tasks:
    """A budgeted task of `split_wf` whose fan node listed `items`; the subtask requests are delivered."""
    tasks = Tasks()
    tasks.feed(priced(accepted(wf)))
    tasks.feed(completed(tasks[TASK].dispatch("plan"), {"text": "plan"}, **cost(plan_cost)))
    tasks.feed(completed(tasks[TASK].dispatch("fan"), {"items": items}, **cost(fan_cost)))
    tasks.deliver("subtask.requested")
    return tasks


def ledger(tasks: Tasks, task_id: str = TASK) -> Ledger:
    budget = tasks[task_id].state.budget
    assert budget is not None
    return budget


def finish(tasks: Tasks, index: int, work_cost: str, polish_cost: str) -> None:
    run = tasks[subtask_id(index)]
    tasks.feed(completed(run.dispatch("work"), {"w": index}, **cost(work_cost)))
    tasks.feed(completed(run.dispatch("polish"), {"p": index}, **cost(polish_cost)))


def test_a_split_reserves_an_even_share_of_what_is_left_for_each_subtask_which_opens_its_budget_with_it() -> None:
    tasks = fanned(budgeted(split_wf(), "1", on_exceed="wait"), ["x", "y", "z"], "0.1", "0.2")
    parent = ledger(tasks)
    shares = [r for r in of_type(tasks[TASK].records, "budget.reserved") if r.get("subtask")]
    assert [(r["dispatch_id"], r["node"], r["amount_usd"]) for r in shares] == [
        (subtask_id(i), "fan", "0.233333") for i in range(3)]  # (1 - 0.3) / 3, rounded down
    assert "day" not in shares[0] and "user" not in shares[0]  # the subtasks' own calls count against days
    assert parent.spent + parent.reserved <= Decimal(1)
    for index in range(3):
        sub = tasks[subtask_id(index)]
        opened = of_type(sub.records, "budget.opened")[0]
        assert (opened["limit_usd"], opened["on_exceed"], opened["prices"]["version"]) == ("0.233333", "wait", "test-1")
        assert types(sub.records)[:4] == ["router.input", "task.started", "budget.opened", "budget.reserved"]
        assert sub.dispatch("work").data["budget_usd"] == of_type(sub.records, "budget.reserved")[0]["amount_usd"]
        assert_replays(sub)
    assert_replays(tasks[TASK])


def test_each_subtask_settles_its_share_with_what_it_spent_so_the_parent_counts_the_subtasks_spend() -> None:
    tasks = fanned(budgeted(split_wf(), "1"), ["x", "y"], "0.1", "0.1")
    finish(tasks, 1, "0.01", "0.02")
    finish(tasks, 0, "0.004", "0.001")
    reports = [m.data for m in tasks.mail if m.type == "subtask.finished"]
    assert [r["spent_usd"] for r in reports] == ["0.03", "0.005"]
    tasks.deliver("subtask.finished", to=TASK)

    settled = [s for s in of_type(tasks[TASK].records, "budget.settled") if s.get("subtask")]
    assert [(s["dispatch_id"], s["released_usd"], s["cost_usd"], s["outcome"]) for s in settled] == [
        (subtask_id(1), "0.4", "0.03", "result"), (subtask_id(0), "0.4", "0.005", "result")]
    parent = ledger(tasks)
    assert parent.spent == Decimal("0.235") and parent.reserved == 0 and not parent.shares
    assert tasks[TASK].state.status == "succeeded"
    assert_replays(tasks[TASK])


def test_a_redelivered_subtask_end_settles_nothing_twice() -> None:
    tasks = fanned(budgeted(split_wf(), "1"), ["x"])
    finish(tasks, 0, "0.01", "0.01")
    [report] = [m for m in tasks.mail if m.type == "subtask.finished"]
    tasks.deliver("subtask.finished", to=TASK)
    assert tasks.feed(RouterInput(report)) == []
    assert len([s for s in of_type(tasks[TASK].records, "budget.settled") if s.get("subtask")]) == 1


def test_a_subtask_stops_at_its_share_even_when_the_parent_would_have_room_for_one_call() -> None:
    tasks = fanned(budgeted(split_wf(), "0.09"), ["x", "y", "z"])  # 0.03 each: under one dispatch's worst case
    for index in range(3):
        sub = tasks[subtask_id(index)]
        assert sub.state.status == "failed"
        [exceeded] = of_type(sub.records, "budget.exceeded")
        assert exceeded["limit_usd"] == "0.03" and exceeded["then"] == "fail"
        assert "over budget" in (sub.state.reason or "")
    tasks.deliver("subtask.finished", to=TASK)
    assert tasks[TASK].state.status == "failed"  # at the first subtask's failure, which spent nothing
    shares = [s for s in of_type(tasks[TASK].records, "budget.settled") if s.get("subtask")]
    assert [(s["cost_usd"], s["outcome"]) for s in shares] == [("0", "result"), ("0.03", "unanswered"),
                                                                ("0.03", "unanswered")]
    assert ledger(tasks).spent == Decimal("0.06")  # the others were stopped: what they may have spent counts


def test_a_parent_that_ends_first_settles_the_open_shares_at_full_and_a_late_subtask_end_changes_nothing() -> None:
    tasks = fanned(budgeted(split_wf(), "1"), ["x", "y"])
    out = tasks.feed(RouterInput(envelope("task.cancel_requested", {"reason": "enough"}, id="cancel-1")))
    unanswered = [r.data for r in out if r.type == "budget.settled"]
    assert {(s["dispatch_id"], s["cost_usd"], s["outcome"], s.get("subtask")) for s in unanswered} == {
        (subtask_id(0), "0.5", "unanswered", True), (subtask_id(1), "0.5", "unanswered", True)}
    tasks.deliver("task.cancel_requested")
    assert ledger(tasks).spent == Decimal(1)
    before = len(tasks[TASK].records)
    tasks.deliver("subtask.finished", to=TASK)
    assert "budget.settled" not in types(tasks[TASK].records[before:])


def test_without_a_task_limit_subtasks_still_count_their_calls_against_the_day_budgets() -> None:
    day = Tasks()  # a task without a budget of its own where day budgets apply: the shell gives prices and rooms
    room = DayRoom("tenant-day", "2026-01-01", Decimal(5), Decimal(5))
    inp = priced(accepted(split_wf()))
    inp = replace(inp, event=inp.event.model_copy(update={"data": {**inp.event.data, "requested_by": "ann"}}),
                  rooms=(room,))
    day.feed(inp)
    day.feed(completed(day[TASK].dispatch("plan"), {"text": "plan"}))
    day.feed(completed(day[TASK].dispatch("fan"), {"items": ["x"]}))
    [request] = [m for m in day.mail if m.type == "subtask.requested"]
    assert "limit_usd" not in request.data["budget"]
    assert request.data["budget"]["user"] == "ann"
    assert not [r for r in of_type(day[TASK].records, "budget.reserved") if r.get("subtask")]
    day.mail.remove(request)
    day.feed(replace(RouterInput(request), rooms=(room,)))
    [first] = of_type(day[subtask_id(0)].records, "budget.reserved")
    assert first["day"] == "2026-01-01"
    assert ledger(day, subtask_id(0)).user == "ann"  # its user-day budget, where one applies


def test_the_subtasks_reserve_with_the_prices_their_parent_pinned() -> None:
    tasks = fanned(budgeted(split_wf(), "1"), ["x"])
    assert ledger(tasks, subtask_id(0)).prices.to_json() == ledger(tasks).prices.to_json()
