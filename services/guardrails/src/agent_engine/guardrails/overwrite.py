"""Whether an answered request is overwritten in the stream's file store when it is deleted, or only deleted.

A JetStream delete that overwrites (the default of `STREAM.MSG.DELETE`) makes nats-server rewrite the whole
block file the message is in, with the stream locked meanwhile: since 2.11 it writes the block out again
(every message still in it, up to 8 MB for `AE_EVENTS`) rather than the one record. At 64 tasks in flight that
rewrite, once per task, was the engine's largest single cost (docs/performance.md).

The overwrite protects what the request holds and nothing else in the stream does. A request whose every part
reappears in its `task.accepted` (nothing redacted; no field, attribute or header the answer does not carry on)
is deleted without it: its input is in `task.accepted`, which the stream keeps anyway. Anything else is
overwritten: a redaction, a rejection, a field the answer drops (`session`), an attribute or header this module
does not know. The request's own id, source and time are metadata, not content (docs/data-lifecycle.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from agent_engine.contracts.binding import CE_PREFIX, structured_body
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import TaskAccepted

CARRIED = frozenset({"workflow", "input", "idempotency_key", "requested_by", "priority", "data_subject",
                     "budget_usd"})
"""The request fields `task.accepted` carries on (`session`, for one, it does not)."""
ATTRIBUTES = frozenset({"specversion", "id", "source", "type", "time", "datacontenttype", "dataschema", "tenant",
                        "taskid", "correlationid", "causationid", "schemaversion", "traceparent", "tracestate",
                        "data"})
"""A contract v2 request's attributes (a v1 request, or one with an extension attribute, is overwritten)."""
HEADERS = frozenset({"nats-msg-id", "ae-task-id", "traceparent", "tracestate", "content-type"})
"""The headers clients send besides binary mode's `ce-` attributes (checked with the attributes)."""


def must_overwrite(body: bytes, headers: Mapping[str, str] | None, answer: Envelope) -> bool:
    """True unless everything the request holds is carried on by its answer, `task.accepted`."""
    if answer.type != TaskAccepted.TYPE or answer.data.get("redactions"):
        return True
    if any(name.lower() not in HEADERS and not name.lower().startswith(CE_PREFIX) for name in headers or {}):
        return True
    try:
        event = json.loads(structured_body(body, headers))
    except (ValueError, RecursionError):
        return True
    if not isinstance(event, dict) or not set(event) <= ATTRIBUTES:
        return True
    data = event.get("data")
    if not isinstance(data, dict) or not set(data) <= CARRIED:
        return True
    return any(data[key] != answer.data.get(key) for key in data)
