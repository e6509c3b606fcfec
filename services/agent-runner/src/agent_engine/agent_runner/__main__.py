"""`python -m agent_engine.agent_runner`: the agent-runner service."""

from __future__ import annotations

import asyncio

from agent_engine.agent_runner.service import SOURCE, AgentRunner, Gateway
from agent_engine.runtime import runner, service
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.settings import Settings


async def main(stop: asyncio.Event) -> None:
    settings = Settings()
    bus = await Bus.open(settings.nats_url, "agent-runner")
    try:
        await runner.serve(bus, "agent", SOURCE, AgentRunner(Gateway.from_env()).handle, settings, stop)
    finally:
        await bus.close()


if __name__ == "__main__":
    service.run("agent-runner", main)
