"""`python -m agent_engine.agent_runner`: the agent-runner service."""

from __future__ import annotations

import asyncio
import json
import logging

from nats.aio.msg import Msg

from agent_engine.agent_runner import pricing
from agent_engine.agent_runner.providers import Gateway
from agent_engine.agent_runner.service import SOURCE, AgentRunner
from agent_engine.contracts.subjects import AGENT_RUNNER_RPC
from agent_engine.runtime import runner, service
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.settings import Settings

log = logging.getLogger("agent-runner")


async def main(stop: asyncio.Event) -> None:
    settings = Settings()
    gateway = Gateway.from_env()
    log.info("pricing with price table %s", pricing.active().version)
    bus = await Bus.open(settings.nats_url, "agent-runner")

    async def on_providers(msg: Msg) -> None:
        try:
            await msg.respond(json.dumps(gateway.status()).encode())
        except Exception:  # a query must never take the runner down
            log.exception("providers query failed")

    try:
        await bus.nc.subscribe(f"{AGENT_RUNNER_RPC}.providers", cb=on_providers)
        await runner.serve(bus, "agent", SOURCE, AgentRunner(gateway).handle, settings, stop)
    finally:
        await gateway.aclose()
        await bus.close()


if __name__ == "__main__":
    service.run("agent-runner", main)
