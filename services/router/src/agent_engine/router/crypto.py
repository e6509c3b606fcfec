"""Sealing the router's stored records: the `eventsourcing` mapper encrypts each record's state (the
transcoded envelope) before the recorder stores it, and opens it on the way back.

Stored bytes: MAGIC (3) | key id (16) | nonce (12) | AES-256-GCM ciphertext and tag. The associated data
binds the ciphertext to its key, its aggregate and its version, so a record moved to another task or
position no longer opens. Whatever is computed over the stored bytes (the audit chain) covers the
ciphertext, and still verifies after the key is destroyed. Page: docs/data-lifecycle.md.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder

from agent_engine.router.datakeys import DataKey, Keyring

MAGIC = b"AE\x01"
_HEADER = len(MAGIC) + 16 + 12


class BrokenSeal(ValueError):
    """A stored record whose ciphertext does not verify: edited, or moved to another aggregate or version."""


class UnsealedWrite(RuntimeError):
    """A record was about to be stored without a key chosen for its aggregate: a bug, never stored."""


def seal(key: DataKey, aggregate: uuid.UUID, version: int, plaintext: bytes, context: bytes = b"") -> bytes:
    """`context` names what else than a stored record is sealed (a snapshot), so neither opens as the other."""
    nonce = secrets.token_bytes(12)
    return MAGIC + key.key_id.bytes + nonce + AESGCM(key.secret).encrypt(
        nonce, plaintext, _aad(key.key_id, aggregate, version, context))


def sealed_key_id(stored: bytes) -> uuid.UUID | None:
    """The key a stored state was sealed under; None for a record stored in plain before sealing began."""
    if len(stored) < _HEADER or not stored.startswith(MAGIC):
        return None
    return uuid.UUID(bytes=stored[len(MAGIC):len(MAGIC) + 16])


def unseal(key: DataKey, aggregate: uuid.UUID, version: int, stored: bytes, context: bytes = b"") -> bytes:
    nonce = stored[len(MAGIC) + 16:_HEADER]
    return AESGCM(key.secret).decrypt(nonce, stored[_HEADER:], _aad(key.key_id, aggregate, version, context))


def _aad(key_id: uuid.UUID, aggregate: uuid.UUID, version: int, context: bytes = b"") -> bytes:
    # a stored record's context is empty: its associated data is what it has always been
    return MAGIC + key_id.bytes + aggregate.bytes + version.to_bytes(8, "big", signed=True) + context


@dataclass(frozen=True)
class EncodedRecord:
    """A record on its way to the store whose envelope is JSON already (one pydantic dump). The mapper stores it
    as it stores the event of class `topic` with fields `timestamp` and `envelope` (that JSON, decoded): the same
    stored state, read back the same way, without building the envelope's dict and encoding it again."""

    originator_id: uuid.UUID
    originator_version: int
    topic: str
    timestamp: datetime
    envelope: bytes


class SealingMapper(Mapper[uuid.UUID]):
    """A Mapper whose stored state is sealed under the data key the keyring holds for the aggregate.
    Opening a record whose key was destroyed raises keys.KeyDestroyed."""

    def __init__(self, transcoder: Transcoder, keyring: Keyring) -> None:
        super().__init__(transcoder)
        self.keyring = keyring

    def to_stored_event(self, domain_event: DomainEventProtocol[uuid.UUID]) -> StoredEvent:
        plain = (self._encoded(domain_event) if isinstance(domain_event, EncodedRecord)
                 else super().to_stored_event(domain_event))
        aggregate = _uuid(plain.originator_id)
        key_id = self.keyring.key_of(aggregate)
        if key_id is None:
            raise UnsealedWrite(f"no data key chosen for aggregate {aggregate}; nothing was stored")
        key = self.keyring.key(key_id)
        return replace(plain, state=seal(key, aggregate, plain.originator_version, plain.state))

    def _encoded(self, record: EncodedRecord) -> StoredEvent:
        # what Mapper.to_stored_event makes of {"timestamp": ..., "envelope": ...}, the envelope spliced in as JSON
        head = self.transcoder.encode({"timestamp": record.timestamp})
        state = head[:-1] + b',"envelope":' + record.envelope + b"}"
        if self.compressor:
            state = self.compressor.compress(state)
        if self.cipher:
            state = self.cipher.encrypt(state)
        return StoredEvent(originator_id=record.originator_id, originator_version=record.originator_version,
                           topic=record.topic, state=state)

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[uuid.UUID]:
        key_id = sealed_key_id(stored_event.state)
        if key_id is not None:
            key = self.keyring.key(key_id)  # raises KeyDestroyed
            try:
                plain = unseal(key, _uuid(stored_event.originator_id), stored_event.originator_version,
                               stored_event.state)
            except InvalidTag:
                raise BrokenSeal(f"record {stored_event.originator_version} of aggregate "
                                 f"{stored_event.originator_id} does not open under key {key_id}: it was "
                                 "changed, or moved from another task or position") from None
            stored_event = replace(stored_event, state=plain)
        return super().to_domain_event(stored_event)


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)
