"""What one batch of inputs has decided so far, before it is committed in one transaction.

Records are kept per aggregate (a task, or a tenant's admission log under `tenant:<name>`) with the
version they build on, beside the states they lead to, so each input is decided on the state the
inputs before it in the batch have reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent_engine.contracts.envelope import Envelope
from agent_engine.router.admission import TENANT_KEY, TenantState
from agent_engine.router.state import TaskState

SAVE_CHUNK_BYTES = 2 * 1024 * 1024
"""psycopg's pipeline (used by the store) deadlocks on a transaction of about 6 MB; stay well below."""
Pending = dict[str, tuple[int, list[Envelope]]]
"""Aggregate key -> (the version its new records build on, the records)."""


@dataclass
class Batch:
    pending: Pending = field(default_factory=dict)
    states: dict[str, TaskState] = field(default_factory=dict)
    tenants: dict[str, TenantState] = field(default_factory=dict)
    """Admission logs as this batch leaves them, by tenant."""

    def append(self, key: str, version: int, records: list[Envelope]) -> None:
        """Add records to an aggregate; `version` counts only for its first records in the batch."""
        base = self.pending.get(key, (version, []))
        self.pending[key] = (base[0], base[1] + records)

    def snapshot(self, task_id: str) -> Batch:
        """What an input may change: its task's entry and the admission logs (for `restore`)."""
        kept = {k: v for k, v in self.pending.items() if k.startswith(TENANT_KEY) or k == task_id}
        return Batch(kept, dict(self.states), dict(self.tenants))

    def restore(self, task_id: str, saved: Batch) -> None:
        """Undo whatever an input that was refused added (its task's records, its admission records)."""
        for key in [k for k in self.pending if k.startswith(TENANT_KEY) or k == task_id]:
            del self.pending[key]
        self.pending.update(saved.pending)
        self.states, self.tenants = saved.states, saved.tenants

    def to_save(self) -> list[Pending]:
        return chunks({key: entry for key, entry in self.pending.items() if entry[1]})


def chunks(pending: Pending) -> list[Pending]:
    """Split a batch into transactions under SAVE_CHUNK_BYTES; a task's records are never split, and a
    batch that writes a tenant's admission log is never split (the log and its tasks commit together)."""
    if len(pending) <= 1 or any(key.startswith(TENANT_KEY) for key in pending):
        return [pending] if pending else []
    out: list[Pending] = [{}]
    size = 0
    for task_id, entry in pending.items():
        task_size = sum(len(r.model_dump_json()) for r in entry[1])
        if out[-1] and size + task_size > SAVE_CHUNK_BYTES:
            out.append({})
            size = 0
        out[-1][task_id] = entry
        size += task_size
    return out
