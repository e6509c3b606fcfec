"""What the gates' dead letters keep of a message: a copy with every kind of personal data guardrails knows redacted.

A runner's `node.output_produced` carries a node's output before the output gate checked it, and a tool dispatch
carries the arguments a model chose; a message a gate cannot read, or cannot answer after the dead-letter limit,
goes to AE_DLQ, and must not keep there what the gate exists to keep out of the record. Pure: bytes in, bytes out.

A body that is JSON is redacted leaf by leaf (decoded, so an escaped `\\u0040` is read as `@`), keeping the
envelope's identifying attributes as they were, so an operator can still find the task; any other body is decoded
as UTF-8 (bad bytes replaced) and redacted as text.
"""

from __future__ import annotations

import json
from typing import Any

from agent_engine.guardrails import pii

EVERY_KIND = pii.DETECTORS
"""Every built-in kind, whatever a tenant's policy redacts: a dead letter has no policy to ask."""
KEPT = frozenset({"specversion", "id", "source", "type", "time", "tenant", "datacontenttype", "dataschema",
                  # on the wire (CloudEvents extension names), and as the model's fields for a v1 envelope
                  "taskid", "correlationid", "causationid", "schemaversion",
                  "task_id", "correlation_id", "causation_id", "schema_version"})
"""Envelope attributes kept as they are: identifiers every event of the task carries in the clear anyway, which the
phone and IP patterns could otherwise take for personal data (a UUID's digit groups, a time)."""


def redacted_copy(raw: bytes) -> tuple[bytes, dict[str, int]]:
    """`raw` with every match of every kind replaced by `[redacted:<kind>]`, and the count per kind."""
    counts: dict[str, int] = {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON (or not UTF-8): redact the text as it decodes
        return pii.redact_text(raw.decode("utf-8", "replace"), EVERY_KIND, counts).encode(), counts
    if isinstance(value, dict):
        copy: Any = {k: v if _identifier(k, v) else pii.redact(v, EVERY_KIND, counts)
                     for k, v in ((k if k in KEPT else pii.redact_text(k, EVERY_KIND, counts), v)
                                  for k, v in value.items())}
    else:
        copy = pii.redact(value, EVERY_KIND, counts)
    try:
        return json.dumps(copy, ensure_ascii=False).encode(), counts
    except UnicodeEncodeError:  # a lone surrogate (`"\ud800"` is valid JSON): escaped, as it came
        return json.dumps(copy).encode(), counts


def _identifier(key: str, value: Any) -> bool:
    """An envelope attribute kept as it is: one of KEPT, a number or a short string (else it is redacted too)."""
    return key in KEPT and (isinstance(value, (int, float)) or (isinstance(value, str) and len(value) <= 200))
