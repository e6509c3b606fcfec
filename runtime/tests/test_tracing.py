"""Trace context propagation (runtime/tracing.py) and the JSON-lines exporter (runtime/tracefile.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from agent_engine.contracts import Envelope
from agent_engine.runtime import tracing
from agent_engine.runtime.tracefile import JsonLinesExporter

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def _envelope(**extra: Any) -> Envelope:
    return Envelope(id="e1", source="test", type="task.requested", time=datetime(2026, 1, 1, tzinfo=UTC),
                    tenant="acme", task_id="t1", correlation_id="t1", data={"workflow": "w"}, **extra)


def test_a_traceparent_parses_and_formats_back() -> None:
    value = f"00-{TRACE}-{SPAN}-01"
    context = tracing.parse_traceparent(value, "vendor=x")
    assert context is not None and context.is_remote and context.trace_flags.sampled
    assert tracing.format_traceparent(context.trace_id, context.span_id) == value
    assert context.trace_state.get("vendor") == "x"
    assert tracing.parse_traceparent(f"00-{TRACE.upper()}-{SPAN}-00") is not None  # case and an unsampled flag


@pytest.mark.parametrize("bad", [None, "", "junk", f"ff-{TRACE}-{SPAN}-01", f"00-{'0' * 32}-{SPAN}-01",
                                 f"00-{TRACE}-{'0' * 16}-01", f"00-{TRACE[:-1]}-{SPAN}-01", f"00-{TRACE}-{SPAN}"])
def test_a_malformed_traceparent_names_no_span(bad: str | None) -> None:
    assert tracing.parse_traceparent(bad) is None
    assert tracing.context_of(bad) is None


def test_derived_span_ids_follow_from_their_parts_only() -> None:
    assert tracing.derive_span_id("invoke_workflow", "e1") == tracing.derive_span_id("invoke_workflow", "e1")
    assert tracing.derive_span_id("invoke_workflow", "e1") != tracing.derive_span_id("invoke_workflow", "e2")
    assert 0 < tracing.derive_span_id("") < 2**64


def test_the_envelope_carries_trace_context_only_when_there_is_one() -> None:
    assert "traceparent" not in _envelope().to_wire() and "tracestate" not in _envelope().to_wire()
    traced = _envelope(traceparent=f"00-{TRACE}-{SPAN}-01")
    assert Envelope.from_bytes(traced.to_bytes()).traceparent == f"00-{TRACE}-{SPAN}-01"
    with pytest.raises(ValueError, match="traceparent"):
        _envelope(traceparent="x" * 600)


def test_exporters_come_from_the_environment(tmp_path: Path) -> None:
    assert tracing.exporters_from_env({}) == []
    [file] = tracing.exporters_from_env({"AE_TRACE_FILE": str(tmp_path / "t.jsonl")})
    assert isinstance(file, JsonLinesExporter)
    assert [type(e) for e in tracing.exporters_from_env({"OTEL_TRACES_EXPORTER": "otlp"})] == [OTLPSpanExporter]
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert [type(e) for e in tracing.exporters_from_env(endpoint)] == [OTLPSpanExporter]
    assert tracing.exporters_from_env({**endpoint, "OTEL_TRACES_EXPORTER": "none"}) == []
    assert tracing.exporters_from_env({"AE_TRACE_FILE": "x", "OTEL_SDK_DISABLED": "true"}) == []


def test_off_when_nothing_is_set() -> None:
    assert tracing.setup("router", {}) is False and not tracing.ENABLED
    envelope = _envelope()
    with tracing.publishing(envelope, "ae.acme.task.requested") as (sent, headers):
        assert sent is envelope and headers == {}
    with tracing.processing({"traceparent": f"00-{TRACE}-{SPAN}-01"}, envelope, "s", root=True) as span:
        assert span is None


@pytest.fixture
def trace_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "traces.jsonl"
    assert tracing.setup("test", {"AE_TRACE_FILE": str(path)})
    yield path
    tracing.shutdown()


def _read(path: Path) -> list[dict[str, Any]]:
    tracing.flush()
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_hop_continues_the_publishers_trace(trace_file: Path) -> None:
    with tracing.processing({}, _envelope(), "ae.acme.task.requested", root=True):  # a request: the trace starts
        with tracing.publishing(_envelope(), "ae.acme.task.accepted") as (sent, headers):
            pass
    # the event records the span it was written in; the header names the publish span
    assert sent.traceparent is not None and headers["traceparent"] != sent.traceparent
    with tracing.processing(headers, sent, "ae.acme.task.accepted"):
        with tracing.operation("invoke_agent a", {"gen_ai.operation.name": "invoke_agent"}):
            pass
    spans = {s["name"]: s for s in _read(trace_file)}
    root, publish = spans["process ae.acme.task.requested"], spans["publish ae.acme.task.accepted"]
    consumer, agent = spans["process ae.acme.task.accepted"], spans["invoke_agent a"]
    assert root["parent_span_id"] is None
    assert len({s["trace_id"] for s in spans.values()}) == 1
    assert (publish["parent_span_id"], consumer["parent_span_id"], agent["parent_span_id"]) == (
        root["span_id"], publish["span_id"], consumer["span_id"])
    assert sent.traceparent == f"00-{root['trace_id']}-{root['span_id']}-01"
    assert publish["kind"] == "producer" and consumer["kind"] == "consumer"
    assert publish["attributes"]["messaging.system"] == "nats"
    assert publish["attributes"]["messaging.destination.name"] == "ae.acme.task.accepted"
    assert publish["service"] == "agent-engine-test"


def test_a_stored_context_is_kept_and_a_message_without_one_gets_no_span(trace_file: Path) -> None:
    stored = _envelope(traceparent=f"00-{TRACE}-{SPAN}-01")
    with tracing.publishing(stored, "ae.acme.node.dispatched.agent") as (sent, headers):
        assert sent is stored  # the record is published as it was stored
    assert headers["traceparent"].startswith(f"00-{TRACE}-")
    with tracing.processing({}, _envelope(), "ae.acme.x") as span:
        assert span is None
    with tracing.operation("chat m", {}) as span:  # no trace in hand: no orphan span
        assert span is None
    [publish] = _read(trace_file)
    assert publish["parent_span_id"] == SPAN and publish["trace_id"] == TRACE


def test_a_span_that_began_elsewhere_is_emitted_with_its_fixed_id_and_times(trace_file: Path) -> None:
    span_id = tracing.derive_span_id("invoke_workflow", "started-1")
    tracing.export_span("invoke_workflow w", traceparent=f"00-{TRACE}-{SPAN}-01", span_id=span_id,
                        start_ns=1_700_000_000_000_000_000, end_ns=1_700_000_002_500_000_000,
                        attributes={"gen_ai.operation.name": "invoke_workflow"}, error="task_failed")
    [span] = _read(trace_file)
    assert span["span_id"] == f"{span_id:016x}" and span["parent_span_id"] == SPAN and span["trace_id"] == TRACE
    assert span["duration_ms"] == 2500.0 and span["status"] == "error"
    assert span["attributes"]["error.type"] == "task_failed"


def test_an_error_leaves_its_class_on_the_operation_span(trace_file: Path) -> None:
    class Refused(Exception):
        error_class = "RateLimited"

    with tracing.processing({"traceparent": f"00-{TRACE}-{SPAN}-01"}, _envelope(), "s"):
        with pytest.raises(Refused), tracing.operation("chat m", {}):
            raise Refused("429")
    spans = {s["name"]: s for s in _read(trace_file)}
    assert spans["chat m"]["status"] == "error" and spans["chat m"]["attributes"]["error.type"] == "RateLimited"


def test_content_capture_is_off_unless_switched_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tracing.CAPTURE_ENV, raising=False)
    assert not tracing.capture_content()
    monkeypatch.setenv(tracing.CAPTURE_ENV, "True")
    assert tracing.capture_content()


def test_writers_in_parallel_append_whole_lines(tmp_path: Path) -> None:
    """Several exporters (as several processes would) appending to one file at once: every line whole."""
    path = tmp_path / "shared.jsonl"

    def write(n: int) -> None:
        provider = TracerProvider(resource=Resource.create({"service.name": f"w{n}"}))
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
        tracer = provider.get_tracer("t")
        for i in range(100):
            with tracer.start_as_current_span(f"span {n}-{i}", attributes={"pad": "x" * 2000}):
                pass
        provider.shutdown()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 400
    assert {json.loads(line)["name"] for line in lines} == {f"span {n}-{i}" for n in range(4) for i in range(100)}


def test_a_clients_request_starts_the_trace_with_its_publish_span(trace_file: Path) -> None:
    with tracing.publishing(_envelope(), "ae.acme.task.requested.u", root=True) as (sent, headers):
        pass
    with tracing.publishing(_envelope(), "ae.acme.x") as (untraced, none):  # not a root: nothing
        pass
    assert none == {} and untraced.traceparent is None
    [span] = _read(trace_file)
    assert span["parent_span_id"] is None and span["kind"] == "producer"
    assert sent.traceparent == headers["traceparent"] == f"00-{span['trace_id']}-{span['span_id']}-01"
