"""evolve(state, record) -> state: how recorded events fold into a task's state."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from router_testkit import (
    CORRELATION,
    REVISION,
    T0,
    TASK,
    TASK_INPUT,
    TENANT,
    Run,
    accepted,
    completed,
    envelope,
    errored,
    expired,
    linear_workflow,
    review_workflow,
    started,
)

from agent_engine.contracts.envelope import CONTRACT_VERSION, Envelope, derive_id
from agent_engine.contracts.events import Usage
from agent_engine.router import ENGINE_VERSION
from agent_engine.router.core import (
    INPUT_RECORD,
    SOURCE,
    RouterInput,
    evolve,
    fold,
    input_from_record,
    input_record,
)
from agent_engine.router.state import NodeState, TaskState


def record(type_: str, data: dict, *, id: str = "rec-1", minutes: int = 0) -> Envelope:
    return envelope(type_, data, id=id, time=T0 + timedelta(minutes=minutes))


def running() -> TaskState:
    """A state with the review workflow started and its draft node dispatched."""
    return started(review_workflow()).state


# --- versions and applied inputs --------------------------------------------------------------

def test_version_counts_every_record() -> None:
    run = started(review_workflow())
    run.feed(completed(run.dispatch(), {"text": "d"}))
    run.feed(completed(run.dispatch(), {"verdict": "approve"}))

    assert run.state.version == len(run.records) == 9  # (input record + 2 decisions) x 3
    for n in range(len(run.records) + 1):
        assert fold(run.records[:n]).version == n


def test_applied_holds_the_ids_of_applied_inputs_only() -> None:
    run = Run()
    accept = accepted(review_workflow(), id="accept-7")
    run.feed(accept)
    done = completed(run.dispatch(), id="done-7")
    run.feed(done)

    assert run.state.applied == {"accept-7", "done-7"}
    decision_ids = {r.id for r in run.records if r.type != INPUT_RECORD}
    assert run.state.applied.isdisjoint(decision_ids)


def test_absorbed_inputs_are_not_recorded() -> None:
    run = started(review_workflow())
    before = run.state
    draft = run.dispatch()

    assert run.feed(accepted(review_workflow(), id="accept-dup")) == []
    assert run.feed(expired(draft, id="x", time=T0)) != []  # a real expiry is applied...
    assert run.feed(expired(draft, id="y", time=T0)) == []  # ...a second one for the same dispatch is not
    assert "accept-dup" not in run.state.applied
    assert "y" not in run.state.applied
    assert run.state.version == before.version + 2


@pytest.mark.parametrize("type_", ["llm.called", "task.requested", "node.completed", "something.else"])
def test_unknown_types_only_bump_the_version(type_: str) -> None:
    state = running()
    after = evolve(state, record(type_, {"node": "draft", "status": "succeeded", "output": {"x": 1}}))
    assert after == replace(state, version=state.version + 1)


def test_evolve_returns_a_new_state_and_leaves_the_old_one_alone() -> None:
    state = running()
    snapshot = replace(state)
    evolve(state, record("node.failed", {"node": "draft", "attempt": 1, "reason": "x"}))
    assert state == snapshot
    assert state.nodes["draft"].status == "dispatched"


# --- input records ----------------------------------------------------------------------------

def test_input_record_sets_identity_and_keeps_the_first_correlation_id() -> None:
    state = TaskState()
    first = accepted(review_workflow(), correlation_id="corr-a")
    state = evolve(state, input_record(first))
    assert (state.task_id, state.tenant, state.correlation_id) == (TASK, TENANT, "corr-a")
    assert state.applied == {"accept-1"}

    second = envelope("node.completed", {}, id="in-2", correlation_id="corr-b")
    state = evolve(state, input_record(RouterInput(second)))
    assert state.correlation_id == "corr-a"
    assert state.applied == {"accept-1", "in-2"}
    assert state.status == "new"


def test_input_record_round_trips_the_input_and_the_resolved_workflow() -> None:
    wf = review_workflow()
    inp = accepted(wf, revision="rev-9")
    rec = input_record(inp)

    assert rec.type == INPUT_RECORD
    assert rec.id == derive_id("accept-1", "input")
    assert rec.causation_id == "accept-1"
    assert rec.source == SOURCE
    assert (rec.time, rec.tenant, rec.task_id, rec.correlation_id) == (T0, TENANT, TASK, CORRELATION)
    assert rec.data["workflow"]["revision"] == "rev-9"
    assert rec.data["workflow"]["manifest"]["edges"][0]["from"] == "draft"  # stored in file format

    back = input_from_record(rec)
    assert back.event == inp.event
    assert back.workflow is not None
    assert back.workflow.revision == "rev-9"
    assert back.workflow.manifest == wf


def test_input_record_without_a_workflow() -> None:
    inp = accepted(None)
    rec = input_record(inp)
    assert rec.data["workflow"] is None
    back = input_from_record(rec)
    assert back.workflow is None
    assert back.event == inp.event


# --- task lifecycle ---------------------------------------------------------------------------

def test_task_started_makes_the_task_running_with_every_node_pending() -> None:
    wf = linear_workflow()
    run = Run()
    events = run.feed(accepted(wf, revision="rev-x"))
    state = fold(events[:2])  # input record + task.started

    assert state.status == "running"
    assert state.workflow == "wf"
    assert state.revision == "rev-x"
    assert state.engine_version == ENGINE_VERSION
    assert state.contract_version == CONTRACT_VERSION
    assert state.manifest == wf
    assert state.input == TASK_INPUT
    assert state.started_at == T0
    assert state.nodes == {n: NodeState() for n in ("start", "middle", "finish", "done")}
    assert not state.terminal


def pinned(wf: object, revision: str = "rev-x") -> TaskState:
    """A task's state right after its `task.started`, folded from records of its own."""
    return fold(Run().feed(accepted(wf, revision=revision))[:2])


