"""A runner's output is stored once: the `router.input` record of a result whose output a decision holds unchanged
leaves it out (`output_in` says where it is), and every reader gets the input whole again (records.restore).

Records stored before (inputs whole, no `output_in`) still replay exactly: fixtures/whole_inputs holds golden
histories as the router stored them before, each the restored form of today's file of the same name.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from golden_scenarios import GOLDEN, from_json
from router_testkit import (
    TASK,
    Run,
    agent,
    chain,
    completed,
    dumps,
    envelope,
    exit_,
    json_round_trip,
    linear_workflow,
    manifest,
    started,
    tool,
    types,
)

from agent_engine.contracts.envelope import Envelope, caused_by
from agent_engine.contracts.events import NodeSucceeded
from agent_engine.router import queries
from agent_engine.router.core import (
    INPUT_RECORD,
    OUTPUT_IN,
    RouterInput,
    Unrestorable,
    apply,
    fold,
    input_from_record,
    input_record,
    replay,
    restore,
)
from agent_engine.router.state import TaskState

WHOLE = Path(__file__).resolve().parent / "fixtures" / "whole_inputs"
TEXT = "the finished text, 7f3a9c"
FORK = "fork-1"


def finish_run() -> tuple[Run, RouterInput, list[Envelope]]:
    """A linear task up to its last node, whose result (an output with TEXT) ends it: the run, that result,
    and the records its apply stored."""
    run = started(linear_workflow())
    for node in ("start", "middle"):
        run.feed(completed(run.dispatch(node), {"text": f"{node} said"}))
    result = completed(run.dispatch("finish"), {"text": TEXT, "n": 1, "nested": {"b": [1, 2.5], "a": None}})
    out = run.feed(result)
    assert types(out) == [INPUT_RECORD, "node.succeeded", "task.succeeded"]
    return run, result, out


def test_the_output_of_a_result_is_stored_once() -> None:
    _, result, out = finish_run()
    stored = b"".join(r.to_bytes() for r in out)
    assert stored.count(TEXT.encode()) == 1  # in node.succeeded only: not in the input record as well
    record = out[0]
    assert record.data[OUTPUT_IN] == 1 and "output" not in record.data["input"]["data"]
    assert out[1].data["output"] == result.event.data["output"]
    # everything else the input carried stays in the record
    assert record.data["input"]["id"] == result.event.id
    assert record.data["input"]["data"]["dispatch_id"] == result.event.data["dispatch_id"]


def test_restore_gives_back_the_input_exactly_as_it_came() -> None:
    _, result, out = finish_run()
    [whole, *_] = restore(json_round_trip(out))
    assert OUTPUT_IN not in whole.data
    assert whole.data["input"] == result.event.to_wire()
    assert whole.model_dump(mode="json") == input_record(result).model_dump(mode="json")  # as stored before
    assert input_from_record(whole).event == result.event


def test_an_input_record_that_left_its_output_is_never_read_as_whole() -> None:
    _, _, out = finish_run()
    with pytest.raises(Unrestorable, match="left its input's output to the record 1 after it"):
        input_from_record(out[0])
    with pytest.raises(Unrestorable, match="not among the records given"):
        restore(out[:1])
    assert restore(out[:1], strict=False) == out[:1]


def succeeded(cause: Envelope, output: dict[str, Any], **changes: Any) -> Envelope:
    d = cause.data
    data = NodeSucceeded(dispatch_id=changes.pop("dispatch_id", d["dispatch_id"]), node=changes.pop("node", d["node"]),
                         attempt=d["attempt"], output=output)
    return caused_by(cause, data, id="decision-1", source="test", time=cause.time, **changes)


@pytest.mark.parametrize("held", [
    {"n": 1.0, "text": "t"},   # the same value to Python, not the same JSON
    {"text": "t", "n": 1},     # the same keys in another order
    {"n": 1, "text": "t", "more": True},
])
def test_an_output_a_decision_changed_keeps_its_copy(held: dict[str, Any]) -> None:
    dispatch = envelope("node.dispatched", {"dispatch_id": "d-1", "node": "w", "attempt": 1}, id="x")
    result = completed(dispatch, {"n": 1, "text": "t"})
    assert OUTPUT_IN in input_record(result, [succeeded(result.event, {"n": 1, "text": "t"})]).data
    record = input_record(result, [succeeded(result.event, held)])
    assert OUTPUT_IN not in record.data and record.data["input"]["data"]["output"] == {"n": 1, "text": "t"}


@pytest.mark.parametrize(("output", "left"), [({}, False), ({"a": 1}, True)])
def test_an_output_no_longer_than_the_marker_stays_where_it_is(output: dict[str, Any], left: bool) -> None:
    """`,"output":{}` is shorter than `,"output_in":1`: leaving it out would cost, not save."""
    dispatch = envelope("node.dispatched", {"dispatch_id": "d-1", "node": "w", "attempt": 1}, id="x")
    result = completed(dispatch, output)
    record = input_record(result, [succeeded(result.event, output)])
    assert (OUTPUT_IN in record.data) is left and ("output" in record.data["input"]["data"]) is not left


@pytest.mark.parametrize("changes", [{"dispatch_id": "d-2"}, {"node": "other"}, {"task_id": "another-task"}])
def test_an_output_held_for_another_dispatch_or_task_is_not_taken(changes: dict[str, Any]) -> None:
    dispatch = envelope("node.dispatched", {"dispatch_id": "d-1", "node": "w", "attempt": 1}, id="x")
    result = completed(dispatch, {"text": "t"})
    record = input_record(result, [succeeded(result.event, {"text": "t"}, **changes)])
    assert OUTPUT_IN not in record.data and record.data["input"]["data"]["output"] == {"text": "t"}


def test_a_result_that_leads_to_no_success_keeps_its_output() -> None:
    run = started(linear_workflow())
    start = run.dispatch("start")
    run.feed(RouterInput(envelope("task.cancel_requested", {"reason": "stop", "requested_by": "ops"}, id="c-1")))
    out = run.feed(completed(start, {"text": TEXT}))
    assert types(out) == [INPUT_RECORD, "node.result_ignored"]
    assert OUTPUT_IN not in out[0].data and out[0].data["input"]["data"]["output"] == {"text": TEXT}
    assert dumps(replay(json_round_trip(run.records))) == dumps(run.records)


def test_replay_reproduces_the_records_that_left_their_output_exactly() -> None:
    run, _, _ = finish_run()
    assert sum(OUTPUT_IN in r.data for r in run.records if r.type == INPUT_RECORD) == 3
    stored = json_round_trip(run.records)
    assert dumps(replay(stored)) == dumps(run.records)
    assert fold(stored) == run.state


def test_records_stored_before_replay_exactly() -> None:
    """Every input whole (as routers before stored them): replay produces them whole again, not shortened."""
    run, _, _ = finish_run()
    before = restore(json_round_trip(run.records))
    assert not any(OUTPUT_IN in r.data for r in before)
    assert dumps(replay(before)) == dumps(before)
    assert fold(before) == run.state


def restored_deep(records: list[Envelope]) -> list[Envelope]:
    """`restore`, and also inside the records a fork holds (its request's `source`, `task.forked`'s `history`),
    which are the source's records as stored."""
    out = []
    for record in restore(records):
        data = dict(record.data)
        for key in ("source", "history"):
            if isinstance(data.get(key), list):
                inner = [Envelope.model_validate(r) for r in data[key]]
                data[key] = [r.to_wire() for r in restored_deep(inner)]
        out.append(record.model_copy(update={"data": data}))
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in WHOLE.glob("*.json")))
def test_golden_histories_stored_before_replay_exactly_and_are_todays_restored(name: str) -> None:
    before = from_json(json.loads((WHOLE / name).read_text()))
    today = from_json(json.loads((GOLDEN / name).read_text()))
    assert before.keys() == today.keys()
    for task_id, records in before.items():
        assert not any(OUTPUT_IN in r.data for r in records)
        assert dumps(replay(records)) == dumps(records), task_id
        assert dumps(restored_deep(today[task_id])) == dumps(records), task_id  # nothing lost by storing it once
        assert fold(records) == fold(today[task_id])
    assert sum(OUTPUT_IN in r.data for records in today.values() for r in records) > 0


