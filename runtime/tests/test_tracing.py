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
    with tracing.processing({"traceparent": f"00-{TRACE}-{SPAN}-01"}, envelope, "s") as span:
        assert span is None
    with tracing.ingress({"traceparent": f"00-{TRACE}-{SPAN}-01"}, envelope, "s") as span:
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
    with tracing.ingress({}, _envelope(), "ae.acme.task.requested"):  # a request: the trace starts
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


def test_a_request_from_outside_starts_a_new_trace_that_links_its_sender(
        trace_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant's traceparent is not the task's parent (another tenant's trace, or another task's): the engine's
    span is a root, linking the sender's context and naming its trace."""
    monkeypatch.delenv(tracing.TRUST_ENV, raising=False)
    sender = {"traceparent": f"00-{TRACE}-{SPAN}-00"}  # not sampled, too: the engine's trace is recorded anyway
    with tracing.ingress(sender, None, "ae.acme.task.requested.u") as span:
        assert span is not None
        with tracing.publishing(_envelope(), "ae.acme.task.accepted") as (sent, _):
            pass
    spans = {s["name"]: s for s in _read(trace_file)}
    root = spans["process ae.acme.task.requested.u"]
    assert root["parent_span_id"] is None and root["trace_id"] != TRACE
    assert root["links"] == [{"trace_id": TRACE, "span_id": SPAN}]
    assert root["attributes"][tracing.SENDER_TRACE] == TRACE
    # what is published inside records the engine's trace
    assert sent.traceparent == f"00-{root['trace_id']}-{root['span_id']}-01"
    assert spans["publish ae.acme.task.accepted"]["trace_id"] == root["trace_id"]


def test_two_requests_naming_one_trace_get_two_traces(trace_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tracing.TRUST_ENV, raising=False)
    for _ in range(2):
        with tracing.ingress({"traceparent": f"00-{TRACE}-{SPAN}-01"}, None, "s"):
            pass
    first, second = _read(trace_file)
    assert first["trace_id"] != second["trace_id"] and TRACE not in (first["trace_id"], second["trace_id"])


def test_a_request_without_context_starts_a_trace_with_no_link(trace_file: Path) -> None:
    with tracing.ingress({}, None, "s"):
        pass
    [span] = _read(trace_file)
    assert span["parent_span_id"] is None and "links" not in span
    assert tracing.SENDER_TRACE not in span["attributes"]


def test_trusted_senders_are_the_parent(trace_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracing.TRUST_ENV, "true")
    with tracing.ingress({"traceparent": f"00-{TRACE}-{SPAN}-01"}, None, "s"):
        pass
    [span] = _read(trace_file)
    assert (span["trace_id"], span["parent_span_id"]) == (TRACE, SPAN) and "links" not in span


@pytest.mark.parametrize(("value", "trusted"), [("true", True), ("TRUE ", True), ("", False), ("1", False),
                                                 ("false", False), (None, False)])
def test_the_trust_switch(value: str | None, trusted: bool) -> None:
    assert tracing.trusts_ingress({} if value is None else {tracing.TRUST_ENV: value}) is trusted


def test_the_routers_ingress_span_has_the_ids_derived_from_the_request(trace_file: Path) -> None:
    ids = tracing.derive_ingress_ids("acme", "e1")
    assert ids == tracing.derive_ingress_ids("acme", "e1")
    assert ids != tracing.derive_ingress_ids("other", "e1") and ids != tracing.derive_ingress_ids("acme", "e2")
    span = tracing.start_ingress({"traceparent": f"00-{TRACE}-{SPAN}-01"}, _envelope(), "s", ids=ids)
    assert span is not None
    span.end()
    with tracing.ingress({}, None, "s"):  # the fixed ids were for that span only
        pass
    fixed, random = _read(trace_file)
    assert (fixed["trace_id"], fixed["span_id"]) == (f"{ids[0]:032x}", f"{ids[1]:016x}")
    assert fixed["links"] == [{"trace_id": TRACE, "span_id": SPAN}] and fixed["parent_span_id"] is None
    assert random["trace_id"] != fixed["trace_id"]


def test_the_trace_file_is_created_for_its_owner_only(tmp_path: Path) -> None:
    """Spans name tenants, tasks, workflows and models: a file the engine creates is not for every local user."""
    created, existing = tmp_path / "new" / "traces.jsonl", tmp_path / "mine.jsonl"
    existing.touch()
    existing.chmod(0o644)  # its owner chose this: left alone
    for path in (created, existing):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
        with provider.get_tracer("t").start_as_current_span("s"):
            pass
        provider.shutdown()
        assert path.read_text().count("\n") == 1
    assert created.stat().st_mode & 0o777 == 0o600
    assert existing.stat().st_mode & 0o777 == 0o644
