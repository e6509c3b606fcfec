"""Binary content mode: a CloudEvent whose attributes are `ce-` headers reads as the same envelope as its
structured form. The headers are made by the official SDK's binary encoding (its HTTP binding: the NATS
binding maps attributes to headers the same way)."""

from __future__ import annotations

import json

import pytest
from cloudevents.core.bindings.http import to_binary
from cloudevents.core.formats.json import JSONFormat
from golden_samples import V2
from pydantic import ValidationError

from agent_engine.contracts.binding import is_binary, structured_body
from agent_engine.contracts.envelope import Envelope


@pytest.mark.parametrize("name", ["task.requested", "node.approval_decided", "task.cancel_requested"])
def test_a_binary_mode_event_reads_as_its_structured_form(name: str) -> None:
    structured = (V2 / f"{name}.json").read_bytes()
    message = to_binary(JSONFormat().read(None, structured), JSONFormat())
    assert is_binary(message.headers) and "taskid" not in json.loads(message.body)
    assert Envelope.from_bytes(structured_body(message.body, message.headers)) == Envelope.from_bytes(structured)


def test_a_structured_message_is_read_as_it_is() -> None:
    body = (V2 / "task.requested.json").read_bytes()
    assert structured_body(body, {"Nats-Msg-Id": "x"}) is body
    assert structured_body(body, None) is body


def test_header_names_are_matched_whatever_their_case_and_values_are_percent_decoded() -> None:
    headers = {"CE-SpecVersion": "1.0", "ce-id": "e%201", "ce-source": "billing", "ce-type": "task.requested",
               "ce-time": "2026-03-01T12:00:00Z", "ce-tenant": "acme", "ce-taskid": "t-1", "ce-correlationid": "t-1",
               "ce-schemaversion": "2", "content-type": "application/json"}
    event = Envelope.from_bytes(structured_body(b'{"workflow": "wf"}', headers))
    assert (event.id, event.task_id, event.schema_version, event.data) == ("e 1", "t-1", 2, {"workflow": "wf"})


def test_a_body_that_is_not_json_is_refused_by_validation_with_the_reason() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "e", "ce-source": "s", "ce-type": "task.requested",
               "ce-time": "2026-03-01T12:00:00Z", "ce-tenant": "acme", "ce-taskid": "t", "ce-correlationid": "t"}
    with pytest.raises(ValidationError, match="data"):
        Envelope.from_bytes(structured_body(b"\xff not json", headers))
