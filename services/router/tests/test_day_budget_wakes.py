"""A node waiting for room in a day budget is woken when another task's settlement frees that room, not only by
the 60 s poll: the timers' index follows the day logs' copies and fires the waiting retry at once, as a recorded
input the core takes as that retry (so replay stays exact). And a node a person approved is not asked again
when it then waits for a day budget."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

from budget_testkit import PRICES, Shell, budgeted, cost, of_type
from router_testkit import T0, Run, accepted, agent, chain, dumps, envelope, exit_, json_round_trip, manifest, types

from agent_engine.contracts.envelope import Envelope, derive_id
from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.router import openwork
from agent_engine.router.budgets import DayRoom
from agent_engine.router.core import RouterInput, replay
from agent_engine.router.deadlines import DeadlineIndex, Room


def one_agent(**node_kw: Any) -> WorkflowManifest:
    """draft (agent) -> done, with a budget of its own that waits when a dispatch does not fit."""
    return budgeted(manifest([agent("draft", role="START", **node_kw), exit_("done")], chain("draft", "done")),
                    "1", on_exceed="wait")


def start_task(shell: Shell, task_id: str, seconds: int, tenant: str = "acme") -> Run:
    run = Run()
    inp = accepted(one_agent(), id=f"accept-{task_id}", task_id=task_id, tenant=tenant, time=T0 + timedelta(
        seconds=seconds))
    shell.feed(run, RouterInput(inp.event, inp.workflow, prices=PRICES), "ann")
    return run


def worst_case() -> Decimal:
    """What one dispatch of the test agent reserves."""
    shell = Shell(Decimal(1))
    return Decimal(of_type(start_task(shell, "probe", 0).records, "budget.reserved")[0]["amount_usd"])


def two_tasks(cost_of_first: Decimal) -> tuple[Shell, Run, Run]:
    """A tenant's day budget with room for one dispatch: the first task reserves it, the second waits; then the
    first's result comes in, costing `cost_of_first`."""
    needed = worst_case()
    shell = Shell(needed * 3 / 2)
    first = start_task(shell, "first", 0)
    second = start_task(shell, "second", 1)
    assert of_type(second.records, "budget.exceeded")[0]["then"] == "wait"
    assert shell.wakes(T0 + timedelta(seconds=2)) == []  # nothing freed yet: it waits
    done = RouterInput(envelope("node.completed", {
        "dispatch_id": first.dispatch("draft").data["dispatch_id"], "node": "draft", "attempt": 1,
        "output": {"text": "first"}, **cost(cost_of_first)}, id="done-first", task_id="first",
        time=T0 + timedelta(seconds=5)))
    shell.feed(first, done, "ann")
    assert first.state.status == "succeeded"
    return shell, first, second


def test_a_settlement_that_frees_room_in_the_day_wakes_the_waiting_node_before_its_poll() -> None:
    shell, _, second = two_tasks(Decimal("0.0001"))
    [scheduled] = [r for r in second.records if r.type == "node.retry_scheduled"]
    at = scheduled.data["at"]
    now = T0 + timedelta(seconds=5)
    [wake] = shell.wakes(now)
    assert (wake.event.type, wake.event.task_id, wake.event.data) == (
        "node.retry_due", "second", {"node": "draft", "attempt": 1, "at": at})
    poll_id = derive_id("second", "draft", 1, "retry-due", (T0 + timedelta(seconds=61)).isoformat())
    assert wake.event.id != poll_id  # the poll is another input, ignored once this one ran
    out = shell.feed(second, wake, "ann")
    assert types(out)[1:] == ["budget.reserved", "node.dispatched"]
    [dispatched] = of_type(out, "node.dispatched")
    assert dispatched["reason"] == "room in the tenant-day budget" and second.state.status == "running"
    assert [r.time for r in out if r.type == "node.dispatched"] == [now]  # 56 s before the poll would have fired
    assert shell.wakes(now + timedelta(seconds=1)) == []  # woken once
    stored = json_round_trip(second.records)
    assert dumps(replay(stored)) == dumps(stored)


def test_a_node_woken_that_still_finds_no_room_is_woken_again_by_the_next_settlement() -> None:
    """Two nodes wait; one settlement wakes both, the first takes the room and the other waits again, here within
    the same second, so for the same poll. The next settlement wakes that one again, and the core takes it: the
    wake's id names the settlement that freed the room (with the first wake's id it would be absorbed as a repeat,
    and the node left for its poll; found by the day-budget property test)."""
    now = T0 + timedelta(seconds=2)
    shell = Shell(worst_case() * 3 / 2)
    first, second, third = (start_task(shell, name, i) for i, name in enumerate(("first", "second", "third")))
    assert [of_type(r.records, "budget.exceeded")[0]["then"] for r in (second, third)] == ["wait", "wait"]
    done = RouterInput(envelope("node.completed", {
        "dispatch_id": first.dispatch("draft").data["dispatch_id"], "node": "draft", "attempt": 1,
        "output": {"text": "first"}, **cost(Decimal("0.0001"))}, id="done-first", task_id="first",
        time=now))
    shell.feed(first, done, "ann")
    [first_at] = [r.data["at"] for r in third.records if r.type == "node.retry_scheduled"]
    wakes = {w.event.task_id: w for w in shell.wakes(now)}
    assert sorted(wakes) == ["second", "third"]
    assert "node.dispatched" in types(shell.feed(second, wakes["second"], "ann"))
    out = shell.feed(third, wakes["third"], "ann")
    assert types(out)[1:] == ["budget.exceeded", "node.retry_scheduled"]  # still short: waits again
    assert of_type(out, "node.retry_scheduled")[0]["at"] == first_at  # for the same poll
    done = RouterInput(envelope("node.completed", {
        "dispatch_id": second.dispatch("draft").data["dispatch_id"], "node": "draft", "attempt": 1,
        "output": {"text": "second"}, **cost(Decimal("0.0001"))}, id="done-second", task_id="second",
        time=now))
    shell.feed(second, done, "ann")
    [again] = shell.wakes(now)
    assert again.event.task_id == "third" and again.event.id != wakes["third"].event.id
    out = shell.feed(third, again, "ann")
    assert types(out)[1:] == ["budget.reserved", "node.dispatched"] and third.state.status == "running"
    stored = json_round_trip(third.records)
    assert dumps(replay(stored)) == dumps(stored)


