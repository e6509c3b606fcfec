"""The one envelope every event travels in: a CloudEvents 1.0 event (structured mode) whose extension
attributes carry the engine's routing fields.

Python code uses the attribute names (`task_id`, `correlation_id`, ...); the wire spells them as
CloudEvents extensions (`taskid`, `correlationid`, ...). Reading accepts every supported contract version
(`upcasting.upcast` runs before validation); writing always goes through `Envelope.to_wire` (or
`to_bytes`, its bytes), which writes the current version.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent_engine.contracts.upcasting import CONTRACT_VERSION as CONTRACT_VERSION
from agent_engine.contracts.upcasting import SCHEMA_URN as SCHEMA_URN
from agent_engine.contracts.upcasting import is_contract_type, upcast
from agent_engine.contracts.upcasting import schema_uri as schema_uri

TENANT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
TASK_ID_MAX = 128
NO_NUL = r"^[^\x00]*$"
"""A task id is stored as text, which PostgreSQL cannot hold with a NUL character in it."""
TRACE_HEADER_MAX = 512
"""W3C trace context values are short (a traceparent is 55 characters; tracestate at most 32 members)."""
EVENT_NAMESPACE = uuid.UUID("6f1c2a52-8e0b-4a3c-9d55-3b1f0e7a9c10")


_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes


def derive_id(*parts: object) -> str:
    """A deterministic event id from the ids that caused it (uuid5), so replays reproduce ids. The string
    `str(uuid.uuid5(EVENT_NAMESPACE, "/".join(parts)))` is, made without the UUID object (a third of the time;
    the router derives several per input)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "/".join(str(p) for p in parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _absent(value: Any) -> bool:
    return value is None


def dataschema_for(event_type: Any, version: Any) -> str | None:
    """What an event's `dataschema` is: its type's schema for a type of the contract, else none."""
    return schema_uri(event_type, version) if is_contract_type(event_type) else None


class Envelope(BaseModel):
    """A CloudEvents 1.0 event in structured mode. `data` holds the typed payload as JSON."""

    # Absent optional attributes are left out when written (CloudEvents has no null attribute), by
    # `exclude_if` rather than a model serializer, which would triple the cost of every dump on the router's
    # hot path. `dataschema` is never taken from the sender: it follows from `type` and `schema_version` on
    # every way an envelope is made (validation, model_construct, model_copy).

    model_config = ConfigDict(extra="ignore", frozen=True, validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=128, description="unique event id; also the Nats-Msg-Id header")
    source: str = Field(min_length=1, max_length=256, description="who wrote it, e.g. agent-engine/router")
    type: str = Field(min_length=1, max_length=128, description="the event type, e.g. task.requested")
    time: datetime = Field(description="when it happened, RFC 3339 with a timezone")
    subject: str | None = Field(default=None, min_length=1, exclude_if=_absent,
                                description="CloudEvents subject; the engine never sets it")
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = Field(default=None, exclude_if=_absent)
    tenant: str = Field(pattern=TENANT_PATTERN, description="the tenant; also a token of the NATS subject")
    task_id: str = Field(min_length=1, max_length=TASK_ID_MAX, pattern=NO_NUL, validation_alias="taskid",
                         serialization_alias="taskid", description="the task the event belongs to")
    correlation_id: str = Field(min_length=1, max_length=128, validation_alias="correlationid",
                                serialization_alias="correlationid",
                                description="carried unchanged through a task's events")
    causation_id: str | None = Field(default=None, validation_alias="causationid",
                                     serialization_alias="causationid", exclude_if=_absent,
                                     description="the id of the event that caused this one; absent on a request")
    schema_version: int = Field(default=CONTRACT_VERSION, validation_alias="schemaversion",
                                serialization_alias="schemaversion", description="the contract version")
    data: dict[str, Any] = Field(default_factory=dict)
    # CloudEvents' distributed-tracing extension: the W3C trace context the event was written in. Stored with
    # the event (so the router's relay publishes it later), absent when tracing is off, so history written
    # without it keeps its bytes. A malformed value is kept but ignored by tracing (runtime/tracing.py).
    traceparent: str | None = Field(default=None, max_length=TRACE_HEADER_MAX, exclude_if=_absent,
                                    description="W3C traceparent of the span the event was written in")
    tracestate: str | None = Field(default=None, max_length=TRACE_HEADER_MAX, exclude_if=_absent,
                                   description="W3C tracestate that goes with traceparent")

    @model_validator(mode="before")
    @classmethod
    def _upcast(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        body = upcast(value)
        version = body.get("schemaversion", body.get("schema_version", CONTRACT_VERSION))
        return {**body, "dataschema": dataschema_for(body.get("type"), version)}

    @classmethod
    def model_construct(cls, _fields_set: set[str] | None = None, **values: Any) -> Self:
        values["dataschema"] = dataschema_for(values.get("type"), values.get("schema_version", CONTRACT_VERSION))
        return super().model_construct(_fields_set, **values)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        if update and ("type" in update or "schema_version" in update):
            update = {**update, "dataschema": dataschema_for(update.get("type", self.type),
                                                             update.get("schema_version", self.schema_version))}
        return super().model_copy(update=update, deep=deep)

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time must carry a timezone (RFC 3339 with offset or Z)")
        return value

    def to_wire(self) -> dict[str, Any]:
        """The envelope as JSON values, as it is sent and stored: the one way an envelope is written."""
        return self.model_dump(mode="json")

    def to_bytes(self) -> bytes:
        """`to_wire` as JSON bytes (a NATS message body)."""
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> Envelope:
        return cls.model_validate_json(raw)


class Payload(Protocol):
    """An event type's data model (contracts.events.EventData): its TYPE and its fields."""

    TYPE: ClassVar[str]

    def model_dump(self, *, mode: str, by_alias: bool, exclude_none: bool) -> dict[str, Any]: ...


def payload_json(data: Payload | dict[str, Any]) -> dict[str, Any]:
    """The one way a payload is written: JSON types, field aliases (an edge's `from`), no null fields."""
    return data if isinstance(data, dict) else data.model_dump(mode="json", by_alias=True, exclude_none=True)


def caused_by(cause: Envelope, data: Payload | dict[str, Any], *, id: str, source: str, time: datetime | None = None,
              task_id: str | None = None, tenant: str | None = None, correlation_id: str | None = None,
              type: str | None = None, trusted: bool = False, traceparent: str | None = None) -> Envelope:
    """An event caused by `cause`: its tenant, task and correlation unless told otherwise, causation its id.
    `time` defaults to now (a runner's answer); the router passes the cause's time, so replays are exact.
    `trusted` skips validation for values the caller built from validated ones (the router's hot path).
    `traceparent`: the trace context to record with it (the router's records); runners' answers get theirs from
    the span they are published in (runtime/tracing.py)."""
    fields: dict[str, Any] = dict(
        id=id, source=source, type=type or getattr(data, "TYPE", ""), time=time or datetime.now(UTC),
        tenant=tenant or cause.tenant, task_id=task_id or cause.task_id,
        correlation_id=correlation_id or cause.correlation_id, causation_id=cause.id, data=payload_json(data))
    if traceparent is not None:
        fields["traceparent"] = traceparent
    return _constructed(fields) if trusted else Envelope(**fields)


_CAUSED_BY_FIELDS = frozenset({"id", "source", "type", "time", "tenant", "task_id", "correlation_id", "causation_id",
                               "data", "dataschema"})


def _constructed(fields: dict[str, Any]) -> Envelope:
    """`Envelope.model_construct(**fields)` for the fields `caused_by` gives, the same instance (its `__dict__` in
    field order, the same fields set) at a seventh of the cost: pydantic's generic loop over every field's aliases
    and defaults cost more than validating. test_envelope checks it against model_construct."""
    m = Envelope.__new__(Envelope)
    traceparent = fields.get("traceparent")
    object.__setattr__(m, "__dict__", {
        "specversion": "1.0", "id": fields["id"], "source": fields["source"], "type": fields["type"],
        "time": fields["time"], "subject": None, "datacontenttype": "application/json",
        "dataschema": dataschema_for(fields["type"], CONTRACT_VERSION), "tenant": fields["tenant"],
        "task_id": fields["task_id"], "correlation_id": fields["correlation_id"],
        "causation_id": fields["causation_id"], "schema_version": CONTRACT_VERSION, "data": fields["data"],
        "traceparent": traceparent, "tracestate": None})
    object.__setattr__(m, "__pydantic_fields_set__",
                       _CAUSED_BY_FIELDS | {"traceparent"} if traceparent is not None else set(_CAUSED_BY_FIELDS))
    object.__setattr__(m, "__pydantic_extra__", None)
    object.__setattr__(m, "__pydantic_private__", None)
    return m


def command(data: Payload, *, tenant: str, task_id: str, source: str, id: str | None = None,
            causation_id: str | None = None, correlation_id: str | None = None) -> Envelope:
    """A request a client (or a service's own timer) sends, caused by no event on the bus: a fresh id unless
    one is given, the time now, correlated with its task."""
    return Envelope(id=id or str(uuid.uuid4()), source=source, type=data.TYPE, time=datetime.now(UTC),
                    tenant=tenant, task_id=task_id, correlation_id=correlation_id or task_id,
                    causation_id=causation_id, data=payload_json(data))