def tool_then_agent() -> Run:
    """a (agent, START) -> b (tool) -> c (agent) -> done, every step answered."""
    wf = manifest([agent("a", role="START"), tool("b"), agent("c"), exit_("done")], chain("a", "b", "c", "done"))
    run = started(wf)
    for node in ("a", "b", "c"):
        run.feed(completed(run.dispatch(node), {"said": f"{node}: {TEXT}"}))
    assert run.state.status == "succeeded"
    return run


def test_a_fork_cut_after_a_record_that_left_its_output_replays() -> None:
    source = json_round_trip(tool_then_agent().records)
    at = next(i for i, r in enumerate(source, start=1) if r.type == "node.succeeded" and r.data["node"] == "b")
    assert OUTPUT_IN in source[at - 2].data  # b's result, just before its node.succeeded
    request = envelope("task.fork_requested", {"source_task_id": TASK, "at": at, "live": True,
                                               "requested_by": "ops"}, id="fork-req", task_id=FORK,
                       correlation_id=FORK)
    state, out = apply(TaskState(), RouterInput(request, source=tuple(source)))
    assert types(out) == [INPUT_RECORD, "task.forked", "node.dispatched"]
    history = [Envelope.model_validate(r) for r in out[1].data["history"]]
    assert sum(OUTPUT_IN in r.data for r in history) == 2  # copied as stored, and restorable in the fork
    assert [r.data["input"]["data"]["output"] for r in restore(history) if r.type == INPUT_RECORD
            and r.data["input"]["type"] == "node.completed"] == [{"said": f"a: {TEXT}"}, {"said": f"b: {TEXT}"}]
    assert state.nodes["b"].output == {"said": f"b: {TEXT}"}

    fork = Run(state, list(out))
    fork.feed(completed(fork.dispatch("c"), {"said": "c again"}))
    assert fork.state.status == "succeeded"
    assert dumps(replay(json_round_trip(fork.records))) == dumps(fork.records)
    assert fold(json_round_trip(fork.records)) == fork.state


def test_task_history_shows_every_input_whole() -> None:
    records = json_round_trip(tool_then_agent().records)
    raw = json.dumps({"task_id": TASK}).encode()
    answer = asyncio.run(queries.answer(lambda _: records, "task.history", raw))
    events = answer["events"]
    assert len(events) == len(records) and not any(OUTPUT_IN in e["data"] for e in events if e["type"] == INPUT_RECORD)
    outputs = [e["data"]["input"]["data"]["output"] for e in events
               if e["type"] == INPUT_RECORD and e["data"]["input"]["type"] == "node.completed"]
    assert outputs == [{"said": f"{n}: {TEXT}"} for n in "abc"]
    replayed = asyncio.run(queries.answer(lambda _: records, "task.replay", raw))
    assert replayed["identical"] and replayed["stored"] == len(records)
