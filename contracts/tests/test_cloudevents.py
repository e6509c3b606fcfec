"""Contract v2 is CloudEvents 1.0 (structured mode) as the official SDK reads it, and every v1 event
still reads: the golden samples of both versions, and the rules on what the engine writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cloudevents.core.formats.json import JSONFormat
from golden_samples import V1, V2, from_v1
from pydantic import ValidationError

from agent_engine.contracts import CONTRACT_VERSION, EVENT_TYPES, Envelope
from agent_engine.contracts.envelope import schema_uri
from agent_engine.contracts.export import envelope_schema, event_schemas
from agent_engine.contracts.upcasting import upcast

V2_FILES = sorted(V2.glob("*.json"))


def sample(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


ADDED_IN_V2 = frozenset({"task.deduplicated", "tenant.key_claimed", "guardrail.verdict", "node.output_produced",
                         "node.output_checked", "tool.call_cleared", "budget.opened", "budget.reserved",
                         "budget.settled", "budget.exceeded", "budget.alert"})
"""Event types version 1 never had: their samples are v2 only (written by hand, read by every test below)."""


def test_every_event_type_has_a_v2_sample_and_every_v1_type_a_v1_one() -> None:
    assert {p.stem for p in V1.glob("*.json")} == set(EVENT_TYPES) - ADDED_IN_V2
    assert {p.stem for p in V2_FILES} == set(EVENT_TYPES)


def test_v2_samples_are_exactly_what_the_v1_ones_upcast_to() -> None:
    """Not edited by hand: `python contracts/tests/golden_samples.py` writes them from golden/v1."""
    committed = {p.name: p.read_text() for p in V2_FILES if p.stem not in ADDED_IN_V2}
    assert committed == from_v1(), "golden/v2 differs from golden/v1 upcast; run contracts/tests/golden_samples.py"


@pytest.mark.parametrize("path", V2_FILES, ids=lambda p: p.stem)
def test_the_cloudevents_sdk_reads_every_v2_sample(path: Path) -> None:
    body = sample(path)
    event = JSONFormat().read(None, path.read_bytes())
    assert (event.get_id(), event.get_type(), event.get_source()) == (body["id"], path.stem, body["source"])
    assert event.get_specversion() == "1.0"
    assert event.get_time() == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert event.get_dataschema() == schema_uri(path.stem)
    extensions = event.get_extension
    assert (extensions("tenant"), extensions("taskid"), extensions("correlationid")) == (
        body["tenant"], body["taskid"], body["correlationid"])
    assert extensions("schemaversion") == CONTRACT_VERSION
    assert event.get_data() == body["data"]


@pytest.mark.parametrize("path", V2_FILES, ids=lambda p: p.stem)
def test_v2_samples_match_the_published_schemas(path: Path) -> None:
    body = sample(path)
    jsonschema.validate(body, envelope_schema())
    payload_schema = event_schemas()[path.stem]
    assert body["dataschema"] == payload_schema["$id"]
    jsonschema.validate(body["data"], payload_schema)


@pytest.mark.parametrize("path", sorted(V1.glob("*.json")), ids=lambda p: p.stem)
def test_a_v1_sample_reads_as_its_v2_sample(path: Path) -> None:
    v1 = Envelope.from_bytes(path.read_bytes())
    v2 = Envelope.from_bytes((V2 / path.name).read_bytes())
    assert v1 == v2
    assert (v1.task_id, v1.correlation_id, v1.causation_id) == (
        sample(path)["task_id"], sample(path)["correlation_id"], sample(path)["causation_id"])


def envelope(**overrides: Any) -> Envelope:
    fields: dict[str, Any] = dict(id="e-1", source="agentctl", type="task.requested",
                                  time=datetime(2026, 3, 1, 12, tzinfo=UTC), tenant="acme", task_id="t-1",
                                  correlation_id="t-1", data={"workflow": "wf", "input": {"note": None}})
    return Envelope(**{**fields, **overrides})


def test_absent_optional_attributes_are_left_out_and_null_data_values_kept() -> None:
    wire = envelope().to_wire()
    assert "subject" not in wire and "causationid" not in wire
    assert None not in {v for k, v in wire.items() if k != "data"}
    assert wire["data"]["input"] == {"note": None}
    assert json.loads(envelope().to_bytes()) == wire


def test_extension_names_are_legal_cloudevents_names() -> None:
    wire = envelope(causation_id="c-1", subject="s").to_wire()
    standard = {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "dataschema", "data"}
    extensions = set(wire) - standard
    assert extensions == {"tenant", "taskid", "correlationid", "causationid", "schemaversion"}
    assert all(name.isascii() and name.isalnum() and name.islower() for name in extensions)


def test_python_code_keeps_the_attribute_names() -> None:
    event = envelope(causation_id="c-1")
    assert (event.task_id, event.correlation_id, event.causation_id, event.schema_version) == (
        "t-1", "t-1", "c-1", CONTRACT_VERSION)
    assert Envelope.model_validate(event.to_wire()) == event


def test_a_v1_body_as_an_older_engine_wrote_it_reads() -> None:
    v1 = {"specversion": "1.0", "id": "e-1", "source": "agentctl", "type": "task.requested",
          "time": "2026-03-01T12:00:00Z", "subject": None, "datacontenttype": "application/json",
          "tenant": "acme", "task_id": "t-1", "correlation_id": "t-1", "causation_id": None, "schema_version": 1,
          "data": {"workflow": "wf", "input": {"note": None}}}
    assert Envelope.model_validate(v1) == envelope()
    assert Envelope.from_bytes(json.dumps(v1).encode()).to_wire() == envelope().to_wire()
    del v1["schema_version"]  # v1 made it optional
    assert Envelope.model_validate(v1) == envelope()


def test_upcasting_a_v1_record_upcasts_the_envelopes_it_holds() -> None:
    inner = {"id": "i", "source": "s", "type": "task.accepted", "time": "2026-03-01T12:00:00Z", "tenant": "acme",
             "task_id": "t", "correlation_id": "t", "causation_id": None, "schema_version": 1, "data": {}}
    record = {**inner, "id": "r", "type": "router.input", "data": {"input": inner, "source": [inner], "workflow": None}}
    data = upcast(record)["data"]
    assert data["input"] == data["source"][0] == upcast(inner)
    assert "task_id" not in data["input"] and data["input"]["taskid"] == "t" and "causationid" not in data["input"]
    assert data["workflow"] is None
    assert record["data"]["input"] is inner and "task_id" in inner  # the body read is not modified


def test_a_version_this_build_does_not_know_is_not_upcast() -> None:
    body = {**envelope().to_wire(), "schemaversion": 3}
    assert upcast(body) is body


def test_dataschema_follows_the_type_however_the_envelope_is_made() -> None:
    sent = {**envelope().to_wire(), "dataschema": "urn:someone-else"}
    assert Envelope.model_validate(sent).dataschema == schema_uri("task.requested")
    fields = dict(envelope())
    assert Envelope.model_construct(**{**fields, "type": "task.accepted"}).dataschema == schema_uri("task.accepted")
    assert envelope().model_copy(update={"type": "task.rejected"}).to_wire()["dataschema"] == schema_uri(
        "task.rejected")
    assert "dataschema" not in envelope(type="router.input").to_wire()  # no schema: none named


HOSTILE: list[Any] = [None, {"nested": {"deeper": [1]}}, [1, "two"], 1.5, True, "", "x" * 300]


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("attribute", ["type", "schema_version", "schemaversion", "data", "causation_id", "subject"])
def test_any_value_of_an_attribute_is_refused_by_validation_never_by_a_crash(attribute: str, version: int,
                                                                           value: Any) -> None:
    """Found by the fuzz suite: the upcaster runs before validation, on anyone's input (a type that is an
    object made it raise TypeError, which no consumer expects)."""
    body = sample((V1 if version == 1 else V2) / "task.forked.json")
    body[attribute] = value
    try:
        Envelope.model_validate(body)
        Envelope.from_bytes(json.dumps(body).encode())
    except ValidationError:
        pass
    nested = {**sample(V1 / "task.forked.json"), "data": {"history": [value, {"task_id": value, "type": value}]}}
    try:
        Envelope.model_validate(nested)
    except ValidationError:
        pass
