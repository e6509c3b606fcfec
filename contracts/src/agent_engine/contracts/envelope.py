"""The one envelope every event travels in: CloudEvents 1.0 attributes plus engine routing fields."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

CONTRACT_VERSION = 1
"""The schema_version this build writes and accepts. A breaking change bumps it (with an upcaster)."""

TENANT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
TASK_ID_MAX = 128
EVENT_NAMESPACE = uuid.UUID("6f1c2a52-8e0b-4a3c-9d55-3b1f0e7a9c10")


def derive_id(*parts: object) -> str:
    """A deterministic event id from the ids that caused it (uuid5), so replays reproduce ids."""
    return str(uuid.uuid5(EVENT_NAMESPACE, "/".join(str(p) for p in parts)))


class Envelope(BaseModel):
    """CloudEvents-compatible envelope (structured mode). `data` holds the typed payload as JSON."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=128)
    source: str = Field(min_length=1, max_length=256)
    type: str = Field(min_length=1, max_length=128)
    time: datetime
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    tenant: str = Field(pattern=TENANT_PATTERN)
    task_id: str = Field(min_length=1, max_length=TASK_ID_MAX)
    correlation_id: str = Field(min_length=1, max_length=128)
    causation_id: str | None = None
    schema_version: int = CONTRACT_VERSION
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time must carry a timezone (RFC 3339 with offset or Z)")
        return value

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
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
              type: str | None = None, trusted: bool = False) -> Envelope:
    """An event caused by `cause`: its tenant, task and correlation unless told otherwise, causation its id.
    `time` defaults to now (a runner's answer); the router passes the cause's time, so replays are exact.
    `trusted` skips validation for values the caller built from validated ones (the router's hot path)."""
    fields: dict[str, Any] = dict(
        id=id, source=source, type=type or getattr(data, "TYPE", ""), time=time or datetime.now(UTC),
        tenant=tenant or cause.tenant, task_id=task_id or cause.task_id,
        correlation_id=correlation_id or cause.correlation_id, causation_id=cause.id, data=payload_json(data))
    return Envelope.model_construct(**fields) if trusted else Envelope(**fields)


def command(data: Payload, *, tenant: str, task_id: str, source: str, id: str | None = None,
            causation_id: str | None = None, correlation_id: str | None = None) -> Envelope:
    """A request a client (or a service's own timer) sends, caused by no event on the bus: a fresh id unless
    one is given, the time now, correlated with its task."""
    return Envelope(id=id or str(uuid.uuid4()), source=source, type=data.TYPE, time=datetime.now(UTC),
                    tenant=tenant, task_id=task_id, correlation_id=correlation_id or task_id,
                    causation_id=causation_id, data=payload_json(data))
