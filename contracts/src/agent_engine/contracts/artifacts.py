"""Artifact references: how an event points at content kept outside it (docs/observability.md, "Artifacts").

A node output or tool result field too large to carry in an event is stored content-addressed (by its
sha256) in the tenant's own NATS object store bucket, and the event carries a reference in its place:

    {"artifact": "sha256:<64 hex>", "size": 1048576, "media_type": "text/plain", "name": "fetch.stdout"}

Pure: the choice of what to store and the shape of a reference live here; storing and fetching are
runtime.artifacts' (I/O).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_engine.contracts.envelope import TENANT_PATTERN

ARTIFACT_BUCKET_PREFIX = "ae_artifacts_"
"""One object store bucket per tenant (`ae_artifacts_<tenant>`): NATS permissions confine a tenant's
credential to its own bucket's stream, and erasing a tenant deletes the bucket."""
ID_PATTERN = r"^sha256:[0-9a-f]{64}$"
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
DEFAULT_THRESHOLD = 64 * 1024
"""AE_ARTIFACT_THRESHOLD: an output field whose JSON is larger than this is stored as an artifact."""
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""AE_ARTIFACT_MAX_BYTES: the largest one artifact (and so one output field) may be."""


class ArtifactRef(BaseModel):
    """A reference to stored content; `artifact` is its id (the sha256 of the bytes), so equal content has one id."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    artifact: str = Field(pattern=ID_PATTERN, description="sha256:<hex> of the stored bytes")
    size: int = Field(ge=0, description="bytes")
    media_type: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=300, description="what it was: <node>.<field>, or a file's path")


def artifact_id(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


def object_name(ref_id: str) -> str:
    """The object's name in the bucket: the hex digest (a valid id is checked first)."""
    if not re.fullmatch(ID_PATTERN, ref_id):
        raise ValueError(f"'{ref_id}' is not an artifact id (sha256: and 64 lowercase hex digits)")
    return ref_id.removeprefix("sha256:")


def bucket_of(tenant: str) -> str:
    if not re.fullmatch(TENANT_PATTERN, tenant):
        raise ValueError(f"'{tenant}' is not a tenant name ({TENANT_PATTERN})")
    return ARTIFACT_BUCKET_PREFIX + tenant


def as_ref(value: Any) -> ArtifactRef | None:
    """The reference `value` is, or None: a dict of exactly a reference's fields."""
    if not isinstance(value, dict) or set(value) != set(ArtifactRef.model_fields):
        return None
    try:
        return ArtifactRef.model_validate(value)
    except ValidationError:
        return None


def encode(value: Any) -> tuple[bytes, str]:
    """The bytes to store for one value, and their media type: a string as UTF-8 text (so `artifact get` gives
    the tool's own text back), anything else as JSON."""
    if isinstance(value, str):
        return value.encode(), TEXT
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(), JSON


def decode(content: bytes, media_type: str) -> Any:
    """The value a reference stands for, as the consumer (an agent's prompt) needs it back."""
    if media_type == JSON:
        return json.loads(content)
    if media_type.startswith("text/"):
        return content.decode(errors="replace")
    return content.decode(errors="replace")  # a binary file in a prompt: its text, as best it reads


def size_of(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def too_large(output: dict[str, Any], threshold: int) -> list[str]:
    """The fields of an output to store as artifacts: each top-level field whose JSON is over `threshold`
    (small fields stay, so routing conditions on them keep working), largest first; then, if the rest is
    still over it, every other field that is not already a reference, largest first, until it fits."""
    sizes = {k: size_of(v) for k, v in output.items() if as_ref(v) is None}
    picked = sorted((k for k, s in sizes.items() if s > threshold), key=lambda k: -sizes[k])
    rest = sum(s for k, s in sizes.items() if k not in picked)
    for key in sorted((k for k in sizes if k not in picked), key=lambda k: -sizes[k]):
        if rest <= threshold:
            break
        picked.append(key)
        rest -= sizes[key]
    return picked


def references(value: Any) -> list[ArtifactRef]:
    """Every artifact reference anywhere in `value` (an event's data), in order, each id once."""
    found: dict[str, ArtifactRef] = {}

    def walk(v: Any) -> None:
        ref = as_ref(v)
        if ref is not None:
            found.setdefault(ref.artifact, ref)
        elif isinstance(v, dict):
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(value)
    return list(found.values())
