"""decide(state, input) -> events: what the router does for each kind of input."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import jsonschema
import pytest
from router_testkit import (
    CORRELATION,
    T0,
    TASK,
    TASK_INPUT,
    TENANT,
    Run,
    accepted,
    agent,
    chain,
    completed,
    dumps,
    edge,
    envelope,
    errored,
    exit_,
    expired,
    manifest,
    only,
    review_workflow,
    started,
    tool,
    types,
)

from agent_engine.contracts.envelope import CONTRACT_VERSION, derive_id
from agent_engine.contracts.events import (
    NodeContext,
    NodeDispatched,
    TaskStarted,
    Usage,
)
from agent_engine.contracts.export import schemas
from agent_engine.contracts.manifest import ToolSpec
from agent_engine.router import ENGINE_VERSION
from agent_engine.router.core import (
    SOURCE,
    RouterInput,
    decide,
    evolve,
    resolve_args,
    usage_total,
)
from agent_engine.router.state import TaskState


def linear(**start_kw: object) -> Run:
    """A started task on start (agent) -> middle (agent) -> finish (agent) -> done."""
    wf = manifest([agent("start", role="START", **start_kw), agent("middle"), agent("finish"), exit_("done")],
                  chain("start", "middle", "finish", "done"))
    return started(wf)


def at_review(review_edges: list | None = None, **review_kw: object) -> Run:
    """A started review workflow whose draft succeeded: the review node is dispatched."""
    run = started(review_workflow(*(review_edges or []), **review_kw))
    run.feed(completed(run.dispatch("draft"), {"text": "a draft"}))
    assert run.dispatch().data["node"] == "review"
    return run


# --- task.accepted ----------------------------------------------------------------------------

def test_accepted_starts_the_task_pinning_revision_and_versions() -> None:
    wf = review_workflow()
    events = decide(TaskState(), accepted(wf, revision="rev-42"))

    assert types(events) == ["task.started", "node.dispatched"]
    start = TaskStarted.model_validate(events[0].data)
    assert start.workflow == "wf"
    assert start.revision == "rev-42"
    assert start.engine_version == ENGINE_VERSION
    assert start.contract_version == CONTRACT_VERSION
    assert start.input == TASK_INPUT
    assert start.workflow_manifest == wf


def test_accepted_dispatches_the_start_node_with_attempt_one_and_a_deadline() -> None:
    wf = manifest([agent("first", role="START", timeout_s=45), exit_("done")], chain("first", "done"))
    events = decide(TaskState(), accepted(wf, {"q": 1}))

    dispatch = NodeDispatched.model_validate(events[1].data)
    assert dispatch.node == "first"
    assert dispatch.attempt == 1
    assert dispatch.reason == "start"
    assert dispatch.deadline == T0 + timedelta(seconds=45)
    assert dispatch.dispatch_id == derive_id(TASK, "first", 1)
    assert dispatch.context == NodeContext(input={"q": 1}, upstream={})


def test_decisions_carry_envelope_fields_from_the_input() -> None:
    inp = accepted(review_workflow(), id="accept-9")
    events = decide(TaskState(), inp)

    for index, event in enumerate(events):
        assert event.id == derive_id("accept-9", index)
        assert event.source == SOURCE
        assert event.time == T0
        assert (event.tenant, event.task_id, event.correlation_id) == (TENANT, TASK, CORRELATION)
        assert event.causation_id == "accept-9"


def test_agent_dispatch_carries_agent_config_output_schema_and_mock_script() -> None:
    script = [{"verdict": "reject"}, {"verdict": "approve"}]
    wf = manifest([agent("judge_it", role="START", agent_name="judge"), exit_("done")], chain("judge_it", "done"),
                  mock={"judge_it": script})
    dispatch = only(decide(TaskState(), accepted(wf)), "node.dispatched").data

    assert dispatch["kind"] == "agent"
    assert "tool" not in dispatch
    assert dispatch["agent"]["name"] == "judge"
    assert dispatch["agent"]["model"] == "m-2"
    assert dispatch["agent"]["prompt"] == "judge"
    assert dispatch["agent"]["output_schema"] == "verdict"
    assert dispatch["agent"]["output_schema_json"] == {"type": "object", "properties": {"verdict": {"type": "string"}}}
    assert dispatch["agent"]["mock_responses"] == script


def test_tool_dispatch_resolves_input_references_and_keeps_literals() -> None:
    args = {"text": "$input.topic", "level": "$input.depth.level", "limit": 5, "mode": "plain $input.topic"}
    wf = manifest([tool("fetch", role="START", args=args), exit_("done")], chain("fetch", "done"))
    dispatch = only(decide(TaskState(), accepted(wf)), "node.dispatched").data

    assert dispatch["kind"] == "tool"
    assert "agent" not in dispatch
    assert dispatch["tool"] == {
        "name": "echo", "builtin": "echo",
        "args": {"text": "event sourcing", "level": 2, "limit": 5, "mode": "plain $input.topic"},
    }


def test_tool_dispatch_carries_side_effects_only_when_the_manifest_declares_them() -> None:
    tools = {"echo": ToolSpec(builtin="echo"), "append": ToolSpec(builtin="workspace_append", side_effects=True)}
    wf = manifest([tool("write", role="START", tool_name="append"), tool("read"), exit_("done")],
                  chain("write", "read", "done"), tools=tools)
    run = Run()
    first = only(run.feed(accepted(wf)), "node.dispatched")
    assert first.data["tool"]["side_effects"] is True
    second = only(run.feed(completed(first, {"ok": True})), "node.dispatched")
    assert "side_effects" not in second.data["tool"]  # absent, not false: older dispatches stay identical


def test_start_tool_with_a_missing_input_reference_fails_node_and_task() -> None:
    wf = manifest([tool("fetch", role="START", args={"text": "$input.brief"}), exit_("done")],
                  chain("fetch", "done"))
    run = Run()
    events = run.feed(accepted(wf, {"topic": "x"}))

    assert types(events) == ["router.input", "task.started", "node.failed", "task.failed"]
    failed = only(events, "node.failed").data
    assert failed["node"] == "fetch"
    assert failed["attempt"] == 1
    assert failed["reason"] == "argument 'text' refers to $input.brief, which the task does not have"
    assert only(events, "task.failed").data["reason"] == f"node 'fetch' failed: {failed['reason']}"
    assert run.state.status == "failed"
    assert run.state.nodes["fetch"].status == "failed"


def test_unknown_workflow_is_rejected_by_the_router_with_a_how_to() -> None:
    events = decide(TaskState(), accepted(None, workflow="summarise"))

    assert types(events) == ["task.rejected"]
    data = events[0].data
    assert data["stage"] == "router"
    assert data["workflow"] == "summarise"
    assert "'summarise'" in data["reason"]
    assert f"'{TENANT}'" in data["reason"]
    assert "agentctl workflow push" in data["reason"]


def test_rejected_task_stays_rejected_when_the_workflow_appears_later() -> None:
    run = Run()
    run.feed(accepted(None, workflow="wf"))
    assert run.state.status == "rejected"

    assert decide(run.state, accepted(review_workflow(), id="accept-2")) == []


# --- duplicates, stale and late inputs --------------------------------------------------------

def test_same_input_twice_is_absorbed() -> None:
    run = Run()
    inp = accepted(review_workflow())
    assert run.feed(inp)
    assert decide(run.state, inp) == []

    done = completed(run.dispatch(), {"text": "draft"})
    assert run.feed(done)
    assert decide(run.state, done) == []


def test_an_input_id_already_applied_is_absorbed_whatever_it_says() -> None:
    """The applied-id check alone absorbs a redelivery, even one the node bookkeeping would accept."""
    run = started(review_workflow())
    state = replace(run.state, applied=run.state.applied | {"seen-before"})
    assert decide(state, completed(run.dispatch(), id="seen-before")) == []
    assert decide(state, completed(run.dispatch(), id="not-seen"))


def test_second_accept_for_an_existing_task_is_absorbed() -> None:
    run = started(review_workflow())
    assert decide(run.state, accepted(review_workflow(), id="accept-again", revision="rev-2")) == []


def test_redelivered_input_is_absorbed_even_after_the_task_moved_on() -> None:
    run = started(review_workflow())
    first = errored(run.dispatch(), retryable=True)
    run.feed(first)
    run.feed(completed(run.dispatch(), {"text": "draft"}))

    assert decide(run.state, first) == []


def test_late_completion_of_an_earlier_attempt_settles_the_open_node() -> None:
    run = started(review_workflow())
    attempt1 = run.dispatch()
    run.feed(expired(attempt1))
    attempt2 = run.dispatch()
    assert attempt2.data["attempt"] == 2

    events = decide(run.state, completed(attempt1, {"text": "late"}))
    assert [e.type for e in events][:1] == ["node.succeeded"]
    assert events[0].data["attempt"] == 1 and events[0].data["output"] == {"text": "late"}
    run.feed(completed(attempt1, {"text": "late"}))
    assert decide(run.state, completed(attempt2, {"text": "current"})) == []  # now the current one is stale


def test_completion_for_an_earlier_attempt_of_a_settled_node_is_absorbed() -> None:
    run = started(review_workflow())
    attempt1 = run.dispatch()
    run.feed(expired(attempt1))
    run.feed(completed(run.dispatch(), {"text": "current"}))
    assert decide(run.state, completed(attempt1, {"text": "late"})) == []


def test_completion_with_an_unknown_dispatch_id_is_absorbed() -> None:
    run = started(review_workflow())
    bogus = run.dispatch().model_copy(update={"data": {**run.dispatch().data, "dispatch_id": "not-ours"}})
    assert decide(run.state, completed(bogus)) == []


@pytest.mark.parametrize("node", ["review", "approved", "nonexistent"])
def test_completion_for_a_node_that_is_not_dispatched_is_absorbed(node: str) -> None:
    run = started(review_workflow())
    draft = run.dispatch()
    other = draft.model_copy(update={"data": {**draft.data, "node": node}})
    assert decide(run.state, completed(other)) == []


def test_completion_after_the_node_succeeded_is_absorbed() -> None:
    run = started(review_workflow())
    draft = run.dispatch()
    run.feed(completed(draft, {"text": "v1"}))

    assert decide(run.state, completed(draft, {"text": "v2"}, id="done-again")) == []


def test_node_inputs_for_a_task_that_never_started_are_absorbed() -> None:
    dispatch = started(review_workflow()).dispatch()
    fresh = TaskState()
    assert decide(fresh, completed(dispatch)) == []
    assert decide(fresh, errored(dispatch)) == []
    assert decide(fresh, expired(dispatch)) == []


@pytest.mark.parametrize("verdict", ["approve", "reject"])
def test_anything_after_a_terminal_status_is_absorbed(verdict: str) -> None:
    run = at_review()
    review = run.dispatch()
    run.feed(completed(review, {"verdict": verdict}))
    assert run.state.terminal

    assert decide(run.state, completed(review, {"verdict": verdict}, id="done-again")) == []
    assert decide(run.state, errored(review)) == []
    assert decide(run.state, expired(review)) == []
    assert decide(run.state, accepted(review_workflow(), id="accept-again")) == []


def test_a_dispatch_open_when_the_task_ended_is_abandoned_and_its_result_only_recorded() -> None:
    """A dispatch still open when the task ended (another branch reached an EXIT) must not revive it."""
    run = started(review_workflow())
    draft = run.dispatch()
    ended = evolve(run.state, envelope("task.failed", {"status": "failed", "reason": "stopped"}, id="stop"))
    assert ended.nodes["draft"].status == "abandoned"

    late = decide(ended, completed(draft))
    assert [e.type for e in late] == ["node.result_ignored"]
    assert "had ended (failed)" in late[0].data["reason"]
    assert [e.type for e in decide(ended, errored(draft))] == ["node.result_ignored"]
    assert decide(ended, expired(draft)) == []


def test_inputs_after_a_failed_task_are_absorbed() -> None:
    run = started(review_workflow())
    draft = run.dispatch()
    run.feed(errored(draft, retryable=False))
    assert run.state.status == "failed"

    assert decide(run.state, completed(draft)) == []
    assert decide(run.state, expired(draft)) == []


@pytest.mark.parametrize("type_", ["task.requested", "node.dispatched", "node.succeeded", "llm.called", "x.y"])
def test_inputs_of_other_types_are_ignored(type_: str) -> None:
    run = started(review_workflow())
    d = run.dispatch().data
    data = {"dispatch_id": d["dispatch_id"], "node": "draft", "attempt": 1, "output": {}, "workflow": "wf"}
    assert decide(run.state, RouterInput(envelope(type_, data, id="other-1"))) == []
    assert decide(TaskState(), RouterInput(envelope(type_, data, id="other-2"))) == []


# --- node.completed ---------------------------------------------------------------------------

def test_completion_records_success_and_dispatches_the_next_node() -> None:
    run = linear()
    start = run.dispatch()
    usage = {"input_tokens": 10, "output_tokens": 3, "cache_read_tokens": 0, "cache_write_tokens": 0}
    done = completed(start, {"text": "hello"}, provider="mock", model="m-1", usage=usage)
    events = decide(run.state, done)

    assert types(events) == ["node.succeeded", "node.dispatched"]
    assert events[0].data == {
        "dispatch_id": start.data["dispatch_id"], "node": "start", "attempt": 1, "output": {"text": "hello"},
        "provider": "mock", "model": "m-1", "usage": usage,
    }
    nxt = NodeDispatched.model_validate(events[1].data)
    assert nxt.node == "middle"
    assert nxt.attempt == 1
    assert nxt.reason == "next"
    assert nxt.dispatch_id == derive_id(TASK, "middle", 1)
    assert nxt.deadline == done.event.time + timedelta(seconds=60)
    assert nxt.context == NodeContext(input=TASK_INPUT, upstream={"start": {"text": "hello"}})


def test_upstream_carries_every_earlier_output() -> None:
    run = linear()
    run.feed(completed(run.dispatch(), {"a": 1}))
    run.feed(completed(run.dispatch(), {"b": 2}))

    finish = NodeDispatched.model_validate(run.dispatch().data)
    assert finish.node == "finish"
    assert finish.context.upstream == {"start": {"a": 1}, "middle": {"b": 2}}
    assert finish.context.input == TASK_INPUT


def test_tool_args_resolve_from_upstream_outputs_and_task_input() -> None:
    args = {"query": "$nodes.plan.query", "lang": "$nodes.plan.meta.lang", "topic": "$input.topic", "n": 3}
    wf = manifest([agent("plan", role="START"), tool("fetch", args=args), exit_("done")],
                  chain("plan", "fetch", "done"))
    run = started(wf)
    events = run.feed(completed(run.dispatch(), {"query": "cqrs", "meta": {"lang": "en"}}))

    dispatch = only(events, "node.dispatched").data
    assert dispatch["tool"]["args"] == {"query": "cqrs", "lang": "en", "topic": "event sourcing", "n": 3}


def test_missing_upstream_reference_fails_the_node_and_the_task() -> None:
    wf = manifest([agent("plan", role="START"), tool("fetch", args={"query": "$nodes.plan.query"}), exit_("done")],
                  chain("plan", "fetch", "done"))
    run = started(wf)
    events = run.feed(completed(run.dispatch(), {"other": "x"}))

    assert types(events) == ["router.input", "node.succeeded", "node.failed", "task.failed"]
    assert only(events, "node.failed").data == {
        "node": "fetch", "attempt": 1,
        "reason": "argument 'query' refers to $nodes.plan.query, which the task does not have",
    }
    assert "node 'fetch' failed" in only(events, "task.failed").data["reason"]
    assert run.state.status == "failed"
    assert run.state.nodes["plan"].status == "succeeded"
    assert run.state.nodes["fetch"].status == "failed"
    assert run.state.open_dispatches() == []


@pytest.mark.parametrize(("args", "expected"), [
    ({}, {}),
    ({"a": "$input.x"}, {"a": 1}),
    ({"a": "$input.deep.er"}, {"a": [1, 2]}),
    ({"a": "$nodes.n1.v"}, {"a": None}),
    ({"a": "$nodes.n1"}, {"a": {"v": None}}),
    ({"a": "$input"}, {"a": "$input"}),
    ({"a": "input.x", "b": 2.5, "c": ["$input.x"]}, {"a": "input.x", "b": 2.5, "c": ["$input.x"]}),
    ({"a": "$other.x"}, {"a": "$other.x"}),
])
def test_resolve_args(args: dict, expected: dict) -> None:
    context = NodeContext(input={"x": 1, "deep": {"er": [1, 2]}}, upstream={"n1": {"v": None}})
    assert resolve_args(args, context) == (expected, "")


@pytest.mark.parametrize("ref", ["$input.y", "$input.x.y", "$nodes.n2.v", "$nodes.n1.w", "$input.deep.er.0"])
def test_resolve_args_names_the_missing_reference(ref: str) -> None:
    context = NodeContext(input={"x": 1, "deep": {"er": [1, 2]}}, upstream={"n1": {"v": None}})
    resolved, problem = resolve_args({"ok": "$input.x", "bad": ref}, context)
    assert resolved == {}
    assert problem == f"argument 'bad' refers to {ref}, which the task does not have"


def test_decisions_use_the_task_correlation_id_not_the_runners() -> None:
    run = linear()
    done = completed(run.dispatch())
    stray = RouterInput(done.event.model_copy(update={"correlation_id": "runner-corr"}))
    events = decide(run.state, stray)
    assert events
    assert {e.correlation_id for e in events} == {CORRELATION}


# --- DECISION ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("verdict", "exit_node", "event_type"), [
    ("approve", "approved", "task.succeeded"),
    ("reject", "rejected", "task.failed"),
])
def test_decision_picks_the_edge_whose_value_equals(verdict: str, exit_node: str, event_type: str) -> None:
    run = at_review()
    events = decide(run.state, completed(run.dispatch(), {"verdict": verdict}))
    assert types(events) == ["node.succeeded", event_type]
    assert events[1].data["exit_node"] == exit_node


@pytest.mark.parametrize(("verdict", "target"), [("ok", "approved"), ("fine", "approved"), ("redo", "rework")])
def test_decision_picks_the_edge_whose_list_contains_the_value(verdict: str, target: str) -> None:
    run = at_review([edge("review", "approved", field_="verdict", in_=["ok", "fine"]),
                     edge("review", "rework", field_="verdict", in_=["redo", "again"])])
    run.feed(completed(run.dispatch(), {"verdict": verdict}))

    state = run.state
    assert state.nodes["review"].status == "succeeded"
    if target == "approved":
        assert (state.status, state.exit_node) == ("succeeded", "approved")
    else:
        assert state.status == "running"
        assert run.dispatch().data["node"] == "rework"
        assert run.dispatch().data["context"]["upstream"] == {"draft": {"text": "a draft"}, "review": {"verdict": verdict}}


def test_decision_tests_nested_fields() -> None:
    run = at_review([edge("review", "approved", field_="result.verdict", equals="approve"),
                     edge("review", "rejected", field_="result.verdict", equals="reject")])
    events = decide(run.state, completed(run.dispatch(), {"result": {"verdict": "reject"}}))
    assert events[-1].data["exit_node"] == "rejected"


@pytest.mark.parametrize("default_first", [True, False])
def test_decision_prefers_a_matching_condition_over_the_default(default_first: bool) -> None:
    conditional = edge("review", "approved", field_="verdict", equals="approve")
    default = edge("review", "rejected", default=True)
    run = at_review([default, conditional] if default_first else [conditional, default])
    events = decide(run.state, completed(run.dispatch(), {"verdict": "approve"}))
    assert events[-1].data["exit_node"] == "approved"


@pytest.mark.parametrize("output", [{"verdict": "maybe"}, {}, {"verdict": None}])
def test_decision_takes_the_default_edge_when_no_condition_matches(output: dict) -> None:
    run = at_review([edge("review", "approved", field_="verdict", equals="approve"),
                     edge("review", "rework", default=True)])
    events = decide(run.state, completed(run.dispatch(), output))
    assert types(events) == ["node.succeeded", "node.dispatched"]
    assert events[1].data["node"] == "rework"


def test_decision_with_no_matching_edge_fails_naming_the_value_found() -> None:
    run = at_review([edge("review", "approved", field_="verdict", equals="approve"),
                     edge("review", "rejected", field_="verdict", in_=["reject", "veto"])])
    events = run.feed(completed(run.dispatch(), {"verdict": "maybe"}))

    assert types(events) == ["router.input", "node.failed", "task.failed"]
    reason = only(events, "node.failed").data["reason"]
    assert "matched no edge" in reason
    assert "{'verdict': 'maybe'}" in reason
    assert "verdict == 'approve' -> approved" in reason
    assert "verdict in ['reject', 'veto'] -> rejected" in reason
    assert only(events, "task.failed").data["reason"] == f"node 'review' failed: {reason}"
    assert run.state.status == "failed"
    assert run.state.nodes["review"].status == "failed"
    assert run.state.nodes["review"].output is None


def test_decision_with_the_field_missing_reports_none() -> None:
    run = at_review()
    events = decide(run.state, completed(run.dispatch(), {"comments": "no verdict"}))
    assert types(events) == ["node.failed", "task.failed"]
    assert "{'verdict': None}" in events[0].data["reason"]


# --- EXIT -------------------------------------------------------------------------------------

def test_reaching_a_succeeded_exit_succeeds_the_task() -> None:
    run = at_review()
    review = run.dispatch()
    done = completed(review, {"verdict": "approve"})
    events = run.feed(done)

    assert types(events) == ["router.input", "node.succeeded", "task.succeeded"]
    assert events[-1].data == {"status": "succeeded", "exit_node": "approved",
                               "reason": "reached EXIT node 'approved'"}
    state = run.state
    assert state.status == "succeeded"
    assert state.exit_node == "approved"
    assert state.finished_at == done.event.time
    assert state.nodes["approved"].status == "reached"
    assert state.nodes["rejected"].status == "pending"


def test_reaching_a_failed_exit_fails_the_task() -> None:
    run = at_review()
    events = run.feed(completed(run.dispatch(), {"verdict": "reject"}))

    assert events[-1].type == "task.failed"
    assert events[-1].data == {"status": "failed", "exit_node": "rejected", "reason": "reached EXIT node 'rejected'"}
    assert run.state.status == "failed"
    assert run.state.nodes["rejected"].status == "reached"
    assert run.state.nodes["review"].status == "succeeded"


# --- node.errored -----------------------------------------------------------------------------

def test_retryable_error_dispatches_the_node_again() -> None:
    run = linear()
    run.feed(completed(run.dispatch(), {"a": 1}))
    middle = run.dispatch()
    err = errored(middle, "rate limited", retryable=True)
    events = decide(run.state, err)

    assert types(events) == ["node.dispatched"]
    again = NodeDispatched.model_validate(events[0].data)
    assert again.node == "middle"
    assert again.attempt == 2
    assert again.dispatch_id == derive_id(TASK, "middle", 2) != middle.data["dispatch_id"]
    assert again.deadline == err.event.time + timedelta(seconds=60)
    assert again.reason.startswith("retry: ")
    assert "rate limited" in again.reason
    assert again.context == NodeContext(input=TASK_INPUT, upstream={"start": {"a": 1}})


@pytest.mark.parametrize("max_attempts", [1, 2, 3, 5])
def test_retryable_errors_give_up_after_max_attempts(max_attempts: int) -> None:
    run = linear(max_attempts=max_attempts)
    for attempt in range(1, max_attempts):
        events = run.feed(errored(run.dispatch(), "flaky"))
        assert types(events) == ["router.input", "node.dispatched"]
        assert events[-1].data["attempt"] == attempt + 1

    events = run.feed(errored(run.dispatch(), "flaky"))
    assert types(events) == ["router.input", "node.failed", "task.failed"]
    failed = only(events, "node.failed").data
    assert failed["attempt"] == max_attempts
    assert "flaky" in failed["reason"]
    assert f"gave up after {max_attempts} attempts" in failed["reason"]
    assert run.state.status == "failed"
    assert run.state.nodes["start"].attempts == max_attempts


def test_non_retryable_error_fails_at_once() -> None:
    run = linear(max_attempts=5)
    events = run.feed(errored(run.dispatch(), "schema violation", retryable=False))

    assert types(events) == ["router.input", "node.failed", "task.failed"]
    assert only(events, "node.failed").data == {"node": "start", "attempt": 1, "reason": "schema violation"}
    assert only(events, "task.failed").data == {"status": "failed", "reason": "node 'start' failed: schema violation"}
    assert run.state.nodes["start"].error == "schema violation"


def test_error_for_a_stale_dispatch_is_absorbed() -> None:
    run = linear()
    attempt1 = run.dispatch()
    run.feed(errored(attempt1, retryable=True))
    assert decide(run.state, errored(attempt1, "again", retryable=False, id="err-again")) == []


# --- node.deadline_expired --------------------------------------------------------------------

def test_deadline_expiry_dispatches_the_node_again() -> None:
    run = linear(timeout_s=30)
    first = run.dispatch()
    late = expired(first)
    events = decide(run.state, late)

    assert types(events) == ["node.dispatched"]
    again = NodeDispatched.model_validate(events[0].data)
    assert again.attempt == 2
    assert again.node == "start"
    assert "deadline" in again.reason
    assert "30s" in again.reason
    assert again.deadline == late.event.time + timedelta(seconds=30) == T0 + timedelta(seconds=60)


def test_deadline_expiry_for_a_stale_dispatch_is_absorbed() -> None:
    run = linear()
    first = run.dispatch()
    run.feed(expired(first))
    assert decide(run.state, expired(first, id="late-again")) == []


def test_deadline_expiry_after_completion_is_absorbed() -> None:
    run = linear()
    first = run.dispatch()
    run.feed(completed(first))
    assert decide(run.state, expired(first)) == []


def test_deadline_expiries_give_up_after_max_attempts() -> None:
    run = linear(max_attempts=2, timeout_s=5)
    run.feed(expired(run.dispatch()))
    events = run.feed(expired(run.dispatch()))

    assert types(events) == ["router.input", "node.failed", "task.failed"]
    reason = only(events, "node.failed").data["reason"]
    assert "5s deadline" in reason
    assert "gave up after 2 attempts" in reason
    assert run.state.status == "failed"


def test_completion_of_a_retried_dispatch_succeeds_with_that_attempt() -> None:
    run = linear()
    run.feed(expired(run.dispatch()))
    run.feed(errored(run.dispatch()))
    third = run.dispatch()
    events = run.feed(completed(third, {"ok": True}))

    assert only(events, "node.succeeded").data["attempt"] == 3
    assert only(events, "node.succeeded").data["dispatch_id"] == derive_id(TASK, "start", 3)
    assert run.state.nodes["start"].attempts == 3


# --- determinism ------------------------------------------------------------------------------

def _inputs_for_every_kind() -> list[tuple[TaskState, RouterInput]]:
    fresh = TaskState()
    run = at_review()
    review = run.dispatch()
    return [
        (fresh, accepted(review_workflow())),
        (fresh, accepted(None)),
        (run.state, completed(review, {"verdict": "approve"})),
        (run.state, completed(review, {"verdict": "nope"})),
        (run.state, errored(review, retryable=True)),
        (run.state, errored(review, retryable=False)),
        (run.state, expired(review)),
    ]


@pytest.mark.parametrize("case", range(7))
def test_decide_is_deterministic(case: int) -> None:
    state, inp = _inputs_for_every_kind()[case]
    first = decide(state, inp)
    assert first
    assert dumps(decide(state, inp)) == dumps(first)
    state2, inp2 = _inputs_for_every_kind()[case]  # rebuilt from scratch
    assert dumps(decide(state2, inp2)) == dumps(first)


def test_ids_depend_on_the_input_not_on_the_clock() -> None:
    wf = review_workflow()
    early = decide(TaskState(), accepted(wf, time=T0))
    later = decide(TaskState(), accepted(wf, time=T0 + timedelta(days=3)))

    assert [e.id for e in early] == [e.id for e in later]
    assert early[1].data["dispatch_id"] == later[1].data["dispatch_id"]
    assert [e.time for e in later] == [T0 + timedelta(days=3)] * 2
    assert later[1].data["deadline"] != early[1].data["deadline"]


def test_ids_differ_between_inputs_and_tasks() -> None:
    wf = review_workflow()
    one = decide(TaskState(), accepted(wf, id="a-1"))
    two = decide(TaskState(), accepted(wf, id="a-2", task_id="task-2"))

    assert {e.id for e in one}.isdisjoint(e.id for e in two)
    assert one[1].data["dispatch_id"] != two[1].data["dispatch_id"]
    assert two[1].data["dispatch_id"] == derive_id("task-2", "draft", 1)


# --- contract ---------------------------------------------------------------------------------

def test_every_decision_validates_against_the_published_event_schema() -> None:
    """Consumers validate events against the exported JSON Schemas: the router must emit that shape
    (edge `from`, condition `in`), not Python field names."""
    published = {name.removesuffix(".json"): json.loads(text) for name, text in schemas().items()}
    run = at_review([edge("review", "approved", field_="verdict", in_=["ok"]), edge("review", "rework", default=True)])
    run.feed(errored(run.dispatch(), retryable=True))
    run.feed(completed(run.dispatch(), {"verdict": "meh"}))
    run.feed(completed(run.dispatch(), {"text": "reworked"}, usage={"input_tokens": 1, "output_tokens": 2}))
    decided = [r for r in run.records if r.type != "router.input"]
    assert {r.type for r in decided} == {"task.started", "node.dispatched", "node.succeeded", "task.succeeded"}

    for record in decided:
        jsonschema.validate(record.data, published[record.type])
        jsonschema.validate(json.loads(record.model_dump_json()), published["envelope"])
    rejected = decide(TaskState(), accepted(None))[0]
    jsonschema.validate(rejected.data, published["task.rejected"])
    manifest_in_started = only(run.records, "task.started").data["workflow_manifest"]
    assert manifest_in_started["edges"][1]["from"] == "review"
    assert manifest_in_started["edges"][1]["when"]["in"] == ["ok"]


def test_usage_total_sums_node_usage() -> None:
    run = linear()
    run.feed(completed(run.dispatch(), usage={"input_tokens": 10, "output_tokens": 1, "cache_read_tokens": 4}))
    run.feed(completed(run.dispatch()))  # no usage reported
    run.feed(completed(run.dispatch(), usage={"input_tokens": 5, "output_tokens": 2, "cache_write_tokens": 3}))

    assert usage_total(run.state) == Usage(input_tokens=15, output_tokens=3, cache_read_tokens=4,
                                           cache_write_tokens=3)
    assert usage_total(TaskState()) == Usage()


def test_time_of_the_input_record_and_decisions_is_the_input_time() -> None:
    run = linear()
    late = T0 + timedelta(hours=1)
    events = run.feed(completed(run.dispatch(), time=late))
    assert {e.time for e in events} == {late}
    assert run.state.nodes["start"].finished_at == late
    assert run.state.nodes["middle"].dispatched_at == late
    assert run.state.nodes["middle"].deadline == late + timedelta(seconds=60)


def test_an_event_from_another_tenant_never_touches_the_task() -> None:
    run = started(review_workflow())
    genuine = completed(run.dispatch(), {"text": "injected"})
    intruder = RouterInput(genuine.event.model_copy(update={"tenant": "evil"}))
    assert decide(run.state, intruder) == []
    assert decide(run.state, genuine) != []


def test_a_dispatch_too_large_for_the_bus_fails_the_node_with_a_reason() -> None:
    run = started(review_workflow())
    events = decide(run.state, completed(run.dispatch(), {"text": "x" * (800 * 1024)}))
    assert [e.type for e in events] == ["node.succeeded", "node.failed", "task.failed"]
    assert "KiB" in events[1].data["reason"] and "workspace files" in events[1].data["reason"]
