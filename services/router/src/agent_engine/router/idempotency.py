"""Idempotency keys, pure: a request whose key its tenant used for another task within the window starts
nothing and is answered with the task the key names.

Each (tenant, key) has an aggregate of its own, `tenant:<tenant>/key/<key>` (under the reserved prefix, so no
task id can name it; tenant names hold no "/", so no admission log either). It holds one `tenant.key_claimed`
record per task the key named, stored in the same transaction as that task's first records. The window is
measured between the times of the two requests' `task.accepted` events: no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from agent_engine.contracts.envelope import Envelope
from agent_engine.router.admission import TENANT_KEY

DEFAULT_WINDOW_S = 86_400.0


def key_aggregate(tenant: str, key: str) -> str:
    """The aggregate key of one tenant's idempotency key."""
    return f"{TENANT_KEY}{tenant}/key/{key}"


def is_key_aggregate(key: str) -> bool:
    return key.startswith(TENANT_KEY) and "/key/" in key


def parse_window(raw: str) -> float:
    """AE_IDEMPOTENCY_WINDOW_S: seconds, 0 turns deduplication off."""
    try:
        window = float(raw) if raw.strip() else DEFAULT_WINDOW_S
    except ValueError:
        raise SystemExit(f"AE_IDEMPOTENCY_WINDOW_S={raw!r} is not a number of seconds") from None
    if window < 0:
        raise SystemExit("AE_IDEMPOTENCY_WINDOW_S must not be negative")
    return window


@dataclass(frozen=True)
class KeyState:
    task_id: str | None = None
    """The task the key names now (the last claim)."""
    claimed_at: datetime | None = None
    version: int = 0


@dataclass(frozen=True)
class Duplicate:
    """What the key's index said of a new request; recorded with the request's input, so replay agrees."""

    original_task_id: str
    claimed_at: str
    """When the key was claimed (ISO 8601), as the index recorded it."""


def key_of(event: Envelope) -> str | None:
    """The idempotency key a task.accepted carries, when it carries one."""
    key = event.data.get("idempotency_key") if event.type == "task.accepted" else None
    return key if isinstance(key, str) and key else None


def duplicate_of(state: KeyState, event: Envelope, window_s: float) -> Duplicate | None:
    """The task `event` duplicates: the one its key names, if the key was claimed within the window before
    (or, across guardrails clocks, up to the window after) the request. None: the request may start a task."""
    if window_s <= 0 or state.task_id is None or state.claimed_at is None or state.task_id == event.task_id:
        return None
    if abs(event.time - state.claimed_at) > timedelta(seconds=window_s):
        return None
    return Duplicate(state.task_id, state.claimed_at.isoformat())


def evolve_key(state: KeyState, record: Envelope) -> KeyState:
    state = replace(state, version=state.version + 1)
    if record.type == "tenant.key_claimed":
        return replace(state, task_id=record.task_id, claimed_at=record.time)
    return state


def fold_key(records: list[Envelope]) -> KeyState:
    state = KeyState()
    for record in records:
        state = evolve_key(state, record)
    return state
