"""Which data key seals an aggregate's records: chosen when its first records are saved, then kept.

- a tenant's admission log, and a task whose request names no data subject: the tenant's key;
- a task whose request names its data subject (`data_subject` of task.accepted): that person's key;
- a SPLIT's subtask, or a fork: the key of the task it came from (a person's data stays under their key).

Page: docs/data-lifecycle.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from agent_engine.contracts.envelope import Envelope
from agent_engine.router.admission import TENANT_KEY
from agent_engine.router.datakeys import KeyDestroyed, Keyring
from agent_engine.router.records import INPUT_RECORD


def choose_keys(keyring: Keyring, pending: Mapping[str, tuple[uuid.UUID, Sequence[Envelope]]],
                aggregate_of: Callable[[str], uuid.UUID], new: Collection[str] = ()) -> None:
    """Make sure every aggregate about to get records has a live key. Raises KeyDestroyed for a task whose
    key was destroyed: an erased task takes no new records. `new`: the keys whose records are their first (none
    stored yet), so there is nothing to look up: their key is chosen now (over any a failed save chose)."""
    uses = []
    chosen = keyring.keys_of(aggregate for key, (aggregate, _) in pending.items() if key not in new)
    for key, (aggregate, records) in pending.items():
        current = chosen.get(aggregate)
        if current is not None:
            try:
                keyring.key(current)
                continue
            except KeyDestroyed:
                if not key.startswith(TENANT_KEY):
                    raise
        tenant = records[0].tenant
        key_id = _first_key(keyring, key, tenant, records[0], aggregate_of)
        uses.append((aggregate, key_id, tenant, key))
    keyring.assign(uses)


def _first_key(keyring: Keyring, key: str, tenant: str, first: Envelope,
               aggregate_of: Callable[[str], uuid.UUID]) -> uuid.UUID:
    if key.startswith(TENANT_KEY) or first.type != INPUT_RECORD:
        return keyring.live_key(tenant).key_id
    event: dict[str, Any] = first.data.get("input") or {}
    data: dict[str, Any] = event.get("data") or {}
    origin: str | None = None
    if event.get("type") == "subtask.requested":
        origin = str((data.get("lineage") or {}).get("parent_id") or "")
    elif event.get("type") == "task.fork_requested":
        origin = str(data.get("source_task_id") or "")
    if origin:
        inherited = keyring.key_of(aggregate_of(origin))
        # a task made from an erased one is erased too (key() raises KeyDestroyed); never another tenant's key
        if inherited is not None and keyring.key(inherited).tenant == tenant:
            return inherited
    person = data.get("data_subject")
    return keyring.live_key(tenant, person if isinstance(person, str) and person else None).key_id
