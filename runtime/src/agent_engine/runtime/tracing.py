"""OpenTelemetry traces: one task is one trace across every process it passes through.

`setup(service)` makes a tracer provider from the environment (docs/observability.md, "Traces"):
OTLP over HTTP when OTEL_TRACES_EXPORTER=otlp or an OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set, and our
JSON-lines file when AE_TRACE_FILE is set. With neither, tracing is off and every helper here returns at
its first line (`ENABLED` is false), so the hot paths pay one attribute read.

The trace context travels twice on every hop: in the envelope (CloudEvents' `traceparent` extension,
stored with the record, so the router's relay can publish it later) and in the NATS headers (the
context of the `publish` span, which a consumer's `process` span continues). The pure helpers
(parse, format, derive) are separate from the SDK wiring and unit tested.

A request from outside the engine (a tenant's task request, cancel, fork or approval) is an untrusted
boundary: its sender's context is not the task's parent, or a tenant could put spans into another
tenant's trace or join two tasks into one. `ingress` starts a new trace there and links the sender's
context, as OpenTelemetry advises; AE_TRACE_TRUST_INGRESS=true (senders the deployment trusts) continues
the sender's trace instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from agent_engine.contracts import Envelope
from agent_engine.runtime.tracefile import JsonLinesExporter

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_FILE_ENV = "AE_TRACE_FILE"
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
TRUST_ENV = "AE_TRACE_TRUST_INGRESS"
SENDER_TRACE = "ae.sender.trace_id"
"""The ingress span's attribute naming the trace its sender was in (the span's link names its span too)."""
_TRACEPARENT_RE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

ENABLED = False
"""True once `setup` installed a provider with an exporter: the one check the hooks make when tracing is off."""
_provider: TracerProvider | None = None


# --- pure helpers -----------------------------------------------------------------------------

def parse_traceparent(value: str | None, tracestate: str | None = None) -> SpanContext | None:
    """The remote span context a W3C `traceparent` names; None when absent or malformed (version ff, or an
    all-zero trace or span id, are invalid by the spec). A bad value never fails the message carrying it."""
    if not value:
        return None
    match = _TRACEPARENT_RE.match(value.strip().lower())
    if match is None or match.group(1) == "ff":
        return None
    trace_id, span_id = int(match.group(2), 16), int(match.group(3), 16)
    if trace_id == 0 or span_id == 0:
        return None
    state = trace.TraceState.from_header([tracestate]) if tracestate else None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match.group(4), 16)),
                       trace_state=state)


def format_traceparent(trace_id: int, span_id: int, sampled: bool = True) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def derive_span_id(*parts: object) -> int:
    """A span id that follows from `parts` (the router's records must not depend on a clock or chance)."""
    digest = hashlib.sha1("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def derive_ingress_ids(tenant: str, event_id: str) -> tuple[int, int]:
    """The trace id and span id of the engine's span for a client's request to the router (a fork, a cancel, an
    approval): they follow from the request, so the context the router records is the same on every delivery
    and replay. The tenant is part of it: another tenant's request with the same event id gets another trace."""
    digest = hashlib.sha256(f"ingress/{tenant}/{event_id}".encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1


def trusts_ingress(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a request's sender's trace context is the task's parent (AE_TRACE_TRUST_INGRESS=true: every
    sender is trusted); by default it is only linked from a new trace."""
    environ = os.environ if environ is None else environ
    return environ.get(TRUST_ENV, "").strip().lower() == "true"


def capture_content() -> bool:
    """Whether prompt and response content may go into spans (the GenAI conventions' switch; off by default)."""
    return os.environ.get(CAPTURE_ENV, "").strip().lower() == "true"


# --- setup ------------------------------------------------------------------------------------

class _FixedIds(IdGenerator):
    """Random ids, except ids fixed in advance (`next_span`, `next_trace`): the task's `invoke_workflow` span is
    ended by whichever router sees the task finish, with the id every record of the task names as parent
    (`export_span`); the router's span for a client's request has the trace and span ids it records
    (`start_ingress`)."""

    def __init__(self) -> None:
        self.random = RandomIdGenerator()
        self.next_span: contextvars.ContextVar[int | None] = contextvars.ContextVar("next_span", default=None)
        self.next_trace: contextvars.ContextVar[int | None] = contextvars.ContextVar("next_trace", default=None)

    def generate_span_id(self) -> int:
        return self.next_span.get() or self.random.generate_span_id()

    def generate_trace_id(self) -> int:
        return self.next_trace.get() or self.random.generate_trace_id()


_ids = _FixedIds()


def exporters_from_env(environ: Mapping[str, str]) -> list[SpanExporter]:
    """The exporters the standard variables (and AE_TRACE_FILE) ask for; [] means tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    chosen = {n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()}
    exporters: list[SpanExporter] = []
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if "otlp" in chosen or (endpoint and "none" not in chosen):
        # imported only when asked for: protobuf and requests add start-up time to every process
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())  # reads the OTEL_EXPORTER_OTLP_* variables itself
    if environ.get(TRACE_FILE_ENV):
        exporters.append(JsonLinesExporter(environ[TRACE_FILE_ENV]))
    return exporters


def setup(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install the tracer provider for this process (`service`: router, agent-runner, ..., agentctl) when an
    exporter is configured; returns whether tracing is on. Called once by each process's entry point."""
    global ENABLED, _provider
    environ = os.environ if environ is None else environ
    exporters = exporters_from_env(environ)
    if not exporters:
        return False
    name = environ.get("OTEL_SERVICE_NAME") or f"agent-engine-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}), id_generator=_ids)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider = provider
    ENABLED = True
    return True


def shutdown() -> None:
    """Flush and stop (a process's exit does it too: the provider registers itself with atexit)."""
    global ENABLED, _provider
    if _provider is not None:
        _provider.shutdown()
    _provider, ENABLED = None, False


FLUSH_MS = 2000
"""At most this long for the last spans at exit: an unreachable OTLP collector must not hold a stopping process."""


def flush() -> None:
    if _provider is not None:
        _provider.force_flush(FLUSH_MS)


def tracer() -> trace.Tracer:
    return (_provider or trace.NoOpTracerProvider()).get_tracer("agent_engine")


# --- hooks ------------------------------------------------------------------------------------

def context_of(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """A context whose parent is the remote span `traceparent` names; None when it names none."""
    remote = parse_traceparent(traceparent, tracestate)
    return trace.set_span_in_context(NonRecordingSpan(remote)) if remote is not None else None


def current_traceparent() -> str | None:
    """The traceparent of the span current in this context, if any (what an event written now records)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format_traceparent(span_context.trace_id, span_context.span_id, span_context.trace_flags.sampled)


def _headers_of(span: Span) -> dict[str, str]:
    span_context = span.get_span_context()
    headers = {TRACEPARENT: format_traceparent(span_context.trace_id, span_context.span_id,
                                               span_context.trace_flags.sampled)}
    if span_context.trace_state:
        headers[TRACESTATE] = span_context.trace_state.to_header()
    return headers


def _messaging(subject: str, envelope: Envelope | None, operation: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {"messaging.system": "nats", "messaging.destination.name": subject,
                                  "messaging.operation.type": operation, "messaging.operation.name": operation}
    if envelope is not None:
        attributes.update({"messaging.message.id": envelope.id, "ae.event.type": envelope.type,
                           "ae.task.id": envelope.task_id, "ae.tenant": envelope.tenant})
    return attributes


@contextlib.contextmanager
def publishing(envelope: Envelope, subject: str, *, root: bool = False,
               under: str | None = None) -> Iterator[tuple[Envelope, dict[str, str]]]:
    """Around one publish: a `publish` span (kind producer) under the envelope's own trace context, else under
    the current span. Yields the envelope to send (stamped with the current context when it carried none, so
    the event records where it was written) and the trace headers to add. Without a parent: no span, unless
    `root` (a client's request, which starts the task's trace: the envelope then records the publish span).
    `under`: a context to publish under instead of the envelope's own, which is sent unchanged (a fork's
    stored records name the source task's span; the router publishes them in the fork's own trace)."""
    if not ENABLED:
        yield envelope, {}
        return
    parent = context_of(under) if under else context_of(envelope.traceparent, envelope.tracestate)
    stamp = current_traceparent() if parent is None else None
    if parent is None and stamp is None and not root:
        yield envelope, {}
        return
    with tracer().start_as_current_span(f"publish {subject}", context=parent, kind=SpanKind.PRODUCER,
                                        attributes=_messaging(subject, envelope, "publish")) as span:
        headers = _headers_of(span)
        if parent is None:
            envelope = envelope.model_copy(update={"traceparent": stamp or headers[TRACEPARENT]})
        yield envelope, headers


def _sender_of(headers: Mapping[str, str] | None, envelope: Envelope | None) -> SpanContext | None:
    """The publisher's span (NATS headers) if the message has one, else the context the event was written in."""
    headers = headers or {}
    found = parse_traceparent(headers.get(TRACEPARENT), headers.get(TRACESTATE))
    if found is None and envelope is not None:
        found = parse_traceparent(envelope.traceparent, envelope.tracestate)
    return found


def _parent_of(headers: Mapping[str, str] | None, envelope: Envelope | None) -> Context | None:
    sender = _sender_of(headers, envelope)
    return trace.set_span_in_context(NonRecordingSpan(sender)) if sender is not None else None


@contextlib.contextmanager
def processing(headers: Mapping[str, str] | None, envelope: Envelope | None, subject: str) -> Iterator[Span | None]:
    """Around handling one consumed message from the engine's own services: a current `process` span (kind
    consumer) continuing the publisher's trace. A message that carries no trace context gets no span. (A
    client's request is `ingress`.)"""
    if not ENABLED:
        yield None
        return
    parent = _parent_of(headers, envelope)
    if parent is None:
        yield None
        return
    with tracer().start_as_current_span(f"process {subject}", context=parent, kind=SpanKind.CONSUMER,
                                        attributes=_messaging(subject, envelope, "process")) as span:
        yield span


def start_processing(headers: Mapping[str, str] | None, envelope: Envelope, subject: str) -> Span | None:
    """A `process` span that is not made current (the router applies a batch of messages in one transaction):
    the caller ends it."""
    if not ENABLED:
        return None
    parent = _parent_of(headers, envelope)
    if parent is None:
        return None
    return tracer().start_span(f"process {subject}", context=parent, kind=SpanKind.CONSUMER,
                               attributes=_messaging(subject, envelope, "process"))


def start_ingress(headers: Mapping[str, str] | None, envelope: Envelope | None, subject: str,
                  ids: tuple[int, int] | None = None) -> Span | None:
    """The `process` span of a request from outside the engine, not made current (the caller ends it): the root
    of a new trace, with a link to the sender's context (and its trace id as `ae.sender.trace_id`) when the
    request carries one, so a viewer can go from the sender's trace to the task's and back, yet nothing the
    sender sends decides which trace the engine's spans join. `ids`: the trace and span ids to give it (the
    router's, derived from the request); random otherwise. With AE_TRACE_TRUST_INGRESS=true the sender's span
    is the parent instead, as for any hop."""
    if not ENABLED:
        return None
    attributes = _messaging(subject, envelope, "process")
    if trusts_ingress():
        return tracer().start_span(f"process {subject}", context=_parent_of(headers, envelope),
                                   kind=SpanKind.CONSUMER, attributes=attributes)
    sender = _sender_of(headers, envelope)
    links = []
    if sender is not None:
        links.append(Link(sender))
        attributes[SENDER_TRACE] = f"{sender.trace_id:032x}"
    trace_token = _ids.next_trace.set(ids[0] if ids else None)
    span_token = _ids.next_span.set(ids[1] if ids else None)
    try:  # an empty context: no parent, so the SDK starts a new trace (always sampled, whatever the sender's flag)
        return tracer().start_span(f"process {subject}", context=Context(), kind=SpanKind.CONSUMER,
                                   attributes=attributes, links=links)
    finally:
        _ids.next_span.reset(span_token)
        _ids.next_trace.reset(trace_token)


@contextlib.contextmanager
def ingress(headers: Mapping[str, str] | None, envelope: Envelope | None, subject: str) -> Iterator[Span | None]:
    """`start_ingress`, made current for the block and ended after it (guardrails' input gate): what is
    published inside records the engine's trace, never the sender's."""
    span = start_ingress(headers, envelope, subject)
    if span is None:
        yield None
        return
    with trace.use_span(span, end_on_exit=True):
        yield span


@contextlib.contextmanager
def operation(name: str, attributes: Mapping[str, Any], kind: SpanKind = SpanKind.INTERNAL) -> Iterator[Span | None]:
    """A GenAI operation span (`invoke_agent x`, `chat m`, `execute_tool t`) under the current span, made
    current; an exception leaves it with status error and `error.type`. No span without a current trace."""
    if not ENABLED or not trace.get_current_span().get_span_context().is_valid:
        yield None
        return
    with tracer().start_as_current_span(name, kind=kind, attributes=dict(attributes), record_exception=False,
                                        set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as exc:
            fail(span, str(getattr(exc, "error_class", "") or type(exc).__name__))  # a ProviderError's own class
            raise


def link(span: Span | None, traceparent: str | None) -> None:
    """Add a link to the span `traceparent` names (nothing when either is missing): the router's span for a
    client's request links the task it is about, known only once the task's state is read."""
    found = parse_traceparent(traceparent)
    if span is not None and found is not None:
        span.add_link(found)


def fail(span: Span | None, error_type: str) -> None:
    if span is not None:
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR))


def export_span(name: str, *, traceparent: str, span_id: int, start_ns: int, end_ns: int,
                attributes: Mapping[str, Any], error: str | None = None, links: tuple[str, ...] = ()) -> None:
    """Emit a span that began in another process or earlier (the task's `invoke_workflow`): its parent is the
    span `traceparent` names, its id `span_id` (fixed when the task started), its times the recorded ones;
    `links`: the traceparents of spans it links (a fork's links its source task's)."""
    parent = context_of(traceparent)
    if not ENABLED or parent is None:
        return
    linked = [Link(found) for found in map(parse_traceparent, links) if found is not None]
    token = _ids.next_span.set(span_id)
    try:
        span = tracer().start_span(name, context=parent, kind=SpanKind.INTERNAL, attributes=dict(attributes),
                                   start_time=start_ns, links=linked)
    finally:
        _ids.next_span.reset(token)
    if error is not None:
        fail(span, error)
    span.end(end_time=end_ns)
