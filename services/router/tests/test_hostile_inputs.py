"""Inputs nobody honest sends: the pure core refuses them with a reason (InvalidInput, which the shell
dead-letters at once) or answers them in the domain, and never fails on them in any other way."""

from __future__ import annotations

from typing import Any

import pytest
from router_testkit import (
    TENANT,
    Run,
    accepted,
    agent,
    chain,
    completed,
    envelope,
    exit_,
    manifest,
    split_started,
    started,
    types,
)

from agent_engine.router.core import HANDLERS, InvalidInput, RouterInput, apply, decide, starts_task
from agent_engine.router.state import TaskState


def forged(request: Any, **changes: Any) -> RouterInput:
    data = {**request.data, **changes}
    return RouterInput(envelope("subtask.requested", data, id="forged-1", task_id=request.task_id))


def test_a_subtask_request_naming_no_node_of_its_manifest_is_refused_not_raised() -> None:
    """Issue 10: `lineage.parent_node` naming no node raised KeyError, and the input was retried 5 times."""
    _, [request, _] = split_started()
    lineage = {**request.data["lineage"], "parent_node": "no-such-node"}
    with pytest.raises(InvalidInput, match="names node 'no-such-node' as its SPLIT, which its manifest does not"):
        decide(TaskState(), forged(request, lineage=lineage))


def test_a_subtask_request_naming_a_node_that_is_no_split_or_another_merge_is_refused() -> None:
    _, [request, _] = split_started()
    with pytest.raises(InvalidInput, match="names node 'w' as its SPLIT"):
        decide(TaskState(), forged(request, lineage={**request.data["lineage"], "parent_node": "w"}))
    with pytest.raises(InvalidInput, match="stops at 'done', which is not the MERGE of SPLIT node 's'"):
        decide(TaskState(), forged(request, merge="done"))


def test_a_subtask_request_with_a_manifest_the_router_cannot_run_is_refused() -> None:
    _, [request, _] = split_started()
    broken = {**request.data["workflow_manifest"], "edges": [{"from": "p", "to": "nowhere"}]}
    with pytest.raises(InvalidInput, match="manifest that is not valid.*edge-endpoint"):
        decide(TaskState(), forged(request, workflow_manifest=broken))


def test_a_genuine_subtask_request_still_starts_its_subtask() -> None:
    _, [request, _] = split_started()
    child = Run()
    assert types(child.feed(RouterInput(request)))[:2] == ["router.input", "task.started"]


@pytest.mark.parametrize("input_type", sorted(HANDLERS))
def test_every_input_type_with_an_invalid_payload_is_refused_naming_the_type(input_type: str) -> None:
    """Issue 10: an envelope that parses but whose payload is invalid was retried 5 times (15 s)."""
    run = started(manifest([agent("a", role="START"), exit_("done")], chain("a", "done")))
    bad = envelope(input_type, {"node": ["not", "a", "string"], "attempt": "many", "lineage": 3,
                                "source_task_id": {}, "workflow": 7, "at": -1, "decision": "maybe", "reason": 5},
                   id="bad-1")
    for state in (TaskState(), run.state):
        with pytest.raises(InvalidInput, match=f"not a valid {input_type} payload: "):
            decide(state, RouterInput(bad))


def test_an_invalid_payload_already_applied_stays_absorbed() -> None:
    """A redelivery of an applied input is absorbed before its payload is looked at."""
    run = started(manifest([agent("a", role="START"), exit_("done")], chain("a", "done")))
    again = RouterInput(envelope("node.completed", {"garbage": True}, id="accept-1"))
    assert decide(run.state, again) == []


def test_a_registry_revision_the_router_cannot_run_is_rejected_with_the_rule_it_breaks() -> None:
    """The registry is written from outside: a manifest `agentctl workflow validate` refuses never starts."""
    no_start = manifest([agent("a"), exit_("done")], chain("a", "done"))
    state, out = apply(TaskState(), accepted(no_start))
    assert types(out) == ["router.input", "task.rejected"] and state.status == "rejected"
    reason = out[1].data["reason"]
    assert "revision rev-1 in the registry is not valid" in reason and "[one-start]" in reason
    assert "agentctl workflow push" in reason


def test_every_task_of_a_revision_is_checked_against_its_manifest() -> None:
    """The shell hands every task of a revision the same manifest: the check's answer holds for each of them."""
    no_start = manifest([agent("a"), exit_("done")], chain("a", "done"))
    runnable = manifest([agent("a", role="START"), exit_("done")], chain("a", "done"))
    for i in range(3):
        state, out = apply(TaskState(), accepted(no_start, id=f"bad-{i}"))
        assert types(out) == ["router.input", "task.rejected"] and state.status == "rejected"
        state, out = apply(TaskState(), accepted(runnable, id=f"good-{i}"))
        assert state.status == "running"


def test_only_requests_that_start_a_task_may_name_one_that_does_not_exist() -> None:
    def starts(type_: str, **data: Any) -> bool:
        return starts_task(envelope(type_, data, id="x"))

    assert starts("task.accepted") and starts("subtask.requested") and starts("task.fork_requested")
    assert starts("task.cancel_requested", parent_id="parent")  # a parent stopping a subtask before it starts
    assert not starts("task.cancel_requested") and not starts("node.completed") and not starts("task.admitted")
    assert not starts("node.deadline_expired") and not starts("no.such.type")


def test_another_tenants_input_never_touches_a_task() -> None:
    run = started(manifest([agent("a", role="START"), exit_("done")], chain("a", "done")))
    theirs = completed(run.dispatch())
    intruder = RouterInput(theirs.event.model_copy(update={"tenant": "intruder", "id": "x-1"}))
    assert run.state.tenant == TENANT and decide(run.state, intruder) == []