def test_a_settlement_that_frees_no_room_wakes_no_one() -> None:
    shell, _, second = two_tasks(worst_case())  # it cost all it reserved: the day has no more room than before
    assert shell.wakes(T0 + timedelta(seconds=5)) == []
    assert second.state.nodes["draft"].status == "retry_scheduled"


def test_only_waits_for_room_in_that_tenants_day_are_woken() -> None:
    needed = worst_case()
    shell = Shell(needed * 3 / 2)
    first = start_task(shell, "first", 0)
    waiting = start_task(shell, "second", 1)
    start_task(shell, "beta-1", 0, tenant="beta")
    other = start_task(shell, "beta-2", 1, tenant="beta")  # the same wait, over another tenant's day
    assert {w.state.nodes["draft"].status for w in (waiting, other)} == {"retry_scheduled"}
    shell.index.observe(envelope("node.retry_scheduled", {  # a retry after a failure waits out its backoff
        "node": "draft", "attempt": 2, "at": "2025-03-01T09:05:00Z", "delay_s": 300, "reason": "retry: boom"},
        id="r", task_id="third"))
    shell.feed(first, RouterInput(envelope("node.completed", {
        "dispatch_id": first.dispatch("draft").data["dispatch_id"], "node": "draft", "attempt": 1,
        "output": {"text": "first"}, **cost("0")}, id="done-first", task_id="first")), "ann")
    woken = shell.wakes(T0 + timedelta(seconds=5))
    assert [(w.event.tenant, w.event.task_id) for w in woken] == [("acme", "second")]


def test_a_wait_for_room_survives_the_index_being_synced_and_checkpointed() -> None:
    shell, _, second = two_tasks(worst_case())
    entry = shell.index.open[("second", "draft")]
    assert entry.room == Room("tenant-day", "2025-03-01", worst_case()) and entry.retry
    shell.index.sync(second.state)  # the state has no room in it: the entry for the same retry keeps it
    assert shell.index.open[("second", "draft")].room == entry.room
    restored = DeadlineIndex()
    openwork.restore(restored, json.loads(json.dumps(openwork.entries(shell.index))))
    assert restored.open[("second", "draft")] == entry
    old = [{k: v for k, v in row.items() if k != "room"} for row in openwork.entries(shell.index)]
    openwork.restore(restored, old)  # a checkpoint saved before waits were woken: only the poll wakes it
    assert restored.open[("second", "draft")].room is None


def approved_then_day_wait(asked_once: bool) -> tuple[Run, list[Envelope]]:
    """An agent node a person approves when its day has no room; the retry comes once the day has room again."""
    run = Run()
    day = "2025-03-01"
    workflow = one_agent(approval="required").model_copy(update={"approval_answers_gate": asked_once})
    inp = accepted(workflow)
    run.feed(RouterInput(inp.event, inp.workflow, prices=PRICES, rooms=(DayRoom("tenant-day", day, Decimal(1),
                                                                                Decimal(1)),)))
    assert run.records[-1].type == "node.approval_requested"
    decided = envelope("node.approval_decided", {"node": "draft", "decision": "approve", "decided_by": "ann"},
                       id="decided", time=T0 + timedelta(seconds=10))
    out = run.feed(RouterInput(decided, rooms=(DayRoom("tenant-day", day, Decimal(1), Decimal(0)),)))  # no room
    assert types(out)[1:] == ["node.approved", "budget.exceeded", "node.retry_scheduled"]
    [scheduled] = of_type(out, "node.retry_scheduled")
    due = envelope("node.retry_due", {"node": "draft", "attempt": 1, "at": scheduled["at"]}, id="due",
                   time=T0 + timedelta(seconds=70))
    return run, run.feed(RouterInput(due, rooms=(DayRoom("tenant-day", day, Decimal(1), Decimal(1)),)))


def test_a_node_a_person_approved_is_not_asked_again_when_it_waits_for_a_day_budget() -> None:
    run, out = approved_then_day_wait(asked_once=True)
    assert types(out)[1:] == ["budget.reserved", "node.dispatched"]  # no second node.approval_requested
    assert len(of_type(run.records, "node.approval_requested")) == 1
    stored = json_round_trip(run.records)
    assert dumps(replay(stored)) == dumps(stored)


def test_a_task_pinned_before_approvals_were_asked_once_is_asked_again_and_replays_as_recorded() -> None:
    run, out = approved_then_day_wait(asked_once=False)
    assert types(out)[1:] == ["node.approval_requested"]
    assert len(of_type(run.records, "node.approval_requested")) == 2
    stored = json_round_trip(run.records)
    assert dumps(replay(stored)) == dumps(stored)
