"""The workflow registry: revisions of workflow manifests in a NATS KV bucket.

Key `<tenant>.<workflow>` holds the current revision as JSON {"revision": sha256, "manifest": {...}}.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import InvalidKeyError, KeyNotFoundError
from nats.js.kv import KeyValue

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.contracts.subjects import WORKFLOW_BUCKET
from agent_engine.runtime.streams import ensure_bucket


async def bucket(js: JetStreamContext) -> KeyValue:
    # direct gets name the key in the API subject, so a tenant admin's permissions can allow its own keys
    # only (docs/security.md); a read through STREAM.MSG.GET would name it in the body, out of their reach
    return await ensure_bucket(js, KeyValueConfig(bucket=WORKFLOW_BUCKET, history=16, direct=True))


def tenant_bucket(js: JetStreamContext) -> KeyValue:
    """The bucket as a tenant admin's credential reaches it: its own keys, by direct get and put, and no
    lookup of the bucket's stream (whose info lists every tenant's keys)."""
    return KeyValue(name=WORKFLOW_BUCKET, stream=f"KV_{WORKFLOW_BUCKET}", pre=f"$KV.{WORKFLOW_BUCKET}.", js=js,
                    direct=True)


def requested(request: Envelope) -> tuple[str, str]:
    """The (tenant, workflow) a task request names, as `current_entry` looks it up."""
    return request.tenant, str(request.data.get("workflow", ""))


def key(tenant: str, workflow: str) -> str:
    return f"{tenant}.{workflow}"


async def current(kv: KeyValue, tenant: str, workflow: str) -> tuple[str, WorkflowManifest] | None:
    value = await current_entry(kv, tenant, workflow)
    return parse_entry(value) if value else None


async def current_entry(kv: KeyValue, tenant: str, workflow: str) -> bytes | None:
    """The registry's entry for the workflow as stored (None: there is none), for a caller that keeps what it
    parsed from an entry (`parse_entry`) and reads each entry only once."""
    try:
        entry = await kv.get(key(tenant, workflow))
    except (KeyNotFoundError, InvalidKeyError):  # a name no manifest can have is simply not there
        return None
    return entry.value or None


async def current_entries(kv: KeyValue, events: Iterable[Envelope]) -> dict[tuple[str, str], bytes | None]:
    """The registry's entry for each workflow the task requests (`task.accepted`) among `events` name, read together
    (one read per workflow, all at once) rather than one after another as each new task is decided."""
    wanted = list({requested(e) for e in events if e.type == "task.accepted"})
    found = await asyncio.gather(*(current_entry(kv, *w) for w in wanted))
    return dict(zip(wanted, found, strict=True))


def parse_entry(value: bytes) -> tuple[str, WorkflowManifest]:
    body: dict[str, Any] = json.loads(value)
    return body["revision"], WorkflowManifest.model_validate(body["manifest"])


async def push(kv: KeyValue, tenant: str, revision: str, manifest: WorkflowManifest) -> bool:
    """Store a revision as current; False when it already was."""
    found = await current(kv, tenant, manifest.name)
    if found and found[0] == revision:
        return False
    body = {"revision": revision, "manifest": manifest.model_dump(mode="json", by_alias=True)}
    await kv.put(key(tenant, manifest.name), json.dumps(body).encode())
    return True
