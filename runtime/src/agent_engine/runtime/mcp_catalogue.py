"""The MCP catalogue in NATS KV (`ae_mcp_tools`, key `<server>.<tool>`): the tool-runner writes what its MCP
servers list when it starts; the router reads the entries a workflow names when it pins a task's manifest
(contracts/mcp.py says why it goes this way)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.contracts.mcp import MCP_TOOLS_BUCKET, McpRef, McpToolEntry, catalogue_key
from agent_engine.runtime.streams import ensure_bucket

log = logging.getLogger("mcp-catalogue")


async def bucket(js: JetStreamContext) -> KeyValue:
    """Created by the router at start (it may find it empty); the tool-runner, whose credential may not create it,
    waits for it (streams.ensure_bucket)."""
    return await ensure_bucket(js, KeyValueConfig(bucket=MCP_TOOLS_BUCKET, history=1, storage=StorageType.FILE))


async def publish(kv: KeyValue, entries: Iterable[McpToolEntry]) -> None:
    for entry in entries:
        await kv.put(catalogue_key(entry.server, entry.tool), entry.model_dump_json().encode())


def withheld(manifest: WorkflowManifest, found: Mapping[str, McpToolEntry], tenant: str) -> tuple[str, ...]:
    """The tools (by tools.yaml name) of `manifest` whose server the catalogue keeps from `tenant`."""
    return tuple(sorted(name for name, tool in manifest.tools.items() if tool.mcp is not None
                        and (entry := found.get(tool.mcp.key)) is not None and not entry.allows(tenant)))


def for_tenant(manifest: WorkflowManifest, found: Mapping[str, McpToolEntry],
               tenant: str) -> tuple[dict[str, McpToolEntry], tuple[str, ...]]:
    """The entries `tenant` may use, and the tools withheld from it: a server kept from a tenant lends its task
    nothing, not even its tools' schemas."""
    allowed = {key: entry for key, entry in found.items() if entry.allows(tenant)}
    return allowed, withheld(manifest, found, tenant)


async def read(kv: KeyValue, refs: Iterable[McpRef]) -> dict[str, McpToolEntry]:
    """The entries of `refs` that exist, by key; an entry that does not parse counts as missing (and is logged)."""

    async def one(ref: McpRef) -> McpToolEntry | None:
        try:
            found = await kv.get(ref.key)
        except KeyNotFoundError:
            return None
        try:
            return McpToolEntry.model_validate_json(found.value or b"")
        except ValidationError as exc:
            log.warning("MCP catalogue entry %s is not an entry this engine reads: %s", ref.key, exc)
            return None

    refs = list(refs)
    found = await asyncio.gather(*(one(ref) for ref in refs))
    return {ref.key: entry for ref, entry in zip(refs, found, strict=True) if entry is not None}
