"""Retries with exponential backoff and deterministic jitter: scheduled, then dispatched when due."""

from __future__ import annotations

from datetime import datetime, timedelta

from router_testkit import agent, chain, completed, envelope, errored, exit_, expired, manifest, started

from agent_engine.router.core import RouterInput, backoff_delay, decide, replay


def backoff_workflow(**kw: float) -> object:
    return manifest([agent("work", role="START", max_attempts=4, backoff_s=kw.get("backoff_s", 2.0),
                           backoff_max_s=kw.get("backoff_max_s", 5.0)), exit_("done")], chain("work", "done"))


def retry_due(node: str, attempt: int, id: str | None = None) -> RouterInput:
    return RouterInput(envelope("node.retry_due", {"node": node, "attempt": attempt}, id=id or f"due-{attempt}"))


def test_delays_grow_exponentially_are_capped_and_jitter_within_half_to_one() -> None:
    spec = backoff_workflow().node("work")  # type: ignore[attr-defined]
    delays = [backoff_delay(spec, "task-1", n) for n in (1, 2, 3, 4)]
    for n, delay in enumerate(delays, start=1):
        base = min(5.0, 2.0 * 2 ** (n - 1))
        assert base * 0.5 <= delay < base
    assert [backoff_delay(spec, "task-1", n) for n in (1, 2, 3, 4)] == delays  # deterministic
    assert backoff_delay(spec, "task-2", 1) != delays[0] or backoff_delay(spec, "task-3", 1) != delays[0]


def test_zero_backoff_retries_at_once() -> None:
    run = started(backoff_workflow(backoff_s=0.0))
    events = run.feed(errored(run.dispatch()))
    assert [e.type for e in events][1:] == ["node.dispatched"]


def test_a_retryable_error_schedules_the_retry_instead_of_dispatching() -> None:
    run = started(backoff_workflow())
    first = run.dispatch()
    events = run.feed(errored(first, "rate limited"))
    assert [e.type for e in events] == ["router.input", "node.retry_scheduled"]
    scheduled = events[1].data
    assert scheduled["attempt"] == 2 and 1.0 <= scheduled["delay_s"] < 2.0
    at = datetime.fromisoformat(scheduled["at"])
    assert at == events[1].time + timedelta(seconds=scheduled["delay_s"])
    assert run.state.nodes["work"].status == "retry_scheduled"


def test_the_retry_is_dispatched_when_due_and_only_once() -> None:
    run = started(backoff_workflow())
    run.feed(errored(run.dispatch(), "rate limited"))
    events = run.feed(retry_due("work", 2))
    assert [e.type for e in events] == ["router.input", "node.dispatched"]
    assert events[1].data["attempt"] == 2 and "rate limited" in events[1].data["reason"]
    assert decide(run.state, retry_due("work", 2, id="due-again")) == []
    assert decide(run.state, retry_due("work", 3)) == []


def test_a_deadline_expiry_also_backs_off() -> None:
    run = started(backoff_workflow())
    events = run.feed(expired(run.dispatch()))
    assert events[-1].type == "node.retry_scheduled" and "deadline" in events[-1].data["reason"]


def test_a_late_result_of_the_failed_attempt_during_backoff_settles_the_node() -> None:
    run = started(backoff_workflow())
    first = run.dispatch()
    run.feed(expired(first))
    events = run.feed(completed(first, {"text": "late but fine"}))
    assert [e.type for e in events][1:3] == ["node.succeeded", "task.succeeded"]
    assert decide(run.state, retry_due("work", 2)) == []


def test_a_backoff_history_replays_exactly() -> None:
    run = started(backoff_workflow())
    run.feed(errored(run.dispatch(), "rate limited"))
    run.feed(retry_due("work", 2))
    run.feed(completed(run.dispatch(), {"text": "ok"}))
    assert run.state.status == "succeeded"
    assert [r.model_dump(mode="json") for r in replay(run.records)] == [r.model_dump(mode="json") for r in run.records]
