"""Scheduling (R10): per-tenant limits on running tasks, a bounded queue ordered by priority then
arrival, refusals with a reason; and the task side of it: queued, admitted, cancelled while queued."""

from __future__ import annotations

import pytest
from router_testkit import Run, accepted, completed, dumps, envelope, json_round_trip, linear_workflow, types

from agent_engine.contracts.envelope import Envelope
from agent_engine.router.admission import Admission, Limits, TenantState, admit, evolve_tenant, release
from agent_engine.router.core import RouterInput, apply, evolve, fold, replay
from agent_engine.router.state import TaskState

LIMITS = Limits(max_running=2, max_queued=2)


def log(state: TenantState, task_id: str, data: object) -> TenantState:
    return evolve_tenant(state, Envelope(id=f"r-{task_id}-{state.version}", source="t", type=data.TYPE,  # type: ignore[attr-defined]
                                         time=envelope("x", {}, id="x").time, tenant="acme", task_id=task_id,
                                         correlation_id="c", data=data.model_dump(mode="json")))  # type: ignore[attr-defined]


def submit(state: TenantState, task_id: str, priority: int = 0) -> tuple[TenantState, Admission]:
    admission, data = admit(state, LIMITS, "acme", task_id, priority)
    return (log(state, task_id, data) if data is not None else state), admission


def test_tasks_start_up_to_the_limit_then_queue_then_are_refused_with_the_reason() -> None:
    state = TenantState()
    state, a = submit(state, "t1")
    state, b = submit(state, "t2")
    state, c = submit(state, "t3")
    state, d = submit(state, "t4", priority=5)
    state, e = submit(state, "t5")
    assert [x.decision for x in (a, b, c, d, e)] == ["start", "start", "queue", "queue", "reject"]
    assert (c.position, d.position) == (1, 1)  # the higher priority goes ahead of t3
    assert "queued at position 1 of 2" in d.reason
    assert e.reason == ("tenant 'acme' has 2 running task(s) (limit 2) and 2 queued (limit 2); submit again later")
    assert [q[2] for q in state.queued] == ["t4", "t3"]


def test_an_ended_task_frees_its_place_for_the_first_queued_one() -> None:
    state = TenantState()
    for task_id, priority in (("t1", 0), ("t2", 0), ("t3", 0), ("t4", 5)):
        state, _ = submit(state, task_id, priority)
    out = release(state, LIMITS, "t1", "succeeded")
    assert [(t, d.TYPE) for t, d in out] == [("t1", "tenant.released"), ("t4", "tenant.admitted")]
    for task_id, data in out:
        state = log(state, task_id, data)
    assert state.running == {"t2", "t4"} and [q[2] for q in state.queued] == ["t3"]
    # a queued task that is cancelled leaves the queue; an unknown one changes nothing
    assert [d.TYPE for _, d in release(state, LIMITS, "t3", "cancelled")] == ["tenant.released"]
    assert release(state, LIMITS, "nobody", "failed") == []


def test_a_raised_or_lifted_limit_lets_more_queued_tasks_start_when_one_ends() -> None:
    state = TenantState()
    for task_id in ("r1", "r2", "q1", "q2"):
        state, _ = submit(state, task_id)
    admitted = [t for t, d in release(state, Limits(max_running=4, max_queued=2), "r1", "succeeded")
                if d.TYPE == "tenant.admitted"]
    assert admitted == ["q1", "q2"]
    lifted = [t for t, d in release(state, Limits(max_running=0), "r1", "succeeded") if d.TYPE == "tenant.admitted"]
    assert lifted == ["q1", "q2"]


def test_equal_priorities_start_in_arrival_order() -> None:
    state = TenantState()
    for task_id in ("r1", "r2", "q1", "q2"):
        state, _ = submit(state, task_id)
    nxt = [t for t, d in release(state, LIMITS, "r1", "succeeded") if d.TYPE == "tenant.admitted"]
    assert nxt == ["q1"]


@pytest.mark.parametrize(("raw", "problem"), [("acme=x:1", "not valid"), ("acme=-1:2", "negative")])
def test_limits_from_the_environment_name_what_is_wrong(raw: str, problem: str) -> None:
    with pytest.raises(SystemExit, match=problem):
        Limits.parse("", "", raw)


def test_limits_parse_defaults_and_per_tenant_pairs() -> None:
    limits = Limits.parse("3", "", "acme=5:50, beta=2")
    assert limits == {"": Limits(3, 100), "acme": Limits(5, 50), "beta": Limits(2, 100)}


# --- the task's side ------------------------------------------------------------------------

def test_a_queued_task_waits_then_starts_when_admitted_and_replays() -> None:
    wf = linear_workflow()
    run = Run()
    inp = accepted(wf)
    out = run.feed(RouterInput(inp.event, inp.workflow, admission=Admission("queue", "at the limit", 1)))
    assert types(out) == ["router.input", "task.queued"]
    assert run.state.status == "queued" and run.state.open_dispatches() == []
    started = run.feed(RouterInput(envelope("task.admitted", {"reason": "a slot freed"}, id="admit-1")))
    assert types(started) == ["router.input", "task.started", "node.dispatched"]
    assert started[1].data["revision"] == inp.workflow.revision  # pinned when it was queued
    run.feed(completed(run.dispatch()))
    assert run.feed(RouterInput(envelope("task.admitted", {"reason": "again"}, id="admit-2"))) == []
    assert dumps(replay(json_round_trip(run.records))) == dumps(run.records)
    assert fold(json_round_trip(run.records)) == run.state


def test_a_refused_task_is_rejected_with_the_reason_and_a_queued_one_can_be_cancelled() -> None:
    inp = accepted(linear_workflow())
    _, out = apply(TaskState(), RouterInput(inp.event, inp.workflow, admission=Admission("reject", "queue full")))
    assert types(out) == ["router.input", "task.rejected"] and out[1].data["reason"] == "queue full"

    run = Run()
    run.feed(RouterInput(inp.event, inp.workflow, admission=Admission("queue", "wait", 1)))
    cancelled = run.feed(RouterInput(envelope("task.cancel_requested", {"reason": "no"}, id="c-1")))
    assert types(cancelled) == ["router.input", "task.cancelled"]
    assert run.feed(RouterInput(envelope("task.admitted", {"reason": "late"}, id="admit-3"))) == []


def test_a_tenant_record_makes_its_aggregate_unusable_as_a_task() -> None:
    record = envelope("tenant.admitted", {"running": 1, "max_running": 2}, id="r-1")
    state = evolve(TaskState(), record)
    assert state.status == "reserved"
    assert apply(state, accepted(linear_workflow()))[1] == []
