"""Artifact references: how an event points at content kept outside it (docs/observability.md, "Artifacts").

A node output or tool result field too large to carry in an event is stored content-addressed (by its
sha256) in the tenant's own NATS object store bucket, and the event carries a reference in its place:

    {"artifact": "sha256:<64 hex>", "size": 1048576, "media_type": "text/plain", "name": "fetch.stdout"}

Equal content is stored once, under its hex digest, and may be named by many records of the tenant, so nothing
deletes such an object but erasing the tenant. An output that goes through the output gate is the exception: the
gate deletes it once it stored a redacted version, so the runner stores it under a name of its own dispatch
(`dispatch_object`) and the reference says so in `object`. The object's name is the "locator" `agentctl artifact
get` takes: `sha256:<hex>` for shared content, `sha256:<hex>.<32 hex>` for a dispatch's own copy.

Pure: the choice of what to store and the shape of a reference live here; storing and fetching are
runtime.artifacts' (I/O).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent_engine.contracts.envelope import TENANT_PATTERN

ARTIFACT_BUCKET_PREFIX = "ae_artifacts_"
"""One object store bucket per tenant (`ae_artifacts_<tenant>`): NATS permissions confine a tenant's
credential to its own bucket's stream, and erasing a tenant deletes the bucket."""
ID_PATTERN = r"^sha256:[0-9a-f]{64}$"
OBJECT_PATTERN = r"^[0-9a-f]{64}\.[0-9a-f]{32}$"
"""A dispatch's own copy: the content's hex digest, '.', and 32 hex of the sha256 of the dispatch id."""
LOCATOR_PATTERN = r"^sha256:[0-9a-f]{64}(\.[0-9a-f]{32})?$"
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
    # absent (and so absent from stored history, which replays byte for byte) for shared content
    object: str | None = Field(default=None, pattern=OBJECT_PATTERN, exclude_if=lambda v: v is None,
                               description="the object's name when it is one dispatch's own copy (dispatch_object)")

    @model_validator(mode="after")
    def _object_holds_this_content(self) -> ArtifactRef:
        # the name starts with the content's digest, so a reference can name no other content's object
        if self.object is not None and not self.object.startswith(self.artifact.removeprefix("sha256:") + "."):
            raise ValueError(f"object '{self.object}' is not a copy of {self.artifact}")
        return self


def artifact_id(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


def object_name(ref_id: str) -> str:
    """The object's name in the bucket: the hex digest (a valid id is checked first)."""
    if not re.fullmatch(ID_PATTERN, ref_id):
        raise ValueError(f"'{ref_id}' is not an artifact id (sha256: and 64 lowercase hex digits)")
    return ref_id.removeprefix("sha256:")


def dispatch_object(ref_id: str, dispatch_id: str) -> str:
    """The name of one dispatch's own copy of content `ref_id`: the same for a redelivered dispatch that
    produced the same content (storing it again finds it), another for any other dispatch or content. The
    dispatch id is hashed so the name has one fixed, safe shape whatever the id holds."""
    suffix = hashlib.sha256(dispatch_id.encode()).hexdigest()[:32]
    return f"{object_name(ref_id)}.{suffix}"


def locator(ref: ArtifactRef) -> str:
    """What finds a reference's object: its id for shared content, `sha256:<object>` for a dispatch's copy."""
    return ref.artifact if ref.object is None else "sha256:" + ref.object


def located(value: str) -> tuple[str, str]:
    """The content id and the object name a locator stands for (an artifact id is a locator too)."""
    if not re.fullmatch(LOCATOR_PATTERN, value):
        raise ValueError(f"'{value}' is not an artifact id (sha256: and 64 lowercase hex digits, then, for an "
                         "output the output gate checked, '.' and 32 more)")
    name = value.removeprefix("sha256:")
    return "sha256:" + name.split(".", 1)[0], name


def is_dispatch_copy(value: str) -> bool:
    """Whether a locator names one dispatch's own copy (the only kind the output gate may delete)."""
    return bool(re.fullmatch(LOCATOR_PATTERN, value)) and "." in value


def bucket_of(tenant: str) -> str:
    if not re.fullmatch(TENANT_PATTERN, tenant):
        raise ValueError(f"'{tenant}' is not a tenant name ({TENANT_PATTERN})")
    return ARTIFACT_BUCKET_PREFIX + tenant


def as_ref(value: Any) -> ArtifactRef | None:
    """The reference `value` is, or None: a dict of exactly a reference's fields (`object` optional)."""
    if not isinstance(value, dict) or set(value) - {"object"} != _REQUIRED:
        return None
    try:
        return ArtifactRef.model_validate(value)
    except ValidationError:
        return None


_REQUIRED = {name for name, field in ArtifactRef.model_fields.items() if field.is_required()}


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
    """Every artifact reference anywhere in `value` (an event's data), in order, each object once."""
    found: dict[str, ArtifactRef] = {}

    def walk(v: Any) -> None:
        ref = as_ref(v)
        if ref is not None:
            found.setdefault(locator(ref), ref)
        elif isinstance(v, dict):
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(value)
    return list(found.values())
