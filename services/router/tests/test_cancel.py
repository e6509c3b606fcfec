"""Cancelling a task: it stops, running nodes are marked, late results are recorded once and unused."""

from __future__ import annotations

from router_testkit import completed, envelope, errored, expired, review_workflow, started

from agent_engine.router.core import RouterInput, decide, replay


def cancel(id: str = "cancel-1", reason: str = "customer withdrew") -> RouterInput:
    return RouterInput(envelope("task.cancel_requested", {"reason": reason, "requested_by": "ops"}, id=id))


def test_cancel_stops_a_running_task_and_names_the_running_nodes() -> None:
    run = started(review_workflow())
    events = run.feed(cancel())
    assert [e.type for e in events] == ["router.input", "task.cancelled"]
    assert events[1].data == {"reason": "customer withdrew", "requested_by": "ops", "open_nodes": ["draft"]}
    assert run.state.status == "cancelled" and run.state.terminal
    assert run.state.nodes["draft"].status == "cancelled"


def test_a_result_that_arrives_after_cancel_is_recorded_once_and_not_used() -> None:
    run = started(review_workflow())
    draft = run.dispatch()
    run.feed(cancel())
    events = run.feed(completed(draft, {"text": "too late"}))
    assert [e.type for e in events] == ["router.input", "node.result_ignored"]
    assert "cancelled" in events[1].data["reason"]
    assert run.state.nodes["draft"].output is None
    assert run.feed(errored(draft, id="err-after")) == []  # the same dispatch again: absorbed
    assert decide(run.state, completed(draft, {"text": "again"}, id="done-again")) == []


def test_nothing_is_dispatched_after_cancel() -> None:
    run = started(review_workflow())
    draft = run.dispatch()
    run.feed(cancel())
    run.feed(completed(draft))
    assert decide(run.state, expired(draft)) == []
    assert [r for r in run.records if r.type == "node.dispatched"] == [draft]


def test_cancelling_a_finished_or_unknown_task_changes_nothing() -> None:
    run = started(review_workflow())
    run.feed(cancel())
    assert decide(run.state, cancel(id="cancel-2")) == []
    from agent_engine.router.state import TaskState

    assert decide(TaskState(), cancel(id="cancel-3")) == []


def test_a_cancelled_history_replays_exactly() -> None:
    run = started(review_workflow())
    draft = run.dispatch()
    run.feed(cancel())
    run.feed(completed(draft, {"text": "late"}))
    assert [r.model_dump(mode="json") for r in replay(run.records)] == [r.model_dump(mode="json") for r in run.records]
