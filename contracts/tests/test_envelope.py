"""The envelope and every event payload: wire round-trips, golden samples, and the rules on the envelope."""

from __future__ import annotations

import json
import random
import uuid
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from agent_engine.contracts import (
    CONTRACT_VERSION,
    EVENT_TYPES,
    Envelope,
    data_model_for,
    parse_data,
    subject_for,
)
from agent_engine.contracts.envelope import EVENT_NAMESPACE, derive_id
from agent_engine.contracts.events import NodeDispatched, TaskRequested
from agent_engine.contracts.subjects import COMMAND_SENDERS, PARTITIONED, PARTITIONS, partition_of, subject_problem
from agent_engine.contracts.upcasting import upcast, version_of

GOLDEN = Path(__file__).parent / "golden"
CURRENT = GOLDEN / f"v{CONTRACT_VERSION}"
GOLDEN_FILES = sorted(GOLDEN.glob("v*/*.json"))


def envelope(**overrides: Any) -> Envelope:
    fields: dict[str, Any] = {
        "id": "e-1", "source": "test", "type": "task.requested", "time": datetime(2026, 3, 1, 12, tzinfo=UTC),
        "tenant": "acme", "task_id": "t-1", "correlation_id": "t-1",
        "data": {"workflow": "research-review", "input": {"brief": "hi"}},
    }
    fields.update(overrides)
    return Envelope(**fields)


def golden(event_type: str) -> dict[str, Any]:
    return json.loads((CURRENT / f"{event_type}.json").read_text())


