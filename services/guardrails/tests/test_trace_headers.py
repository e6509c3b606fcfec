"""The input gate reads a sender's trace context (which the task's new trace links): from its NATS headers, else the
envelope's `traceparent`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_engine.guardrails.service import trace_headers
from agent_engine.runtime import tracing

HEADER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BODY = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[None]:
    tracing.setup("guardrails", {"AE_TRACE_FILE": str(tmp_path / "t.jsonl")})
    yield
    tracing.shutdown()


def test_the_header_wins_then_the_envelope_then_nothing(traced: None) -> None:
    body = json.dumps({"traceparent": BODY, "tracestate": "v=1"}).encode()
    assert trace_headers({"traceparent": HEADER}, body)["traceparent"] == HEADER
    assert trace_headers({"Nats-Msg-Id": "x"}, body) == {"Nats-Msg-Id": "x", "traceparent": BODY, "tracestate": "v=1"}
    assert trace_headers(None, b"not json") == {}
    assert trace_headers(None, b'["a list"]') == {}
    assert trace_headers(None, json.dumps({"traceparent": 5}).encode()) == {}


def test_the_body_is_not_read_when_tracing_is_off() -> None:
    assert not tracing.ENABLED
    assert trace_headers(None, json.dumps({"traceparent": BODY}).encode()) == {}


def test_a_deeply_nested_body_is_no_trace_context_not_an_exception(traced: None) -> None:
    """Review of issue #16: `json.loads` raised RecursionError here, before the input gate's `settle`: the request
    (a submitter's, any tenant's) was redelivered for ever and never dead-lettered nor deleted."""
    assert trace_headers(None, b"[" * 200_000) == {}
    assert trace_headers(None, b'{"a":' * 200_000) == {}
