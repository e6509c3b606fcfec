"""Pauses for a person (G6): a node failing N times in a row, or answering with a confidence below its
threshold, puts the task in `waiting`; approve resumes it (fresh attempts, or the held output accepted),
reject fails the node. Redeliveries change nothing and every history replays exactly."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from router_testkit import agent, chain, completed, envelope, errored, exit_, expired, manifest, started, tool, types

from agent_engine.contracts.manifest import ConfidenceRule, PauseSpec, ToolSpec
from agent_engine.router.core import RouterInput, decide, replay

TOOLS = {"fetch": ToolSpec(builtin="http_fetch")}


def failing_workflow(after: int = 3, attempts: int = 3) -> Any:
    """fetch (START tool, pauses after `after` failures) -> done."""
    return manifest([tool("fetch", role="START", tool_name="fetch", args={"url": "https://x.test"},
                          max_attempts=attempts, pause=PauseSpec(after_failures=after)), exit_("done")],
                    chain("fetch", "done"), tools=TOOLS)


def doubtful_workflow(below: float = 0.6, field: str = "confidence") -> Any:
    """judge (START agent, pauses below a confidence) -> done."""
    return manifest([agent("judge", role="START", pause=PauseSpec(confidence=ConfidenceRule(field=field,
                                                                                             below=below))),
                     exit_("done")], chain("judge", "done"))


def decision(node: str, choice: str, *, id: str = "decide-1", by: str = "alice", reason: str = "",
             args: dict[str, Any] | None = None) -> RouterInput:
    data: dict[str, Any] = {"node": node, "decision": choice, "decided_by": by, "reason": reason}
    if args is not None:
        data["args"] = args
    return RouterInput(envelope("node.approval_decided", data, id=id))


def fail_times(run: Any, n: int) -> None:
    for i in range(n):
        run.feed(errored(run.dispatch(), f"connection refused {i}", id=f"err-{run.dispatch().data['attempt']}-{i}"))


def test_three_failures_in_a_row_pause_the_task_instead_of_failing_it() -> None:
    run = started(failing_workflow())
    fail_times(run, 3)
    pause = run.records[-1]
    assert pause.type == "node.approval_requested"
    assert pause.data["pause"] == "failures" and pause.data["node"] == "fetch"
    assert "3 failed attempts in a row" in pause.data["reason"] and "connection refused 2" in pause.data["reason"]
    assert run.state.status == "waiting" and run.state.nodes["fetch"].status == "awaiting_approval"
    assert "node.failed" not in types(run.records)


def test_approve_resumes_with_fresh_attempts_and_the_task_can_succeed() -> None:
    run = started(failing_workflow())
    fail_times(run, 3)
    events = run.feed(decision("fetch", "approve"))
    assert types(events) == ["router.input", "node.approved", "node.dispatched"]
    again = events[-1].data
    assert again["attempt"] == 4 and "resumed by alice after 3 failures" in again["reason"]
    fail_times(run, 2)  # two more failures: under the limit again, so retried, not paused
    assert run.state.status == "running" and run.dispatch().data["attempt"] == 6
    run.feed(completed(run.dispatch(), {"status": 200}))
    assert run.state.status == "succeeded"


def test_failing_again_after_a_resume_pauses_again() -> None:
    run = started(failing_workflow())
    fail_times(run, 3)
    run.feed(decision("fetch", "approve"))
    fail_times(run, 3)
    assert run.records[-1].data["pause"] == "failures" and run.state.status == "waiting"


def test_reject_fails_the_node_and_the_task_naming_who_and_why() -> None:
    run = started(failing_workflow())
    fail_times(run, 3)
    events = run.feed(decision("fetch", "reject", by="bob", reason="the site is gone"))
    assert types(events) == ["router.input", "node.failed", "task.failed"]
    assert events[1].data["reason"] == "rejected by bob: the site is gone"


def test_a_pause_earlier_than_max_attempts_then_retries_to_the_fresh_limit() -> None:
    run = started(failing_workflow(after=1, attempts=2))
    fail_times(run, 1)
    assert run.state.status == "waiting"
    run.feed(decision("fetch", "approve"))
    assert run.dispatch().data["attempt"] == 2


def test_without_a_pause_the_node_fails_after_its_attempts_as_before() -> None:
    run = started(failing_workflow(after=5, attempts=3))
    fail_times(run, 3)
    assert types(run.records)[-2:] == ["node.failed", "task.failed"]


def test_deadlines_count_as_failures() -> None:
    run = started(failing_workflow(after=2))
    run.feed(expired(run.dispatch()))
    run.feed(expired(run.dispatch()))
    assert run.records[-1].data["pause"] == "failures" and "deadline" in run.records[-1].data["reason"]


def test_a_non_retryable_error_pauses_when_it_reaches_the_limit() -> None:
    run = started(failing_workflow(after=1))
    run.feed(errored(run.dispatch(), "401 unauthorized", retryable=False))
    assert run.records[-1].data["pause"] == "failures" and run.state.status == "waiting"


def test_an_output_below_its_confidence_is_held_for_a_person() -> None:
    run = started(doubtful_workflow())
    events = run.feed(completed(run.dispatch(), {"verdict": "ok", "confidence": 0.4}))
    assert types(events) == ["router.input", "node.approval_requested"]
    pause = events[-1].data
    assert pause["pause"] == "confidence" and pause["reason"] == "'confidence' is 0.4, below 0.6 (pause.confidence)"
    assert pause["held"]["output"] == {"verdict": "ok", "confidence": 0.4}
    assert "node.succeeded" not in types(run.records) and run.state.status == "waiting"


def test_approving_accepts_the_held_output_and_the_task_goes_on() -> None:
    run = started(doubtful_workflow())
    run.feed(completed(run.dispatch(), {"verdict": "ok", "confidence": 0.4}))
    events = run.feed(decision("judge", "approve"))
    assert types(events)[:3] == ["router.input", "node.approved", "node.succeeded"]
    assert events[2].data["output"] == {"verdict": "ok", "confidence": 0.4}
    assert run.state.status == "succeeded"


def test_rejecting_a_doubtful_output_fails_the_task() -> None:
    run = started(doubtful_workflow())
    run.feed(completed(run.dispatch(), {"confidence": 0.1}))
    assert types(run.feed(decision("judge", "reject", reason="wrong")))[1:] == ["node.failed", "task.failed"]


def test_a_held_output_cannot_be_approved_with_edits() -> None:
    run = started(doubtful_workflow())
    run.feed(completed(run.dispatch(), {"confidence": 0.1}))
    events = run.feed(decision("judge", "approve", args={"x": 1}))
    assert types(events) == ["router.input", "node.approval_refused"] and run.state.status == "waiting"


@pytest.mark.parametrize(("output", "why"), [
    ({"confidence": 0.9}, None),
    ({"confidence": 0.6}, None),
    ({"confidence": 0.59}, "'confidence' is 0.59, below 0.6"),
    ({"verdict": "ok"}, "no number at 'confidence'"),
    ({"confidence": "high"}, "no number at 'confidence'"),
    ({"confidence": True}, "no number at 'confidence'"),
])
def test_what_counts_as_confident(output: dict[str, Any], why: str | None) -> None:
    run = started(doubtful_workflow())
    run.feed(completed(run.dispatch(), output))
    if why is None:
        assert run.state.status == "succeeded"
    else:
        assert why in run.records[-1].data["reason"]


def test_a_nested_confidence_field() -> None:
    run = started(doubtful_workflow(field="review.score", below=3))
    run.feed(completed(run.dispatch(), {"review": {"score": 2}}))
    assert run.records[-1].data["reason"] == "'review.score' is 2, below 3 (pause.confidence)"


def test_redelivered_inputs_change_nothing_while_paused() -> None:
    run = started(failing_workflow(after=1))
    failure = errored(run.dispatch(), "boom")
    run.feed(failure)
    assert decide(run.state, failure) == []
    run.feed(decision("fetch", "approve"))
    assert decide(run.state, decision("fetch", "approve")) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["fail", "late", "approve", "reject", "done"]), min_size=1, max_size=25),
       st.integers(1, 3), st.integers(1, 4))
def test_any_history_of_failures_pauses_and_decisions_replays_exactly(
        steps: list[str], after: int, attempts: int) -> None:
    run = started(failing_workflow(after=after, attempts=attempts))
    for i, step in enumerate(steps):
        if run.state.terminal:
            break
        node = run.state.nodes["fetch"]
        if node.status == "awaiting_approval":
            if step in ("approve", "reject"):
                run.feed(decision("fetch", step, id=f"d{i}", reason="no"))
            continue
        if node.status != "dispatched":
            continue
        if step == "done":
            run.feed(completed(run.dispatch(), {"ok": True}, id=f"c{i}"))
        elif step == "late":
            run.feed(expired(run.dispatch(), id=f"x{i}"))
        elif step == "fail":
            run.feed(errored(run.dispatch(), id=f"e{i}"))
        node = run.state.nodes["fetch"]
        assert node.attempts - node.resumed_at <= max(after, attempts), "a node never runs past its limits"
    assert [r.model_dump(mode="json") for r in replay(run.records)] == [r.model_dump(mode="json") for r in run.records]


def test_a_tool_node_resumed_after_failures_may_run_with_edited_arguments() -> None:
    run = started(failing_workflow())
    fail_times(run, 3)
    events = run.feed(decision("fetch", "approve", args={"url": "https://mirror.test"}))
    assert events[1].data["edited"] is True and events[-1].data["tool"]["args"] == {"url": "https://mirror.test"}


def test_a_tool_node_resumed_after_failures_is_a_new_call_for_the_call_log() -> None:
    run = started(failing_workflow())
    assert "resumed" not in run.dispatch().data["tool"]
    fail_times(run, 3)
    run.feed(decision("fetch", "approve"))
    assert run.dispatch().data["tool"]["resumed"] == 3  # a side-effecting tool runs again: the person chose it
    fail_times(run, 1)
    assert run.dispatch().data["tool"]["resumed"] == 3  # retries after the resume are the same call