def assert_subset(expected: Any, actual: Any, path: str = "data") -> None:
    """Every value in `expected` is in `actual` (which may add defaults): nothing was silently dropped."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key}: the current model drops this field"
            assert_subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_subset(e, a, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


# --- golden samples ---------------------------------------------------------------------------

def test_every_event_type_has_a_golden_sample_for_the_current_version() -> None:
    present = {p.stem for p in CURRENT.glob("*.json")}
    assert sorted(set(EVENT_TYPES) - present) == [], f"add golden samples to {CURRENT}"
    assert sorted(present - set(EVENT_TYPES)) == [], "golden samples for event types this build does not know"


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_sample_parses_with_the_current_models(path: Path) -> None:
    raw = path.read_bytes()
    event = Envelope.from_bytes(raw)
    assert event.type == path.stem
    assert f"v{version_of(json.loads(raw))}" == path.parent.name
    assert event.schema_version == CONTRACT_VERSION  # read as the current version, whatever it was written as
    data = parse_data(event.type, event.data)
    assert isinstance(data, EVENT_TYPES[path.stem])
    assert_subset(upcast(json.loads(raw))["data"], data.model_dump(mode="json", by_alias=True))


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_event_type_round_trips_through_envelope_bytes(event_type: str) -> None:
    sample = golden(event_type)
    data = parse_data(event_type, sample["data"])
    original = envelope(id=f"id-{event_type}", type=event_type, causation_id="cause-1",
                        data=data.model_dump(mode="json", exclude_none=True))

    raw = original.to_bytes()
    back = Envelope.from_bytes(raw)

    assert isinstance(raw, bytes)
    assert back == original
    assert parse_data(event_type, back.data) == data
    assert json.loads(raw)["specversion"] == "1.0"
    assert json.loads(raw)["schemaversion"] == CONTRACT_VERSION


def test_round_trip_keeps_the_timezone_and_instant() -> None:
    t = datetime(2026, 3, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    back = Envelope.from_bytes(envelope(time=t).to_bytes())
    assert back.time == t
    assert back.time.utcoffset() == timedelta(hours=2)


def test_data_model_for_unknown_type_lists_known_types() -> None:
    with pytest.raises(ValueError, match="unknown event type 'task.exploded'.*task.requested"):
        data_model_for("task.exploded")


# --- envelope rules ---------------------------------------------------------------------------

def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        envelope(time=datetime(2026, 3, 1, 12))


def test_naive_timestamp_in_json_is_rejected() -> None:
    body = json.loads(envelope().to_bytes())
    body["time"] = "2026-03-01T12:00:00"
    with pytest.raises(ValidationError, match="timezone"):
        Envelope.from_bytes(json.dumps(body).encode())


@pytest.mark.parametrize("tenant", ["", "acme.corp", "acme corp", "*", ">", "a" * 65, "acmé"])
def test_bad_tenant_is_rejected(tenant: str) -> None:
    with pytest.raises(ValidationError, match="tenant"):
        envelope(tenant=tenant)


@pytest.mark.parametrize("tenant", ["acme", "ACME_2", "team-a", "a" * 64])
def test_good_tenant_is_accepted(tenant: str) -> None:
    assert envelope(tenant=tenant).tenant == tenant


def test_unknown_envelope_fields_are_ignored() -> None:
    body = json.loads(envelope().to_bytes())
    body["futureext"] = "a CloudEvents extension this version does not know"
    body["future_field"] = {"nested": True}
    event = Envelope.from_bytes(json.dumps(body).encode())
    assert event == envelope()
    assert "future_field" not in event.to_wire()


def test_the_tracing_extension_is_kept_when_present_and_absent_otherwise() -> None:
    body = {**json.loads(envelope().to_bytes()), "traceparent": "00-abc-def-01"}
    assert Envelope.from_bytes(json.dumps(body).encode()).to_wire()["traceparent"] == "00-abc-def-01"
    assert "traceparent" not in envelope().to_wire()


def test_unknown_payload_fields_are_ignored() -> None:
    data = parse_data("task.requested", {"workflow": "wf", "urgency": "high"})
    assert data == TaskRequested(workflow="wf")
    assert "urgency" not in data.model_dump()


def test_envelope_is_immutable() -> None:
    event = envelope()
    with pytest.raises(ValidationError):
        event.tenant = "other"  # type: ignore[misc]


# --- ids and subjects -------------------------------------------------------------------------

def test_derive_id_is_deterministic_and_a_uuid5() -> None:
    first = derive_id("dispatch-1", "completed")
    assert first == derive_id("dispatch-1", "completed")
    assert uuid.UUID(first).version == 5


@given(st.lists(st.one_of(st.text(st.characters(blacklist_categories=("Cs",))), st.integers()), min_size=1,
                max_size=4))
def test_derive_id_is_the_uuid5_of_its_parts_joined(parts: list[object]) -> None:
    """Ids already stored were made by uuid.uuid5: a derived id must stay exactly that string, or replays differ."""
    assert derive_id(*parts) == str(uuid.uuid5(EVENT_NAMESPACE, "/".join(str(p) for p in parts)))


def test_derive_id_differs_for_different_causes() -> None:
    ids = {derive_id("dispatch-1", "completed"), derive_id("dispatch-1", "errored"),
           derive_id("dispatch-2", "completed"), derive_id("dispatch-1")}
    assert len(ids) == 4


def test_subject_for_node_dispatched_appends_the_kind() -> None:
    for kind in ("agent", "tool"):
        data = parse_data("node.dispatched", {**golden("node.dispatched")["data"], "kind": kind})
        assert isinstance(data, NodeDispatched)
        event = envelope(tenant="acme", type="node.dispatched", data=data.model_dump(mode="json"))
        assert subject_for(event) == f"ae.acme.node.dispatched.{kind}"


@pytest.mark.parametrize("event_type", sorted(set(EVENT_TYPES) - {"node.dispatched"} - PARTITIONED))
def test_subject_for_other_types_is_tenant_then_type(event_type: str) -> None:
    assert subject_for(envelope(tenant="team-b", type=event_type)) == f"ae.team-b.{event_type}"


@pytest.mark.parametrize("event_type", sorted(PARTITIONED))
def test_a_router_input_the_engine_sends_ends_with_its_tasks_partition(event_type: str) -> None:
    event = envelope(tenant="team-b", type=event_type)
    assert subject_for(event) == f"ae.team-b.{event_type}.{partition_of(event.task_id)}"
    assert subject_problem(subject_for(event), event) == ""
    # as a publisher sent it before partitions: still read (by any router), never passed off as another type
    assert subject_problem(f"ae.team-b.{event_type}", event) == ""
    assert subject_problem(f"ae.team-b.{event_type}.{(partition_of(event.task_id) + 1) % PARTITIONS}", event)


def test_a_tasks_partition_is_crc32_of_its_id_and_spreads_tasks_over_every_partition() -> None:
    assert partition_of("task-1") == zlib.crc32(b"task-1") % PARTITIONS  # what a publisher in any language computes
    rng = random.Random(7)  # the same ids every run: a spread test must not be flaky
    counts = Counter(partition_of(str(uuid.UUID(int=rng.getrandbits(128), version=4))) for _ in range(12_000))
    assert set(counts) == set(range(PARTITIONS))
    assert max(counts.values()) < 1.2 * min(counts.values())


def test_client_requests_keep_their_sender_and_are_not_partitioned() -> None:
    assert not PARTITIONED & set(COMMAND_SENDERS)


# --- additions that keep version 1 ------------------------------------------------------------

def test_an_agent_without_fallbacks_or_max_repairs_reads_as_before() -> None:
    from agent_engine.contracts.manifest import AgentSpec

    agent = AgentSpec.model_validate({"model": "claude-haiku-4-5"})
    assert (agent.fallbacks, agent.max_repairs) == ([], 2)


def test_an_agent_declares_an_ordered_fallback_chain() -> None:
    from agent_engine.contracts.manifest import AgentSpec

    agent = AgentSpec.model_validate({"provider": "anthropic", "fallbacks": [
        {"provider": "openai", "model": "gpt-4o-mini"}, {"provider": "anthropic", "model": "claude-haiku-4-5"}]})
    assert [(f.provider, f.model) for f in agent.fallbacks] == [("openai", "gpt-4o-mini"),
                                                                ("anthropic", "claude-haiku-4-5")]


@pytest.mark.parametrize("fallback", [{"provider": "auto", "model": "m"}, {"provider": "openai", "model": ""},
                                      {"provider": "openai", "model": "m", "key": "sk-1"}])
def test_a_bad_fallback_is_refused(fallback: dict[str, Any]) -> None:
    from agent_engine.contracts.manifest import AgentSpec

    with pytest.raises(ValidationError, match="fallbacks.0"):
        AgentSpec.model_validate({"fallbacks": [fallback]})


def test_an_llm_called_event_of_an_older_runner_has_no_repair_outcome() -> None:
    data = parse_data("llm.called", golden("llm.called")["data"])
    assert data.model_dump(exclude_none=True)["repair"] == 0
    assert "outcome" not in data.model_dump(exclude_none=True)


def test_a_task_id_with_a_nul_character_is_refused_as_postgresql_cannot_store_it() -> None:
    body = {"id": "e-1", "source": "s", "type": "task.requested", "time": "2026-12-03T00:00:00Z", "tenant": "acme",
            "taskid": "\x007d40a7c1", "correlationid": "c"}
    with pytest.raises(ValidationError, match="taskid"):
        Envelope.model_validate(body)
    assert Envelope.model_validate({**body, "taskid": "tab\there"}).task_id == "tab\there"


@pytest.mark.parametrize("traceparent", [None, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"])
@pytest.mark.parametrize("event_type", ["node.completed", "llm.called", "x.custom"])
def test_a_trusted_answer_is_the_instance_model_construct_makes(traceparent: str | None, event_type: str) -> None:
    from agent_engine.contracts.envelope import _constructed, caused_by

    cause = Envelope(id="evt-1", source="router", type="node.dispatched", time=datetime(2026, 12, 1, tzinfo=UTC),
                     tenant="acme", task_id="t-1", correlation_id="c-1", data={})
    fast = caused_by(cause, {"x": [1, {"y": None}]}, id="e-2", source="runner", type=event_type, trusted=True,
                     traceparent=traceparent)
    fields = dict(id="e-2", source="runner", type=event_type, time=fast.time, tenant="acme", task_id="t-1",
                  correlation_id="c-1", causation_id="evt-1", data={"x": [1, {"y": None}]})
    if traceparent is not None:
        fields["traceparent"] = traceparent
    generic = Envelope.model_construct(**fields)
    assert list(fast.__dict__.items()) == list(generic.__dict__.items())  # every field, in order, same values
    assert fast.model_fields_set == generic.model_fields_set
    assert fast.__pydantic_extra__ == generic.__pydantic_extra__ and fast.__pydantic_private__ is None
    assert fast == generic and fast.to_bytes() == generic.to_bytes()
    assert list(_constructed(fields).__dict__) == list(Envelope.model_fields)  # a new field must be added there too
