"""The router writes the task's trace context into its records deterministically (router/traces.py): from the
input that started the task, never from a clock or chance, so replay reproduces the records byte for byte."""

from __future__ import annotations

import dataclasses

from router_testkit import Run, accepted, completed, dumps, json_round_trip, linear_workflow, split_started

from agent_engine.router import core
from agent_engine.router.core import replay
from agent_engine.router.traces import started_trace
from agent_engine.runtime import tracing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
INCOMING = f"00-{TRACE}-{PARENT}-01"


def _traced_run() -> Run:
    run = Run()
    start = accepted(linear_workflow())
    run.feed(dataclasses.replace(start, event=start.event.model_copy(update={"traceparent": INCOMING})))
    for node in ("start", "middle", "finish"):
        run.feed(completed(run.dispatch(node)))
    return run


def test_every_record_of_a_traced_task_names_its_invoke_workflow_span() -> None:
    run = _traced_run()
    started = next(r for r in run.records if r.type == "task.started")
    trace = run.state.trace
    assert trace is not None and trace == started_trace(started)
    assert (f"{trace.trace_id:032x}", f"{trace.parent_span_id:016x}") == (TRACE, PARENT)
    assert trace.span_id == tracing.derive_span_id("invoke_workflow", started.id)
    # the started record carries the context the task started in; every later record the task's span
    assert started.traceparent == INCOMING
    after = run.records[run.records.index(started) + 1:]
    assert {r.traceparent for r in after if r.type != "router.input"} == {f"00-{TRACE}-{trace.span_id:016x}-01"}
    assert run.state.status == "succeeded"


def test_replay_reproduces_the_trace_context_exactly() -> None:
    run = _traced_run()
    stored = json_round_trip(run.records)
    assert dumps(replay(stored)) == dumps(run.records)
    assert dumps(replay(_traced_run().records)) == dumps(run.records)  # the same ids every time


def test_an_untraced_task_writes_no_trace_context() -> None:
    run = Run()
    run.feed(accepted(linear_workflow()))
    run.feed(completed(run.dispatch("start")))
    assert run.state.trace is None
    assert all("traceparent" not in r.to_wire() for r in run.records)


def test_a_malformed_traceparent_starts_no_trace_and_is_not_passed_on() -> None:
    run = Run()
    start = accepted(linear_workflow())
    run.feed(dataclasses.replace(start, event=start.event.model_copy(update={"traceparent": "00-zz-yy-01"})))
    assert run.state.trace is None
    assert all(r.traceparent is None for r in run.records if r.type != "router.input")


def test_a_subtask_is_a_child_of_its_parents_workflow_span() -> None:
    wf = split_started()[0].state.manifest
    assert wf is not None
    run = Run()
    start = accepted(wf)
    run.feed(dataclasses.replace(start, event=start.event.model_copy(update={"traceparent": INCOMING})))
    run.feed(completed(run.dispatch("p")))
    requests = [r for r in run.feed(completed(run.dispatch("s"), {"xs": [1, 2]})) if r.type == "subtask.requested"]
    parent = run.state.trace
    assert parent is not None and len(requests) == 2
    for request in requests:  # the subtask starts from this record: its invoke_workflow hangs under the parent's
        child = Run()
        child.feed(core.RouterInput(request))
        trace = child.state.trace
        assert trace is not None and (trace.trace_id, trace.parent_span_id) == (parent.trace_id, parent.span_id)
        assert trace.span_id != parent.span_id


def test_an_untraced_task_stays_untraced_when_a_later_input_carries_a_trace() -> None:
    """Review of issue #16: a task started without trace context took the traceparent of any later input (a
    runner's answer, a traced `agentctl approve`) into its records, so its spans hung under another trace."""
    run = Run()
    run.feed(accepted(linear_workflow()))
    answer = completed(run.dispatch("start"))
    run.feed(dataclasses.replace(answer, event=answer.event.model_copy(update={"traceparent": INCOMING})))
    assert run.state.trace is None
    assert all(r.traceparent is None for r in run.records if r.type != "router.input")
