"""`python -m agent_engine.router`: the router service."""

from __future__ import annotations

import asyncio

from agent_engine.router.service import Router
from agent_engine.router.store import TaskStore
from agent_engine.runtime import service, workflows
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.settings import Settings


async def main(stop: asyncio.Event) -> None:
    settings = Settings()
    if not settings.postgres_url:
        raise SystemExit("AE_POSTGRES_URL is not set: the router needs PostgreSQL for its event store")
    store = await asyncio.to_thread(TaskStore, settings.postgres_url)
    bus = await Bus.open(settings.nats_url, "router")
    kv = await workflows.bucket(bus.js)
    try:
        await Router(bus, store, kv, settings).run(stop)
    finally:
        await bus.close()
        store.close()


if __name__ == "__main__":
    service.run("router", main)
