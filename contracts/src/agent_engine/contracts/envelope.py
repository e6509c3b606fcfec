"""The one envelope every event travels in: CloudEvents 1.0 attributes plus engine routing fields."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

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
