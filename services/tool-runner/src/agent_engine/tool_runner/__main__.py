"""`python -m agent_engine.tool_runner`: the tool-runner service."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from agent_engine.runtime import runner, service
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.settings import Settings
from agent_engine.tool_runner.service import SOURCE, ToolRunner


async def main(stop: asyncio.Event) -> None:
    settings = Settings()
    workspace = Path(os.environ.get("AE_TOOL_WORKSPACE", ".")).resolve()
    bus = await Bus.open(settings.nats_url, "tool-runner")
    try:
        await runner.serve(bus, "tool", SOURCE, ToolRunner(workspace).handle, settings, stop)
    finally:
        await bus.close()


if __name__ == "__main__":
    service.run("tool-runner", main)
