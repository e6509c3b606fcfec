"""`python -m agent_engine.tool_runner`: the tool-runner service."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from agent_engine.memory import MemoryLimits, MemoryStore
from agent_engine.runtime import mcp_catalogue, runner, service
from agent_engine.runtime.artifacts import ArtifactStore
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.settings import Settings
from agent_engine.tool_runner.calls import CallLog
from agent_engine.tool_runner.config import ToolConfig
from agent_engine.tool_runner.mcp import McpTools
from agent_engine.tool_runner.mcp_servers import servers_from_env
from agent_engine.tool_runner.service import SOURCE, ToolRunner
from agent_engine.tool_runner.tools import REGISTRY
from agent_engine.tool_runner.tools.python import netns_works, remove_stale_run_dirs

log = logging.getLogger("tool-runner")


async def main(stop: asyncio.Event) -> None:
    settings = Settings()
    try:
        config = ToolConfig.from_env()
        limits = MemoryLimits.from_env()
        servers = servers_from_env()
    except ValueError as exc:
        raise SystemExit(f"tool-runner: {exc}") from None
    stale = await asyncio.to_thread(remove_stale_run_dirs)
    if stale:
        log.info("removed %d python run directories left by tool-runners that were killed mid-run", stale)
    if config.python_netns != "off":
        works = await asyncio.to_thread(netns_works)
        log.info("python tool network isolation: %s", "network namespace (unshare)" if works else
                 "socket guard only: this machine cannot create a network namespace unprivileged")
    log.info("workspace %s; tool time limit %gs; HTTP allowlist: %s", config.workspace, config.timeout_s,
             ",".join(map(str, config.http_allow)) or "empty (http_fetch refuses every host)")
    memory = open_memory(settings, limits)
    try:
        bus = await Bus.open(settings.nats_url, "tool-runner")
        mcp = McpTools(servers)
        try:
            try:
                mcp_registry = await mcp.start()
            except ValueError as exc:
                raise SystemExit(f"tool-runner: {exc}") from None
            # before consuming: a task started from now on finds these tools' schemas
            await mcp_catalogue.publish(await mcp_catalogue.bucket(bus.js), mcp.entries)
            calls = await CallLog.open(bus.js)
            config = dataclasses.replace(config, memory=memory)
            tools = ToolRunner(config, {**REGISTRY, **mcp_registry}, calls=calls, artifacts=ArtifactStore(bus.js))
            await runner.serve(bus, "tool", SOURCE, tools.handle, settings, stop, published=tools.published)
        finally:
            await mcp.stop()
            await bus.close()
    finally:
        if memory is not None:
            await asyncio.to_thread(memory.close)


def open_memory(settings: Settings, limits: MemoryLimits) -> MemoryStore | None:
    """The memory tools' store; it connects in the background, so PostgreSQL being down fails memory
    calls (retryably), not the tool-runner's start."""
    if not settings.postgres_url:
        log.info("memory tools: off (AE_POSTGRES_URL is not set; memory_save and memory_search refuse)")
        return None
    log.info("memory tools: PostgreSQL, at most %d notes per scope, kept %g days",
             limits.max_items, limits.max_age_days)
    return MemoryStore(settings.postgres_url, limits)


if __name__ == "__main__":
    service.run("tool-runner", main)
