"""`python -m agent_engine.agent_runner`: the agent-runner service."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.msg import Msg

from agent_engine.agent_runner import judge, pricing
from agent_engine.agent_runner.memory import recall_from
from agent_engine.agent_runner.providers import Gateway
from agent_engine.agent_runner.service import SOURCE, AgentRunner
from agent_engine.contracts.subjects import AGENT_RUNNER_RPC, rpc_subject
from agent_engine.memory import MemoryLimits, MemoryStore
from agent_engine.runtime import runner, service
from agent_engine.runtime.artifacts import ArtifactStore
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.queries import answer_query
from agent_engine.runtime.settings import Settings

log = logging.getLogger("agent-runner")


async def main(stop: asyncio.Event) -> None:
    settings = Settings()
    try:
        limits = MemoryLimits.from_env()
    except ValueError as exc:
        raise SystemExit(f"agent-runner: {exc}") from None
    gateway = Gateway.from_env()
    log.info("pricing with price table %s", pricing.active().version)
    memory = None
    if settings.postgres_url:  # connects in the background: PostgreSQL being down delays memory nodes only
        memory = MemoryStore(settings.postgres_url, limits)
    else:
        log.info("memory: off (AE_POSTGRES_URL is not set): nodes with `sees: {memory: ...}` get no saved notes")
    bus = await Bus.open(settings.nats_url, "agent-runner")

    async def on_providers(msg: Msg) -> None:
        try:
            await answer_query(msg, gateway.status(), bus.nc.max_payload, None)
        except Exception:  # a query must never take the runner down
            log.exception("providers query failed")

    try:
        await bus.nc.subscribe(rpc_subject(AGENT_RUNNER_RPC, "providers"), cb=on_providers)
        await judge.listen(bus, gateway)
        agents = AgentRunner(gateway, memory=recall_from(memory) if memory is not None else None,
                             artifacts=ArtifactStore(bus.js))
        await runner.serve(bus, "agent", SOURCE, agents.handle, settings, stop)
    finally:
        await gateway.aclose()
        await bus.close()
        if memory is not None:
            await asyncio.to_thread(memory.close)


if __name__ == "__main__":
    service.run("agent-runner", main)
