"""A fork's spans in a trace of its own, and a client's request linking its task's trace (router/traces.py).

A fork's records go on naming the span its copied history names (the source's `invoke_workflow`), so stored
forks replay byte for byte; what changes is where its spans are emitted: its `invoke_workflow` span in the trace
the task.forked record names (the router's span for the fork request), with an id of its own and a link to the
source's, and its records published under that span."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

from router_testkit import (
    Run,
    accepted,
    agent,
    chain,
    completed,
    dumps,
    envelope,
    exit_,
    json_round_trip,
    manifest,
    tool,
)
from test_fork import FORK, fork_input, position
from test_ingress_traces import trace_file  # noqa: F401  the fixture: tracing on, into a file

from agent_engine.contracts.envelope import Envelope
from agent_engine.router import traces
from agent_engine.router.core import RouterInput, apply, replay
from agent_engine.router.relay import Relay
from agent_engine.router.state import TaskState
from agent_engine.router.traces import TaskTrace
from agent_engine.runtime import tracing

SOURCE_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
STARTED_IN = f"00-{SOURCE_TRACE}-00f067aa0ba902b7-01"
"""The context the source task started in (guardrails' span for its request)."""


def _traced_source() -> list[Envelope]:
    wf = manifest([agent("a", role="START"), tool("b"), agent("c"), exit_("done")], chain("a", "b", "c", "done"))
    run = Run()
    start = accepted(wf)
    run.feed(dataclasses.replace(start, event=start.event.model_copy(update={"traceparent": STARTED_IN})))
    for node in ("a", "b", "c"):
        run.feed(completed(run.dispatch(node), {"said": node}))
    assert run.state.status == "succeeded" and run.state.trace is not None
    return run.records


def _forked(source: list[Envelope]) -> tuple[RouterInput, TaskState, list[Envelope]]:
    """The fork request as the router decides it (its context replaced by the router's span for it), and what
    deciding it gives."""
    inp = fork_input(source, position(source, "node.succeeded", "a"))
    ingress = tracing.format_traceparent(*tracing.derive_ingress_ids(inp.event.tenant, inp.event.id))
    decided = RouterInput(inp.event.model_copy(update={"traceparent": ingress}), source=inp.source)
    state, records = apply(TaskState(), decided)
    return decided, state, records


def _source_trace(source: list[Envelope]) -> TaskTrace:
    started = next(r for r in source if r.type == "task.started")
    found = traces.started_trace(started)
    assert found is not None
    return found


def test_a_forks_records_name_the_copied_trace_and_its_spans_have_their_own() -> None:
    source = _traced_source()
    request, state, records = _forked(source)
    copied = _source_trace(source)
    trace = state.trace
    assert trace is not None and trace.own is not None
    # what the records name is the copied history's, byte for byte as before
    assert (trace.trace_id, trace.parent_span_id, trace.span_id) == (copied.trace_id, copied.parent_span_id,
                                                                     copied.span_id)
    forked = next(r for r in records if r.type == "task.forked")
    assert [r.traceparent for r in records[records.index(forked) + 1:]] == [copied.traceparent]
    # the fork's own: under the router's span for the request, a span id no span of the source has
    ingress_trace, ingress_span = tracing.derive_ingress_ids(request.event.tenant, request.event.id)
    assert (trace.own.trace_id, trace.own.parent_span_id) == (ingress_trace, ingress_span)
    assert trace.own.span_id == tracing.derive_span_id("invoke_workflow", forked.id) != copied.span_id
    assert trace.emitted is trace.own
    assert dumps(replay(json_round_trip(records))) == dumps(records)


def test_a_fork_of_an_untraced_task_or_by_an_untraced_router_has_no_trace_of_its_own() -> None:
    source = _traced_source()
    inp = fork_input(source, position(source, "node.succeeded", "a"))
    state, _ = apply(TaskState(), inp)  # the router had tracing off: the request carries no context
    assert state.trace == _source_trace(source) and state.trace is not None and state.trace.own is None
    assert traces.forked_trace(None, envelope("task.forked", {}, id="f1").model_copy(update={"traceparent": STARTED_IN})) is None


def test_a_forks_records_are_published_in_its_own_trace() -> None:
    _, state, records = _forked(_traced_source())
    trace = state.trace
    assert trace is not None and trace.own is not None
    forked, dispatched = (next(r for r in records if r.type == t) for t in ("task.forked", "node.dispatched"))
    assert traces.published_under(dispatched, trace) == trace.own.traceparent
    assert traces.published_under(forked, trace) is None  # names the router's span for the request already
    assert traces.published_under(dispatched, _source_trace(_traced_source())) is None  # not a fork
    assert traces.published_under(dispatched, None) is None

    kept = traces.ForkTraces()
    kept.committed("task-1", _source_trace(_traced_source()))  # only forks are kept
    kept.committed(FORK, trace)
    assert list(kept.traces) == [FORK]
    assert kept.under(dispatched) == trace.own.traceparent


def test_a_request_links_the_trace_of_the_task_it_is_about() -> None:
    source = _traced_source()
    request, state, _ = _forked(source)
    trace = state.trace
    assert trace is not None and trace.own is not None
    cancel = envelope("task.cancel_requested", {"requested_by": "ops"}, id="c1", task_id=FORK)
    approval = envelope("node.approval_decided", {"decided_by": "ops", "node": "a", "approved": True}, id="a1")
    answer = envelope("node.completed", {"node": "a"}, id="n1")
    copied = _source_trace(source)
    assert traces.request_link(request.event, trace) == copied.traceparent  # a fork request: the source's span
    assert traces.request_link(cancel, trace) == trace.own.traceparent  # a fork's cancel: the fork's own span
    assert traces.request_link(approval, copied) == copied.traceparent
    assert traces.request_link(answer, copied) is None  # the engine's own inputs continue their trace anyway
    assert traces.request_link(cancel, None) is None


def _spans(path: Path) -> list[dict[str, Any]]:
    tracing.flush()
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_forks_invoke_workflow_span_is_its_own_and_links_the_source(trace_file: Path) -> None:  # noqa: F811
    source = _traced_source()
    _, state, _ = _forked(source)
    trace = state.trace
    assert trace is not None and trace.own is not None
    traces.emit_workflow_span(trace, workflow="wf", task_id=FORK, tenant="acme", status="succeeded",
                              started_ns=1_000, finished_ns=2_000)
    traces.emit_workflow_span(_source_trace(source), workflow="wf", task_id="task-1", tenant="acme",
                              status="succeeded", started_ns=1_000, finished_ns=2_000)
    fork_span, source_span = _spans(trace_file)
    copied = _source_trace(source)
    assert (fork_span["trace_id"], fork_span["parent_span_id"], fork_span["span_id"]) == (
        f"{trace.own.trace_id:032x}", f"{trace.own.parent_span_id:016x}", f"{trace.own.span_id:016x}")
    assert fork_span["links"] == [{"trace_id": SOURCE_TRACE, "span_id": f"{copied.span_id:016x}"}]
    assert source_span["span_id"] == f"{copied.span_id:016x}" != fork_span["span_id"]
    assert "links" not in source_span


def test_a_link_is_added_to_a_started_span(trace_file: Path) -> None:  # noqa: F811
    span = tracing.start_ingress({}, None, "s", ids=(5, 6))
    tracing.link(span, STARTED_IN)
    tracing.link(span, "junk")  # a malformed context links nothing
    tracing.link(None, STARTED_IN)
    assert span is not None
    span.end()
    [found] = _spans(trace_file)
    assert found["links"] == [{"trace_id": SOURCE_TRACE, "span_id": "00f067aa0ba902b7"}]


class _Bus:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None]] = []

    async def publish(self, record: Envelope, *, under: str | None = None) -> None:
        self.sent.append((record.id, under))


def test_the_relay_publishes_a_forks_records_under_its_own_trace() -> None:
    _, state, records = _forked(_traced_source())
    kept = traces.ForkTraces()
    kept.committed(FORK, state.trace)
    bus = _Bus()
    relay = Relay(bus, None, under=kept.under)  # type: ignore[arg-type]  _publish uses the bus only
    asyncio.run(relay._publish([r for r in records if r.type != "router.input"]))
    assert state.trace is not None and state.trace.own is not None
    assert [u for _, u in bus.sent] == [None, state.trace.own.traceparent]  # task.forked, then the dispatch
