"""The AsyncAPI 3.0 document of the bus: valid against the official schema, complete, and built from the
subject map (a change of a subject shows in the document, not only in the code)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent_engine.contracts import asyncapi, subjects
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import EVENT_TYPES

HERE = Path(__file__).parent
OFFICIAL = json.loads((HERE / "asyncapi" / "asyncapi-3.0.0.schema.json").read_text())
COMMITTED = json.loads((HERE.parent / "schemas" / "asyncapi.json").read_text())


def test_the_committed_document_is_valid_asyncapi_3() -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
              for e in jsonschema.Draft7Validator(OFFICIAL).iter_errors(COMMITTED)]
    assert errors == []
    assert COMMITTED["asyncapi"] == "3.0.0"


def test_the_official_schema_catches_a_broken_document() -> None:
    """So the test above validates something: an operation verb AsyncAPI 3 does not have is refused."""
    broken = json.loads(json.dumps(COMMITTED))
    broken["operations"]["guardrails.receive.task.requested"]["action"] = "subscribe"
    assert not jsonschema.Draft7Validator(OFFICIAL).is_valid(broken)


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return own + [r for v in value.values() for r in _refs(v)]
    return [r for v in value for r in _refs(v)] if isinstance(value, list) else []


def test_every_reference_resolves_inside_the_document() -> None:
    for ref in set(_refs(COMMITTED)):
        assert ref.startswith("#/"), ref
        node: Any = COMMITTED
        for part in ref[2:].split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]


def test_every_published_event_type_has_a_channel_at_its_subject() -> None:
    data = {"requested_by": "billing", "decided_by": "billing", "kind": "tool"}
    for event_type in sorted(set(EVENT_TYPES) - asyncapi.UNPUBLISHED):
        event = Envelope(id="e", source="s", type=event_type, time=datetime.now(UTC), tenant="acme",
                         task_id="t", correlation_id="t", data=data)
        channel = COMMITTED["channels"][event_type.replace(".", "_")]
        address = channel["address"].format(tenant="acme", sender="billing", kind="tool",
                                            partition=subjects.partition_of("t"))
        assert address == subjects.subject_for(event), event_type
        named = {p for p in ("tenant", "sender", "kind", "partition") if f"{{{p}}}" in channel["address"]}
        assert set(channel["parameters"]) == named
    assert set(asyncapi.FLOWS) | asyncapi.UNPUBLISHED == set(EVENT_TYPES)


def test_a_request_also_has_the_subject_v1_clients_published_on() -> None:
    bare = COMMITTED["channels"]["task_requested_bare"]
    assert bare["address"] == subjects.type_subject("task.requested", "{tenant}")
    assert COMMITTED["operations"]["guardrails.receive.task.requested.bare"]["channel"] == {
        "$ref": "#/channels/task_requested_bare"}


def test_each_event_type_names_who_sends_it_and_its_payload_schema() -> None:
    ops = COMMITTED["operations"]
    for event_type in asyncapi.FLOWS:
        name = event_type.replace(".", "_")
        assert any(op["action"] == "send" and op["channel"]["$ref"] == f"#/channels/{name}" for op in ops.values())
        payload = COMMITTED["components"]["messages"][name]["payload"]["allOf"][1]["properties"]
        assert payload["data"] == {"$ref": f"#/components/schemas/{name}"}
    tagged = {tag["name"] for op in ops.values() for tag in op["tags"]}
    assert tagged == {*asyncapi.SERVICES, asyncapi.CLIENT}


def test_the_server_requires_nkey_authentication() -> None:
    scheme = COMMITTED["components"]["securitySchemes"]["nkey"]
    assert scheme["type"] == "asymmetricEncryption" and "nonce" in scheme["description"]
    assert COMMITTED["servers"]["nats"]["security"] == [{"$ref": "#/components/securitySchemes/nkey"}]


def test_a_change_of_the_subject_map_shows_at_the_next_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subjects, "PREFIX", "ev")
    addresses = {c["title"]: c["address"] for c in asyncapi.document()["channels"].values() if "title" in c}
    assert addresses["task.accepted"] == "ev.{tenant}.task.accepted"
    assert addresses["every event of a tenant"] == "ev.{tenant}.>"
