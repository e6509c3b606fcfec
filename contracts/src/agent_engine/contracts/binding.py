"""CloudEvents binary content mode on NATS: the attributes as `ce-` headers, the body only the data.

The engine writes structured mode (the whole event is the body, see `Envelope.to_bytes`). A client may
send binary mode instead, as the CloudEvents NATS protocol binding allows (the same header mapping as the
HTTP binding: `ce-<attribute>` headers, values percent-encoded, `content-type` for `datacontenttype`).
Every reader turns such a message into the structured body first (`structured_body`), so one parser and
one set of checks (size, nesting, validation) read both modes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import unquote

CE_PREFIX = "ce-"
CONTENT_TYPE = "content-type"
INTEGER_ATTRIBUTES = frozenset({"schemaversion"})
"""Extension attributes of type Integer: a header carries them as text."""


def is_binary(headers: Mapping[str, str] | None) -> bool:
    """Whether a message is a binary-mode CloudEvent: it has a `ce-specversion` header."""
    return bool(headers) and any(name.lower() == CE_PREFIX + "specversion" for name in headers or {})


def structured_body(data: bytes, headers: Mapping[str, str] | None) -> bytes:
    """The message as a structured-mode body: `data` itself when it is one, else the event its `ce-` headers
    and body make. A body that is not JSON is kept as text, so validation names it (`data` must be an
    object) instead of this function failing."""
    if not is_binary(headers):
        return data
    event: dict[str, object] = {}
    for name, value in (headers or {}).items():
        lower = name.lower()
        if lower.startswith(CE_PREFIX) and len(lower) > len(CE_PREFIX):
            attribute, text = lower[len(CE_PREFIX):], unquote(value)
            integer = attribute in INTEGER_ATTRIBUTES and text.removeprefix("-").isdigit()
            event[attribute] = int(text) if integer else text
        elif lower == CONTENT_TYPE:
            event["datacontenttype"] = value
    try:
        event["data"] = json.loads(data) if data.strip() else {}
        return json.dumps(event).encode()
    except (ValueError, RecursionError):
        event["data"] = data.decode("utf-8", "replace")
        return json.dumps(event).encode()
