"""Snapshots of task states, without a database: the state the router holds after any input, kept as a snapshot
(encoded, sealed, opened, decoded) and then folded on with the records after it, equals the fold of every record,
for random histories of the property tests' generators; and a snapshot's seal is not a record's."""

from __future__ import annotations

import uuid
from dataclasses import fields, replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import test_properties
import test_properties_roles
import test_properties_tools
from cryptography.exceptions import InvalidTag
from hypothesis import given, settings
from hypothesis import strategies as st
from router_testkit import Run, json_round_trip, linear_workflow, started

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import Lineage, Usage
from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.contracts.pricing import PriceTable
from agent_engine.router.budgets import Ledger, Wait
from agent_engine.router.core import INPUT_RECORD, apply, fold, input_from_record, restore
from agent_engine.router.crypto import seal, unseal
from agent_engine.router.datakeys import DataKey
from agent_engine.router.snapshots import FINGERPRINT, Snapshot, _context, decode, encode
from agent_engine.router.state import Fanout, NodeState, TaskState
from agent_engine.router.traces import TaskTrace

KEY = DataKey(uuid.uuid4(), "acme", bytes(range(32)))
TASK = uuid.uuid4()


def kept(state: TaskState, last_id: str) -> TaskState:
    """The state as a later load gets it back: encoded, sealed, opened, decoded."""
    stored = seal(KEY, TASK, state.version, encode(Snapshot(state.version, last_id, state)), _context(FINGERPRINT))
    snapshot = decode(unseal(KEY, TASK, state.version, stored, _context(FINGERPRINT)))
    assert snapshot.version == state.version and snapshot.last_id == last_id
    return snapshot.state


def committed_states(records: list[Envelope]) -> list[TaskState]:
    """The states the router holds after each input it applied, as it commits them (what a save snapshots)."""
    state, states = TaskState(), []
    for record in restore(records):
        if record.type == INPUT_RECORD:
            state, _ = apply(state, input_from_record(record))
            states.append(state)
    return states


def check_every_cut(records: list[Envelope]) -> None:
    stored = json_round_trip(records)
    whole = fold(stored)
    for state in committed_states(stored):
        cut = state.version
        assert state == fold(stored[:cut]), "the router's state is the fold of what it committed"
        assert fold(stored[cut:], kept(state, stored[cut - 1].id)) == whole
    for cut in range(len(stored) + 1):  # a load's snapshot: the fold of any prefix
        prefix = fold(stored[:cut])
        assert fold(stored[cut:], kept(prefix, stored[cut - 1].id if cut else "")) == whole


@settings(max_examples=60, deadline=None)
@given(wf=test_properties.workflows(), data=st.data())
def test_snapshot_and_tail_equal_the_full_fold_for_random_runs(wf: WorkflowManifest, data: st.DataObject) -> None:
    check_every_cut(test_properties.drive(wf, data).run.records)


@settings(max_examples=40, deadline=None)
@given(wf=test_properties_tools.workflows(), data=st.data())
def test_snapshot_and_tail_equal_the_full_fold_for_random_tool_use(wf: WorkflowManifest, data: st.DataObject) -> None:
    check_every_cut(test_properties_tools.drive(wf, data).run.records)


@settings(max_examples=40, deadline=None)
@given(wf=test_properties_roles.workflows(), data=st.data())
def test_snapshot_and_tail_equal_the_full_fold_for_every_role(wf: WorkflowManifest, data: st.DataObject) -> None:
    world = test_properties_roles.World(wf, data)
    world.run()
    for records in world.records.values():  # parents, subtasks, forks: each its own history
        stored = json_round_trip(records)
        whole = fold(stored)
        for cut in range(len(stored) + 1):
            assert fold(stored[cut:], kept(fold(stored[:cut]), stored[cut - 1].id if cut else "")) == whole


def test_a_snapshot_keeps_the_state_exactly() -> None:
    run: Run = started(linear_workflow(), {"topic": "t", "n": [1, 2.5, None]})
    state = run.state
    back = kept(state, run.records[-1].id)
    assert back == state
    assert type(back.applied) is frozenset and back.manifest == state.manifest and back.nodes == state.nodes


