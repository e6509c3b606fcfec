"""The audit chain's format: how a stored record is hashed and linked, and what a checkpoint says.

Every record the router stores gets one row in the chain table, written in the same transaction:

    record_hash = H("ae-audit-record-v1" | len(topic) | topic | len(state) | state)
    task_link   = H("ae-audit-task-v1"   | previous task_link of the same aggregate | originator id | version
                    | notification id | record_hash)
    owner       = H("ae-audit-owner-v1"  | originator id | position)
    global_link = H("ae-audit-global-v1" | previous global_link | position | notification id | owner | task_link)

H is SHA-256, integers are unsigned big-endian (4 bytes for the topic's length, 8 for everything else), the
originator id is its 16 bytes, and the first link of each chain follows 32 zero bytes. `state` is exactly
the bytes PostgreSQL holds (after any encryption), so the chain proves the ciphertext and still verifies
after a key is destroyed. `position` counts chained records from 1 without gaps, in notification order.
A task's last link covers every record of the task and where each stands in the global order, so one task
is proven by its own records and the global chain from its last link to the next checkpoint.

A checkpoint is the head of the global chain, `(position, notification id, global_link)`, published by
the router to a JetStream stream PostgreSQL cannot reach (subject `aeaudit.<chain id>`): a rewrite of the
whole chain table does not match it. `scripts/verify_audit_bundle.py` re-implements this with the standard
library alone; a test holds the two to the same answers. Used by the router (writing) and agentctl
(verifying), so it lives here and imports nothing but the standard library.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass

ZERO = bytes(32)
"""What the first link of a chain (a task's, or the global one) follows."""

RECORD_TAG = b"ae-audit-record-v1"
TASK_TAG = b"ae-audit-task-v1"
GLOBAL_TAG = b"ae-audit-global-v1"
OWNER_TAG = b"ae-audit-owner-v1"
BUNDLE_FORMAT = "agent-engine-audit-bundle/1"


def record_hash(topic: str, state: bytes) -> bytes:
    """What one stored record holds: its topic and its stored bytes."""
    name = topic.encode()
    h = hashlib.sha256(RECORD_TAG)
    h.update(len(name).to_bytes(4, "big"))
    h.update(name)
    h.update(len(state).to_bytes(8, "big"))
    h.update(state)
    return h.digest()


def task_link(previous: bytes, originator_id: uuid.UUID, version: int, notification_id: int, record: bytes) -> bytes:
    """A record's link in its aggregate's chain: which record it is, where it stands in the store's order, what
    it holds, and what came before."""
    return hashlib.sha256(TASK_TAG + previous + originator_id.bytes + version.to_bytes(8, "big")
                          + notification_id.to_bytes(8, "big") + record).digest()


def owner(originator_id: uuid.UUID, position: int) -> bytes:
    """Whose record is at `position`, in a form that shows it only to someone who knows the id: an exported
    bundle names the other tasks' rows of its segment by this alone, yet proves none of its task's is left out."""
    return hashlib.sha256(OWNER_TAG + originator_id.bytes + position.to_bytes(8, "big")).digest()


def global_link(previous: bytes, position: int, notification_id: int, originator_id: uuid.UUID,
                task: bytes) -> bytes:
    """A record's link in the store's global order."""
    return global_link_of(previous, position, notification_id, owner(originator_id, position), task)


def global_link_of(previous: bytes, position: int, notification_id: int, owned_by: bytes, task: bytes) -> bytes:
    return hashlib.sha256(GLOBAL_TAG + previous + position.to_bytes(8, "big")
                          + notification_id.to_bytes(8, "big") + owned_by + task).digest()


@dataclass(frozen=True)
class Tables:
    """The tables of one store: eventsourcing's events table and the chain's two tables next to it."""

    events: str = "router_events"

    @property
    def prefix(self) -> str:
        return self.events.removesuffix("_events")

    @property
    def chain(self) -> str:
        return f"{self.prefix}_audit_chain"

    @property
    def meta(self) -> str:
        """One row: the chain's id (a UUID made when the chain table was created), naming its checkpoints."""
        return f"{self.prefix}_audit_meta"


ROUTER = Tables()
"""The router's store (eventsourcing names its table after the application, `router`)."""


@dataclass(frozen=True)
class Checkpoint:
    """The head of a chain at one position, as the router that wrote it saw it."""

    chain: str
    position: int
    notification_id: int
    head: str
    """The global link at `position`, hex."""
    time: str
    """When it was published (ISO 8601, UTC)."""
    router: str = ""
    stream_sequence: int = 0
    """Its sequence in the checkpoint stream (0 before it is published): how an auditor finds it there."""

    def to_json(self) -> bytes:
        body = asdict(self)
        body.pop("stream_sequence")
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, stream_sequence: int = 0) -> Checkpoint:
        body = json.loads(data)
        return cls(chain=str(body["chain"]), position=int(body["position"]),
                   notification_id=int(body["notification_id"]), head=str(body["head"]),
                   time=str(body["time"]), router=str(body.get("router", "")), stream_sequence=stream_sequence)


RESERVED_VARIANT_BITS = 0b111 << 61


def task_aggregate_id(task_id: str) -> uuid.UUID:
    """The aggregate a task is stored under. Only the canonical form of an RFC 4122 UUID (what agentctl and
    the router make) is used as is: other spellings of the same UUID ("{...}", upper case, no hyphens) are
    different task ids and must not collide. Every other id is hashed into a UUID of the reserved variant,
    which no id used as is can spell, so no task id can name another aggregate."""
    try:
        parsed = uuid.UUID(task_id)
    except ValueError:
        parsed = None
    if parsed is not None and str(parsed) == task_id and parsed.variant == uuid.RFC_4122:
        return parsed
    return _hashed(f"agent-engine:task:{task_id}")


def aggregate_id(key: str) -> uuid.UUID:
    """The aggregate a task id, or a "tenant:..." key (a tenant's admission log, or the index of one of its
    idempotency keys), is stored under: the one rule the router's store and agentctl's auditor share."""
    if key.startswith("tenant:"):
        return _hashed(f"agent-engine:{key}")
    return task_aggregate_id(key)


def _hashed(name: str) -> uuid.UUID:
    """uuid5 of `name`, its variant bits set to "reserved for future definition" (111)."""
    value = uuid.uuid5(uuid.NAMESPACE_URL, name).int
    return uuid.UUID(int=(value & ~RESERVED_VARIANT_BITS) | RESERVED_VARIANT_BITS)
