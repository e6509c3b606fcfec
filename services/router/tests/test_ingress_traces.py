"""A client's request to the router (fork, cancel, approval) is an untrusted boundary for traces (traces.received):
the sender's traceparent is replaced by the context of the router's own span, the root of a new trace whose ids
follow from the request, so no record names the sender's span and replay decides the recorded input again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from router_testkit import TENANT, dumps, envelope, json_round_trip
from test_fork import finished_run, fork_input, position

from agent_engine.router import traces
from agent_engine.router.core import RouterInput, apply, replay
from agent_engine.router.state import TaskState
from agent_engine.runtime import tracing

FOREIGN = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
"""Another tenant's trace, as a hostile sender would name it."""


@pytest.fixture
def trace_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv(tracing.TRUST_ENV, raising=False)
    path = tmp_path / "traces.jsonl"
    assert tracing.setup("router", {"AE_TRACE_FILE": str(path)})
    yield path
    tracing.shutdown()


def _spans(path: Path) -> list[dict[str, Any]]:
    tracing.flush()
    return [json.loads(line) for line in path.read_text().splitlines()]


def _fork_request() -> RouterInput:
    source = finished_run().records
    inp = fork_input(source, position(source, "node.succeeded", "a"))
    return RouterInput(inp.event.model_copy(update={"traceparent": FOREIGN, "tracestate": "evil=1"}),
                       source=inp.source)


def test_a_fork_request_is_decided_in_a_trace_of_the_engines_own(trace_file: Path) -> None:
    request = _fork_request()
    span, decided = traces.received({"traceparent": FOREIGN}, request.event, "ae.acme.task.fork_requested.ops")
    assert span is not None
    span.end()
    trace_id, span_id = tracing.derive_ingress_ids(request.event.tenant, request.event.id)
    assert decided.traceparent == tracing.format_traceparent(trace_id, span_id) and decided.tracestate is None
    assert (decided.id, decided.data) == (request.event.id, request.event.data)  # nothing else changed

    _, records = apply(TaskState(), RouterInput(decided, source=request.source))
    assert FOREIGN.split("-")[1] not in json.dumps(dumps(records))  # no record names the sender's trace
    forked = next(r for r in records if r.type == "task.forked")
    assert forked.traceparent == decided.traceparent
    assert dumps(replay(json_round_trip(records))) == dumps(records)  # the recorded input decides the same

    [root] = _spans(trace_file)
    assert (root["trace_id"], root["span_id"]) == (f"{trace_id:032x}", f"{span_id:016x}")
    assert root["parent_span_id"] is None and root["kind"] == "consumer"
    assert root["links"] == [{"trace_id": FOREIGN.split("-")[1], "span_id": FOREIGN.split("-")[2]}]


def test_a_redelivered_request_is_decided_with_the_same_context(trace_file: Path) -> None:
    request = _fork_request().event
    first = traces.received({}, request, "s")
    second = traces.received({}, request, "s")
    assert first[1] == second[1]
    for span, _ in (first, second):
        assert span is not None
        span.end()


def test_with_tracing_off_a_senders_context_is_dropped() -> None:
    assert not tracing.ENABLED
    span, decided = traces.received({}, _fork_request().event, "s")
    assert span is None and decided.traceparent is None and "traceparent" not in decided.to_wire()


def test_a_trusted_sender_keeps_its_context(trace_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracing.TRUST_ENV, "true")
    request = _fork_request().event
    span, decided = traces.received({}, request, "s")
    assert decided is request and span is not None
    span.end()
    [process] = _spans(trace_file)
    assert (process["trace_id"], process["parent_span_id"]) == tuple(FOREIGN.split("-")[1:3])


def test_the_engines_own_inputs_pass_as_they_came(trace_file: Path) -> None:
    answer = envelope("node.completed", {"dispatch_id": "d", "node": "n", "attempt": 1, "output": {}}, id="c1",
                      tenant=TENANT).model_copy(update={"traceparent": FOREIGN})
    span, decided = traces.received({}, answer, "s")
    assert decided is answer and span is not None
    span.end()
    [process] = _spans(trace_file)
    assert process["parent_span_id"] == FOREIGN.split("-")[2]


@pytest.mark.parametrize(("traced", "trusted", "expected"), [(True, True, FOREIGN), (False, True, FOREIGN),
                                                             (False, False, None)])
def test_the_context_a_request_is_decided_with(traced: bool, trusted: bool, expected: str | None) -> None:
    request = _fork_request().event
    assert traces.ingress_traceparent(request, traced=traced, trusted=trusted) == expected