def test_every_field_of_a_state_survives_a_snapshot() -> None:
    """A state with every field of the task and of a node away from its default (a new field must join it)."""
    when = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
    usage = Usage(input_tokens=3, output_tokens=4, cache_read_tokens=1, cache_write_tokens=2)
    node = NodeState(status="dispatched", attempts=2, revision=1, runs_before=1, dispatch_id="d", deadline=when,
                     dispatched_at=when, finished_at=when, output={"a": [1, {"b": None}]}, provider="mock",
                     model="m", usage=usage, error="e", continued=True, chosen="x", merged={"m": 1},
                     steps=({"turn": 0, "calls": [{"name": "echo"}]},), call=0, turn_usage=usage,
                     summary={"turns": 1}, began_at=when, paused="confidence",
                     held={"output": {"x": 1}}, resumed_at=3, approved=frozenset({"", "t0-c1"}),
                     approved_args={"path": "p"})
    base = started(linear_workflow()).state
    state = replace(base, status="waiting", workflow="wf", revision="r", engine_version="1", contract_version=2,
                    input={"topic": "t"}, nodes={"start": node}, started_at=when, finished_at=when, exit_node="done",
                    reason="why", lineage=Lineage(kind="subtask", parent_id="p", root_id="r", cause="c",
                                                  parent_node="s"),
                    entry="start", stop_at="m", inherited={"u": {"v": 1}},
                    fanouts={"s": Fanout(merge="m", subtasks=("t1", "t2"), results={1: ("succeeded", {"o": 1}, "")})},
                    cancelling=frozenset({"t2"}), revisions={"judge": 1}, feedback={"start": {"f": 1}},
                    recorded={"start@0": {"output": {}}}, duplicate_of="other", queued_by="alice",
                    queued_budget_usd="0.5", applied=frozenset({"i1", "i2"}), trace=TaskTrace(1, 2, 3),
                    budget=Ledger(Decimal("0.01"), "wait", 0.8, PriceTable("v", {"m": (Decimal(1),) * 4}),
                                  open={"d": ("start", Decimal("0.001"))}, spent=Decimal("0.002"),
                                  settled=frozenset({"d0"}), alerted=True, waiting={"x": Wait(1)}))
    for name, value in ((f.name, getattr(state, f.name)) for f in fields(TaskState)):
        assert value != getattr(TaskState(), name), f"TaskState.{name} is not set in this test"
    for name, value in ((f.name, getattr(node, f.name)) for f in fields(NodeState)):
        assert value != getattr(NodeState(), name), f"NodeState.{name} is not set in this test"
    back = kept(state, "last")
    assert back == state
    assert [(f.name, type(getattr(back, f.name))) for f in fields(TaskState)] == [
        (f.name, type(getattr(state, f.name))) for f in fields(TaskState)]
    assert back.fanouts["s"].results[1] == ("succeeded", {"o": 1}, "")  # an int key stays an int


def test_a_snapshot_does_not_open_as_a_record_nor_under_other_code() -> None:
    state = started(linear_workflow()).state
    stored = seal(KEY, TASK, state.version, encode(Snapshot(state.version, "x", state)), _context(FINGERPRINT))
    with pytest.raises(InvalidTag):  # a record's associated data has no context
        unseal(KEY, TASK, state.version, stored)
    with pytest.raises(InvalidTag):  # another build of the router
        unseal(KEY, TASK, state.version, stored, _context(bytes(32)))
    with pytest.raises(InvalidTag):  # moved to another version
        unseal(KEY, TASK, state.version + 1, stored, _context(FINGERPRINT))
    record = seal(KEY, TASK, 1, b"{}")
    with pytest.raises(InvalidTag):
        unseal(KEY, TASK, 1, record, _context(FINGERPRINT))


def test_what_is_not_a_snapshot_is_refused() -> None:
    import pickle

    with pytest.raises(ValueError, match="not a task snapshot"):
        decode(pickle.dumps((1, "x", {"status": "running"})))
    state = started(linear_workflow()).state
    with pytest.raises(ValueError, match="not a task snapshot"):  # its version is not its state's
        decode(pickle.dumps((state.version + 1, "x", state)))