def test_tasks_that_pinned_equal_manifests_share_one_parsed_manifest() -> None:
    first, second = pinned(linear_workflow()), pinned(linear_workflow())
    assert first.manifest == linear_workflow()
    assert second.manifest is first.manifest  # one object for both, not a copy per task


def test_a_different_manifest_under_the_same_revision_is_parsed_as_its_own() -> None:
    plain = linear_workflow()
    described = plain.model_copy(update={"description": "another manifest pinned under the same revision"})
    a, b, c = pinned(plain), pinned(described), pinned(plain)
    assert a.manifest == plain and b.manifest == described and c.manifest == plain
    assert b.manifest is not a.manifest


def test_manifests_equal_in_python_but_not_in_json_are_kept_apart() -> None:
    """`1 == 1.0 == True` in Python; a task must still fold to the manifest its own record holds."""
    plain = linear_workflow()
    pins = [plain.model_copy(update={"schemas": {**plain.schemas, "extra": {"default": value}}})
            for value in (1, 1.0, True)]
    folded = [pinned(m, "rev-numbers").manifest for m in pins]
    assert [type(m.schemas["extra"]["default"]) for m in folded if m is not None] == [int, float, bool]


def test_a_record_changed_after_it_was_folded_does_not_change_the_manifest_kept() -> None:
    records = Run().feed(accepted(linear_workflow(), revision="rev-kept"))
    fold(records[:2])
    records[1].data["workflow_manifest"]["description"] = "changed in the record after the fold"
    assert pinned(linear_workflow(), "rev-kept").manifest == linear_workflow()


def test_the_shared_manifests_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_engine.router import manifests

    monkeypatch.setattr(manifests, "LIMIT", 2)
    monkeypatch.setattr(manifests, "_kept", {})
    states = [pinned(linear_workflow(), f"rev-{n}") for n in range(5)]
    assert len(manifests._kept) == 2
    assert all(s.manifest == linear_workflow() for s in states)
    assert pinned(linear_workflow(), "rev-0").manifest == linear_workflow()  # forgotten, parsed again


def test_task_rejected() -> None:
    run = Run()
    run.feed(accepted(None, workflow="ghost", time=T0 + timedelta(seconds=5)))
    state = run.state

    assert state.status == "rejected"
    assert state.terminal
    assert "ghost" in state.reason
    assert state.finished_at == T0 + timedelta(seconds=5)
    assert state.manifest is None
    assert state.nodes == {}
    assert state.task_id == TASK


