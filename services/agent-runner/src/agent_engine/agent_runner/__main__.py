"""`python -m agent_engine.agent_runner`: the agent-runner service."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.msg import Msg

from agent_engine.agent_runner import judge, pricing
from agent_engine.agent_runner.memory import recall_from
from agent_engine.agent_runner.providers import Gateway
from agent_engine.agent_runner.scores import Scoreboard
from agent_engine.agent_runner.service import SOURCE, AgentRunner
from agent_engine.contracts.subjects import AGENT_RUNNER_RPC, TELEMETRY_RPC, rpc_subject
from agent_engine.memory import MemoryLimits, MemoryStore
from agent_engine.runtime import runner, service
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.queries import answer_query
from agent_engine.runtime.settings import Settings, env_float

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
    gateway.scores = Scoreboard(scores_from(bus), env_float("AE_SCORES_TTL_S", 60.0))

    async def on_providers(msg: Msg) -> None:
        try:
            await answer_query(msg, gateway.status(), bus.nc.max_payload, None)
        except Exception:  # a query must never take the runner down
            log.exception("providers query failed")

    try:
        await bus.nc.subscribe(rpc_subject(AGENT_RUNNER_RPC, "providers"), cb=on_providers)
        await judge.listen(bus, gateway)
        agents = AgentRunner(gateway, memory=recall_from(memory) if memory is not None else None)
        await runner.serve(bus, "agent", SOURCE, agents.handle, settings, stop)
    finally:
        await gateway.aclose()
        await bus.close()
        if memory is not None:
            await asyncio.to_thread(memory.close)


def scores_from(bus: Bus) -> Any:
    """How the scoreboard asks telemetry for a tenant's figures of the last AE_SCORES_WINDOW_H hours."""
    window = timedelta(hours=env_float("AE_SCORES_WINDOW_H", 24.0))

    async def fetch(tenant: str) -> list[dict[str, Any]]:
        since = (datetime.now(UTC) - window).isoformat()
        msg = await bus.nc.request(rpc_subject(TELEMETRY_RPC, "agents"),
                                   json.dumps({"tenant": tenant, "since": since}).encode(), timeout=2)
        reply = json.loads(msg.data)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        rows: list[dict[str, Any]] = reply["agents"]
        return rows
    return fetch


if __name__ == "__main__":
    service.run("agent-runner", main)
