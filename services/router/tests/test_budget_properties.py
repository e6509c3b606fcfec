"""Property test of the budget core, through the router's own decide and fold: random concurrent dispatches of
a task, random answers (with random actual costs up to each reservation), redeliveries, duplicate and late
results, deadlines and re-dispatch, crashes (the state rebuilt from the recorded events). Whatever happens,
spent + reserved never exceeds the budget, and every reservation is settled exactly once."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from decimal import Decimal
from itertools import count
from typing import Any

from budget_testkit import PRICES, Shell, budgeted, cost, of_type, parallel_wf, start
from hypothesis import event, given, settings
from hypothesis import strategies as st
from router_testkit import T0, Run, accepted, completed, dumps, envelope, errored, expired, json_round_trip

from agent_engine.contracts.envelope import Envelope
from agent_engine.router.core import RouterInput, fold, replay

LIMITS = ["0.03", "0.05", "0.07", "0.08", "0.1", "0.12", "0.3"]
"""One dispatch of the test agent reserves about 0.034: from none fitting to all of them at once."""


def answer(dispatch: Envelope, kind: str, share: Decimal, ids: count) -> RouterInput:
    """A runner's answer to a dispatch; an agent's costs `share` of its reservation (tools cost nothing)."""
    reserved = Decimal(dispatch.data.get("budget_usd", "0"))
    extra: dict[str, Any] = cost(reserved * share) if dispatch.data["kind"] == "agent" else {}
    rid = f"r-{next(ids)}"
    if kind == "complete":
        return completed(dispatch, id=rid, **extra)
    inp = errored(dispatch, retryable=kind == "retryable", id=rid)
    return RouterInput(inp.event.model_copy(update={"data": {**inp.event.data, **extra}}))


def check(run: Run, limit: Decimal) -> None:
    ledger = run.state.budget
    assert ledger is not None
    assert ledger.spent + ledger.reserved <= limit, (ledger.spent, ledger.reserved, limit)
    assert ledger.spent <= limit


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_spent_never_exceeds_the_budget_and_every_reservation_settles_exactly_once(data: Any) -> None:
    limit = data.draw(st.sampled_from(LIMITS), label="limit")
    wf = budgeted(parallel_wf(data.draw(st.integers(2, 4), label="workers"),
                              max_attempts=data.draw(st.integers(1, 3), label="attempts")),
                  limit, on_exceed=data.draw(st.sampled_from(["wait", "fail"]), label="on_exceed"))
    run = start(wf)
    ids = count()
    applied: list[RouterInput] = []
    shares = st.sampled_from([Decimal(0), Decimal("0.1"), Decimal("0.5"), Decimal("0.9"), Decimal(1)])
    for _ in range(80):
        if run.state.terminal:
            break
        dispatches = [r for r in run.records if r.type == "node.dispatched"]
        open_ids = {s.dispatch_id for _, s in run.state.open_dispatches()}
        current = [d for d in dispatches if d.data["dispatch_id"] in open_ids]
        action = data.draw(st.sampled_from(["answer", "answer", "answer", "expire", "redeliver", "duplicate",
                                            "crash"]), label="action")
        if action == "crash":  # the router restarts: its state is what the store's records fold to
            rebuilt = fold(json_round_trip(run.records))
            assert rebuilt.budget == run.state.budget
            run.state = rebuilt
        elif action == "redeliver" and applied:
            assert run.feed(data.draw(st.sampled_from(applied), label="again")) == []
        elif action == "duplicate" and dispatches:  # another answer to any dispatch so far (late, or a second one)
            target = data.draw(st.sampled_from(dispatches), label="late")
            run.feed(answer(target, "complete", data.draw(shares, label="share"), ids))
        elif current:
            target = data.draw(st.sampled_from(current), label="dispatch")
            agent = target.data["kind"] == "agent"  # the tools before the fan-out just work
            if action == "expire" and agent:
                inp = expired(target, id=f"x-{next(ids)}")
            else:
                kind = data.draw(st.sampled_from(["complete", "complete", "complete", "retryable", "fatal"]
                                                 if agent else ["complete"]), label="outcome")
                inp = answer(target, kind, data.draw(shares, label="share"), ids)
            if run.feed(inp):
                applied.append(inp)
        check(run, Decimal(limit))
    if not run.state.terminal:
        run.feed(RouterInput(envelope("task.cancel_requested", {"reason": "test over"}, id="cancel")))
    check(run, Decimal(limit))
    reservations = Counter(r["dispatch_id"] for r in of_type(run.records, "budget.reserved"))
    settlements = Counter(r["dispatch_id"] for r in of_type(run.records, "budget.settled"))
    assert set(reservations.values()) <= {1} and settlements == reservations
    exceeded = of_type(run.records, "budget.exceeded")
    event(f"reservations: {min(len(reservations), 5)}")
    event(f"waited: {any(e['then'] == 'wait' for e in exceeded)}, failed over: {any(e['then'] == 'fail' for e in exceeded)}")
    event(f"unanswered: {any(s['outcome'] == 'unanswered' for s in of_type(run.records, 'budget.settled'))}")
    assert run.state.budget is not None and not run.state.budget.open
    stored = json_round_trip(run.records)
    assert dumps(replay(stored)) == dumps(stored)


# --- day budgets: concurrent tasks of one tenant share them ---------------------------------------

@given(st.data())
@settings(max_examples=100, deadline=None)
def test_concurrent_tasks_of_a_tenant_never_overspend_its_day_budgets(data: Any) -> None:
    shell = Shell(Decimal(data.draw(st.sampled_from(["0.08", "0.15", "0.3"]), label="tenant day")),
                  Decimal(data.draw(st.sampled_from(["0.05", "0.1", "1"]), label="user day")))
    users = {}
    runs: dict[str, Run] = {}
    applied: list[tuple[str, RouterInput]] = []
    woke: list[str] = []
    ids = count()
    shares = st.sampled_from([Decimal(0), Decimal("0.5"), Decimal(1)])
    for i in range(data.draw(st.integers(2, 4), label="tasks")):
        task, user = f"task-{i}", data.draw(st.sampled_from(["ann", "bob"]), label="user")
        users[task] = user
        wf = budgeted(parallel_wf(2, max_attempts=2), "1", on_exceed=data.draw(st.sampled_from(["wait", "fail"]),
                                                                                  label="on_exceed"))
        inp = accepted(wf, id=f"accept-{i}", task_id=task)
        inp = replace(inp, prices=PRICES, event=inp.event.model_copy(
            update={"data": {**inp.event.data, "requested_by": user}}))
        runs[task] = Run()
        shell.feed(runs[task], inp, user)
    for _ in range(120):
        live = [t for t, r in runs.items() if not r.state.terminal]
        if not live:
            break
        task = data.draw(st.sampled_from(live), label="task")
        run, user = runs[task], users[task]
        dispatches = [r for r in run.records if r.type == "node.dispatched"]
        open_ids = {s.dispatch_id for _, s in run.state.open_dispatches()}
        current = [d for d in dispatches if d.data["dispatch_id"] in open_ids]
        action = data.draw(st.sampled_from(["answer", "answer", "answer", "expire", "redeliver", "late", "crash",
                                            "tick", "wake"]), label="action")
        due = [(n, s) for n, s in run.state.nodes.items() if s.status == "retry_scheduled"]
        if action == "crash":
            run.state = fold(json_round_trip(run.records))
            shell.crash()
        elif action == "tick" and due:  # the router's timer: a node waiting for a day budget tries again
            node, waiting = data.draw(st.sampled_from(due), label="due")
            assert waiting.deadline is not None
            shell.feed(run, RouterInput(envelope("node.retry_due", {
                "node": node, "attempt": waiting.attempts + 1, "at": waiting.deadline.isoformat()},
                id=f"due-{next(ids)}", task_id=task, time=waiting.deadline)), user)
        elif action == "wake":  # the timers: nodes whose room a settlement freed try again before their poll
            for wake in shell.wakes(T0):
                woken = runs[wake.event.task_id]
                assert woken.state.nodes[wake.event.data["node"]].status == "retry_scheduled"
                out = shell.feed(woken, wake, users[wake.event.task_id])
                assert {"budget.reserved", "budget.exceeded"} & {r.type for r in out}, out  # taken as its retry
                woke.append(wake.event.task_id)
        elif action == "redeliver" and applied:
            again_task, again = data.draw(st.sampled_from(applied), label="again")
            assert shell.feed(runs[again_task], again, users[again_task]) == []
        elif action == "late" and dispatches:
            shell.feed(run, answer(data.draw(st.sampled_from(dispatches), label="late"), "complete",
                                   data.draw(shares, label="share"), ids), user)
        elif current:
            target = data.draw(st.sampled_from(current), label="dispatch")
            agent = target.data["kind"] == "agent"
            if action == "expire" and agent:
                inp = expired(target, id=f"x-{next(ids)}")
            else:
                kind = data.draw(st.sampled_from(["complete", "complete", "retryable"] if agent else ["complete"]),
                                 label="outcome")
                inp = answer(target, kind, data.draw(shares, label="share"), ids)
            if shell.feed(run, inp, user):
                applied.append((task, inp))
        shell.check()
    for task, run in runs.items():
        if not run.state.terminal:
            shell.feed(run, RouterInput(envelope("task.cancel_requested", {"reason": "over"}, id=f"cancel-{task}",
                                                 task_id=task)), users[task])
    shell.check()
    reserved = Counter(r.data["dispatch_id"] for run in runs.values() for r in run.records
                       if r.type == "budget.reserved")
    settled = Counter(r.data["dispatch_id"] for run in runs.values() for r in run.records
                      if r.type == "budget.settled")
    assert set(reserved.values()) <= {1} and settled == reserved
    for key, state in shell.states.items():
        assert not state.open, key  # every reservation released from its day too
        costs = [r.data["cost_usd"] for r in shell.logs[key] if r.type == "budget.settled"]
        assert state.spent == sum((Decimal(c) for c in costs), Decimal(0))
    event(f"day reservations: {min(sum(1 for log in shell.logs.values() for r in log if r.type == 'budget.reserved'), 9)}")
    event(f"day waited: {any(r.data.get('scope') != 'task' and r.data['then'] == 'wait' for run in runs.values() for r in run.records if r.type == 'budget.exceeded')}")
    event(f"woken before the poll: {bool(woke)}")
    event(f"day exceeded: {any(r.data.get('scope') != 'task' for run in runs.values() for r in run.records if r.type == 'budget.exceeded')}")
