"""What one batch of inputs has decided so far, before it is committed in one transaction.

Records are kept per aggregate (a task, a tenant's admission log under `tenant:<name>`, the index of one of
its idempotency keys under `tenant:<name>/key/<key>`, or a day budget's log under `tenant:<name>/budget/<day>`) with
the
version they build on, beside the states they lead to, so each input is decided on the state the
inputs before it in the batch have reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from agent_engine.contracts.envelope import Envelope
from agent_engine.router.admission import TENANT_KEY, TenantState
from agent_engine.router.budgets import DayState
from agent_engine.router.idempotency import KeyState, key_aggregate, key_of
from agent_engine.router.state import TaskState

SAVE_CHUNK_BYTES = 2 * 1024 * 1024
"""psycopg's pipeline (used by the store) deadlocks on a transaction of about 6 MB; stay well below."""
T = TypeVar("T")
Pending = dict[str, tuple[int, list[Envelope]]]
"""Aggregate key -> (the version its new records build on, the records)."""
Encoded = dict[str, tuple[Envelope, bytes]]
"""Record id -> (the record, its JSON `to_bytes`)."""


@dataclass(frozen=True)
class Snapshot:
    task_id: str
    tenant: str
    pending: tuple[int, list[Envelope]] | None
    log: tuple[int, list[Envelope]] | None
    state: TaskState | None
    tenant_state: TenantState | None
    key: str | None = None
    """The aggregate of the input's idempotency key, if it carries one."""
    key_pending: tuple[int, list[Envelope]] | None = None
    key_state: KeyState | None = None


def _put(table: dict[str, T], key: str, value: T | None) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


@dataclass
class Batch:
    pending: Pending = field(default_factory=dict)
    states: dict[str, TaskState] = field(default_factory=dict)
    tenants: dict[str, TenantState] = field(default_factory=dict)
    """Admission logs as this batch leaves them, by tenant."""
    keys: dict[str, KeyState] = field(default_factory=dict)
    """Idempotency keys' indexes as this batch leaves them, by aggregate key."""
    days: dict[str, DayState] = field(default_factory=dict)
    """Day budgets' logs as this batch leaves them, by aggregate key (budgets.day_key)."""

    def append(self, key: str, version: int, records: list[Envelope]) -> None:
        """Add records to an aggregate; `version` counts only for its first records in the batch."""
        base = self.pending.get(key, (version, []))
        self.pending[key] = (base[0], base[1] + records)

    def snapshot(self, event: Envelope) -> Snapshot:
        """What deciding `event` may change, for `restore`: its task's entries, its tenant's admission log
        and its idempotency key's index (the only logs an input writes to). Entries are replaced, never
        changed in place, so keeping the values is enough."""
        log = TENANT_KEY + event.tenant
        idem = key_of(event)
        key = key_aggregate(event.tenant, idem) if idem is not None else None
        return Snapshot(event.task_id, event.tenant, self.pending.get(event.task_id), self.pending.get(log),
                        self.states.get(event.task_id), self.tenants.get(event.tenant), key,
                        self.pending.get(key) if key else None, self.keys.get(key) if key else None)

    def restore(self, saved: Snapshot) -> None:
        """Undo whatever an input that was refused added (its task's records, its admission records)."""
        _put(self.pending, saved.task_id, saved.pending)
        _put(self.pending, TENANT_KEY + saved.tenant, saved.log)
        _put(self.states, saved.task_id, saved.state)
        _put(self.tenants, saved.tenant, saved.tenant_state)
        if saved.key is not None:
            _put(self.pending, saved.key, saved.key_pending)
            _put(self.keys, saved.key, saved.key_state)

    encoded: Encoded = field(default_factory=dict)
    """Records' JSON, as `to_save` measured them: the store writes these bytes."""

    def to_save(self) -> list[Pending]:
        return chunks({key: entry for key, entry in self.pending.items() if entry[1]}, self.encoded)


def chunks(pending: Pending, encoded: Encoded | None = None) -> list[Pending]:
    """Split a batch into transactions under SAVE_CHUNK_BYTES; a task's records are never split, and a
    batch that writes a tenant's admission log or a key's index is never split (they commit with their tasks).
    The JSON of the records it measures is kept in `encoded`, for the store to write."""
    if len(pending) <= 1 or any(key.startswith(TENANT_KEY) for key in pending):
        return [pending] if pending else []
    out: list[Pending] = [{}]
    size = 0
    cache: Encoded = {} if encoded is None else encoded
    for task_id, entry in pending.items():
        task_size = 0
        for record in entry[1]:
            raw = record.to_bytes()
            cache[record.id] = (record, raw)
            task_size += len(raw)
        if out[-1] and size + task_size > SAVE_CHUNK_BYTES:
            out.append({})
            size = 0
        out[-1][task_id] = entry
        size += task_size
    return out
