"""A span exporter that appends one JSON object per span to a file (AE_TRACE_FILE), for local use.

Every process of a stack appends to the same file. Each batch is written with one `write` on a file
opened with O_APPEND, under an exclusive `flock`, so lines from different processes never interleave.
A file the exporter creates is readable by its owner only (0600: spans name tenants, tasks and models);
an existing file keeps the mode its owner gave it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


def _iso(ns: int | None) -> str | None:
    return None if ns is None else datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds")


FILE_MODE = 0o600


def span_json(span: ReadableSpan) -> dict[str, Any]:
    """One span as a flat JSON object: hex ids (as W3C and OTLP/JSON spell them), times, attributes, and its
    links when it has any (the engine's ingress span links its sender's context)."""
    context = span.get_span_context()
    assert context is not None
    line: dict[str, Any] = {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "name": span.name,
        "kind": span.kind.name.lower(),
        "service": span.resource.attributes.get("service.name"),
        "start": _iso(span.start_time),
        "end": _iso(span.end_time),
        "duration_ms": round(((span.end_time or 0) - (span.start_time or 0)) / 1e6, 3),
        "status": span.status.status_code.name.lower(),
        "attributes": dict(span.attributes or {}),
    }
    if span.links:
        line["links"] = [{"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
                         for link in span.links]
    return line


class JsonLinesExporter(SpanExporter):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        body = "".join(json.dumps(span_json(s), default=str, separators=(",", ":")) + "\n" for s in spans).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                written = 0
                while written < len(body):  # a short write (a full disk aside) is continued under the lock
                    written += os.write(fd, body[written:])
            finally:
                os.close(fd)  # closing releases the lock
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
