"""Forgetting a tenant, or one data subject of a tenant, on the router's side: destroy the data keys
(the stored records stay, sealed for good; the task snapshots sealed under them are deleted as well), delete
the memory notes, and drop what this process holds in memory. The streams, the DLQ and the tool-call log
are purged by `agentctl tenant forget`, which asks this.

`aerpc.router.tenant.forget` {"tenant": T, "person": P?, "confirm": true} is answered by one router (a
queue group); it then tells every router on `aerpc.router.tenant.forgotten` to drop its caches.
Page: docs/data-lifecycle.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from agent_engine.contracts.envelope import TENANT_PATTERN
from agent_engine.contracts.subjects import ROUTER_RPC, TENANT_FORGOTTEN, rpc_subject
from agent_engine.memory.store import MemoryStore
from agent_engine.router import snapshots
from agent_engine.router.admission import TENANT_KEY
from agent_engine.router.datakeys import Keyring

log = logging.getLogger("router")
FORGET = rpc_subject(ROUTER_RPC, "tenant.forget")
FORGOTTEN = TENANT_FORGOTTEN
PERSON_MAX = 256


def read_request(raw: bytes) -> tuple[str, str | None, str]:
    """(tenant, person or None, problem: "" when the request may be carried out)."""
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        return "", None, "a forget request must be a JSON object, e.g. {\"tenant\": \"acme\", \"confirm\": true}"
    if not isinstance(body, dict):
        return "", None, "a forget request must be a JSON object"
    tenant, person = body.get("tenant"), body.get("person")
    if not isinstance(tenant, str) or not re.fullmatch(TENANT_PATTERN, tenant):
        return "", None, f"'tenant' must be a tenant name ({TENANT_PATTERN})"
    if person is not None and (not isinstance(person, str) or not 1 <= len(person) <= PERSON_MAX):
        return "", None, f"'person' must be a data subject id of 1 to {PERSON_MAX} characters"
    if body.get("confirm") is not True:
        return "", None, "forgetting destroys data for good: the request must say \"confirm\": true"
    return tenant, person, ""


def forget(keyring: Keyring, memory_url: str, tenant: str, person: str | None) -> dict[str, Any]:
    """Destroy the keys and delete the memory notes (blocking); the answer the CLI prints."""
    destroyed = keyring.destroy(tenant, person)
    try:  # sealed under the destroyed keys, they no longer open; deleting them only frees their rows
        snapshots_deleted = snapshots.drop_erased(keyring.url)
    except psycopg.Error as exc:
        log.warning("snapshots of the destroyed keys not deleted (%s); they stay sealed for good", exc)
        snapshots_deleted = 0
    task_ids = [t for t in destroyed.task_ids if not t.startswith(TENANT_KEY)]  # not the admission log
    memory = MemoryStore(memory_url, max_connections=1)
    try:
        notes = memory.forget(tenant, task_ids if person else None)
    finally:
        memory.close()
    log.warning("forgot %s of tenant '%s': %d data key(s) destroyed, %d task(s) erased, %d snapshot(s) and "
                "%d memory note(s) deleted", "a data subject" if person else "everything", tenant, destroyed.keys,
                len(task_ids), snapshots_deleted, notes)
    return {"tenant": tenant, "person": person is not None, "keys_destroyed": destroyed.keys,
            "tasks_erased": len(task_ids), "task_ids": task_ids if person else [], "memory_notes_deleted": notes}


async def serve_forget(raw: bytes, keyring: Keyring, memory_url: str,
                       publish: Callable[[str, bytes], Awaitable[None]]) -> dict[str, Any]:
    """Answer a forget request: destroy the keys, then tell every router (FORGOTTEN) to drop what it holds."""
    tenant, person, problem = read_request(raw)
    if problem:
        return {"error": problem}
    try:
        answer = await asyncio.to_thread(forget, keyring, memory_url, tenant, person)
        note = {"tenant": tenant, "task_ids": answer["task_ids"] if person else None}
        await publish(FORGOTTEN, json.dumps(note).encode())
    except Exception as exc:
        log.exception("forget failed")
        return {"error": f"the router could not forget: {type(exc).__name__}: {exc}"}
    return answer


def forgotten_note(raw: bytes) -> tuple[str, set[str] | None] | None:
    """A tenant.forgotten note's tenant and the task ids erased (None: all of its tasks); None when malformed."""
    try:
        note = json.loads(raw)
        tenant, task_ids = str(note["tenant"]), note.get("task_ids")
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return tenant, ({str(t) for t in task_ids} if isinstance(task_ids, list) else None)
