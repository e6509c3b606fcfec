"""Whether an answered request is overwritten in the stream's file store when it is deleted, or only deleted.

A JetStream delete that overwrites (the default of `STREAM.MSG.DELETE`) makes nats-server rewrite the whole
block file the message is in, with the stream locked meanwhile: since 2.11 it writes the block out again
(every message still in it, up to 8 MiB for `AE_EVENTS`) rather than the one record. At 64 tasks in flight that
rewrite, once per task, was the engine's largest single cost (docs/performance.md).

The overwrite protects what the request holds and nothing else in the stream does. A request is deleted without
it only when its answer, `task.accepted`, carries every part of it: nothing redacted; only the fields the answer
repeats, with the same JSON; attributes that are the answer's own (its tenant, task, correlation and causation)
or fixed by the contract; a `source` that is the sender's `requested_by` (carried on) or one of the engine's own
clients; a `time` and a `traceparent` that can hold no text; headers that repeat the event's id and task id.
Anything else is overwritten: a rejection, a redaction, a `session`, an unknown field, attribute or header, a
`tracestate`, a repeated JSON key, a number JSON cannot give back as it was sent, a v1 request
(docs/data-lifecycle.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agent_engine.contracts.binding import CE_PREFIX, CONTENT_TYPE, is_binary, structured_body
from agent_engine.contracts.envelope import CONTRACT_VERSION, Envelope, dataschema_for
from agent_engine.contracts.events import TaskAccepted, TaskRequested

CARRIED = frozenset({"workflow", "input", "idempotency_key", "requested_by", "priority", "data_subject",
                     "budget_usd"})
"""The request fields `task.accepted` carries on (`session`, for one, it does not)."""
OWN_CLIENTS = frozenset({"agentctl", "agent-engine-testkit"})
"""Sources that name one of the engine's own clients (any other source must be the sender's `requested_by`)."""
JSON = "application/json"
TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
"""A W3C traceparent: hex digits only, so it can carry no text."""


class _Unfaithful(ValueError):
    """The JSON holds something a parse does not give back whole: a repeated key, a number it rounds."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise _Unfaithful("a repeated key")
    return dict(pairs)


def _float(text: str) -> float:
    if repr(float(text)) != text:
        raise _Unfaithful(f"the number {text[:40]}")
    return float(text)


def _constant(text: str) -> float:
    raise _Unfaithful(text)


def _faithful(text: bytes) -> Any:
    """The JSON, or _Unfaithful when parsing it loses anything of what was sent."""
    return json.loads(text, object_pairs_hook=_pairs, parse_float=_float, parse_constant=_constant)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def must_overwrite(body: bytes, headers: Mapping[str, str] | None, answer: Envelope) -> bool:
    """True unless everything the request holds is carried on by its answer, `task.accepted`."""
    if answer.type != TaskAccepted.TYPE or answer.data.get("redactions"):
        return True
    try:
        event = _faithful(structured_body(body, headers))
        if is_binary(headers):  # the body is the data, which structured_body parsed with the standard library
            _faithful(body)
    except (ValueError, RecursionError):
        return True
    if not isinstance(event, dict) or not _headers_repeat(headers or {}, event):
        return True
    return not (_attributes_carried(event, answer) and _data_carried(event.get("data"), answer))


def _headers_repeat(headers: Mapping[str, str], event: dict[str, Any]) -> bool:
    """Every header repeats what the event says (or, in binary mode, is one of its plain attributes)."""
    binary = is_binary(headers)
    names = [name.lower() for name in headers]
    if len(set(names)) != len(names):
        return False
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith(CE_PREFIX):
            if not binary or lower[len(CE_PREFIX):] in {"", "data", "datacontenttype"}:
                return False
        elif lower == CONTENT_TYPE:
            if value != JSON:
                return False
        elif lower == "nats-msg-id":
            if value != event.get("id"):
                return False
        elif lower == "ae-task-id":
            if value != event.get("taskid"):
                return False
        elif lower == "traceparent":
            if not TRACEPARENT.fullmatch(value):
                return False
        else:
            return False
    return True


def _attributes_carried(event: dict[str, Any], answer: Envelope) -> bool:
    """Each attribute is the answer's own, fixed by the contract, or can hold no text."""
    data = event.get("data")
    requested_by = data.get("requested_by") if isinstance(data, dict) else None
    expected = {"specversion": "1.0", "type": TaskRequested.TYPE, "tenant": answer.tenant, "taskid": answer.task_id,
                "correlationid": answer.correlation_id, "id": answer.causation_id, "schemaversion": CONTRACT_VERSION}
    for name, value in event.items():
        if name == "data":
            continue
        if name in expected:
            ok = value == expected[name] and type(value) is type(expected[name])
        elif name == "datacontenttype":
            ok = value == JSON
        elif name == "dataschema":
            ok = value == dataschema_for(TaskRequested.TYPE, CONTRACT_VERSION)
        elif name == "source":
            ok = isinstance(value, str) and (value in OWN_CLIENTS or value == requested_by)
        elif name == "time":
            ok = isinstance(value, str) and _timestamp(value)
        elif name == "traceparent":
            ok = isinstance(value, str) and TRACEPARENT.fullmatch(value) is not None
        else:
            ok = False
        if not ok:
            return False
    return set(expected) <= set(event)


def _timestamp(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return len(text) <= 40


def _data_carried(data: Any, answer: Envelope) -> bool:
    if not isinstance(data, dict) or not set(data) <= CARRIED:
        return False
    return all(_same(value, answer.data.get(key)) for key, value in data.items())