def test_task_succeeded_marks_the_exit_node_reached() -> None:
    state = evolve(running(), record("task.succeeded", {"status": "succeeded", "exit_node": "approved",
                                                        "reason": "reached"}, minutes=3))
    assert state.status == "succeeded"
    assert state.terminal
    assert state.exit_node == "approved"
    assert state.reason == "reached"
    assert state.finished_at == T0 + timedelta(minutes=3)
    assert state.nodes["approved"].status == "reached"
    assert state.nodes["approved"].finished_at == T0 + timedelta(minutes=3)


def test_task_failed_without_an_exit_node_reaches_no_node() -> None:
    before = running()
    state = evolve(before, record("task.failed", {"status": "failed", "reason": "node 'x' failed: y"}))
    assert state.status == "failed"
    assert state.exit_node is None
    assert state.reason == "node 'x' failed: y"
    assert not any(n.status == "reached" for n in state.nodes.values())
    # a dispatch still open when the task ended is abandoned: its result will be recorded and ignored
    assert {n: s.status for n, s in state.nodes.items() if s.status != before.nodes[n].status} == {
        "draft": "abandoned"}


# --- node lifecycle ---------------------------------------------------------------------------

def test_node_dispatched() -> None:
    state = running()
    draft = state.nodes["draft"]
    assert draft.status == "dispatched"
    assert draft.attempts == 1
    assert draft.dispatch_id == derive_id(TASK, "draft", 1)
    assert draft.deadline == T0 + timedelta(seconds=60)
    assert draft.dispatched_at == T0
    assert state.open_dispatches() == [("draft", draft)]
    assert state.nodes["review"] == NodeState()


def test_node_redispatch_clears_the_previous_error_and_finish() -> None:
    state = running()
    state = evolve(state, record("node.failed", {"node": "draft", "attempt": 1, "reason": "boom"}, minutes=1))
    assert state.nodes["draft"].error == "boom"
    state = evolve(state, record("node.dispatched", {
        "dispatch_id": "d-2", "node": "draft", "kind": "agent", "attempt": 2,
        "deadline": (T0 + timedelta(minutes=3)).isoformat(),
    }, minutes=2))
    node = state.nodes["draft"]
    assert (node.status, node.attempts, node.dispatch_id) == ("dispatched", 2, "d-2")
    assert node.error is None
    assert node.finished_at is None
    assert node.deadline == T0 + timedelta(minutes=3)
    assert node.dispatched_at == T0 + timedelta(minutes=2)


def test_node_succeeded_keeps_output_provider_model_and_usage() -> None:
    run = started(review_workflow())
    run.feed(completed(run.dispatch(), {"text": "d"}, provider="mock", model="m-1",
                       usage={"input_tokens": 7, "output_tokens": 2}, time=T0 + timedelta(seconds=9)))
    node = run.state.nodes["draft"]

    assert node.status == "succeeded"
    assert node.output == {"text": "d"}
    assert (node.provider, node.model) == ("mock", "m-1")
    assert node.usage == Usage(input_tokens=7, output_tokens=2)
    assert node.finished_at == T0 + timedelta(seconds=9)
    assert node.deadline is None
    assert node.attempts == 1
    assert run.state.nodes["review"].status == "dispatched"
    assert [n for n, _ in run.state.open_dispatches()] == ["review"]


def test_node_failed_keeps_the_reason() -> None:
    run = started(review_workflow())
    run.feed(errored(run.dispatch(), "bad request", retryable=False, time=T0 + timedelta(seconds=4)))
    node = run.state.nodes["draft"]

    assert node.status == "failed"
    assert node.error == "bad request"
    assert node.finished_at == T0 + timedelta(seconds=4)
    assert node.deadline is None
    assert run.state.open_dispatches() == []


def test_retry_updates_attempts_and_dispatch_id() -> None:
    run = started(review_workflow())
    run.feed(errored(run.dispatch()))
    run.feed(expired(run.dispatch()))
    node = run.state.nodes["draft"]
    assert node.status == "dispatched"
    assert node.attempts == 3
    assert node.dispatch_id == derive_id(TASK, "draft", 3)


def test_fold_equals_the_state_apply_built() -> None:
    run = started(review_workflow(), revision=REVISION)
    run.feed(errored(run.dispatch()))
    run.feed(completed(run.dispatch(), {"text": "d"}))
    run.feed(completed(run.dispatch(), {"verdict": "reject"}))
    assert fold(run.records) == run.state
    assert fold(run.records).status == "failed"
