"""`python -m agent_engine.router`: the router service."""

from __future__ import annotations

import asyncio
import logging
import os

from agent_engine.router import outputchecks
from agent_engine.router.admission import Limits
from agent_engine.router.budgets import DayLimits
from agent_engine.router.datakeys import MasterKeyError, master_key_from_env
from agent_engine.router.idempotency import parse_window
from agent_engine.router.service import Router
from agent_engine.router.store import TaskStore
from agent_engine.runtime import health, mcp_catalogue, service, workflows
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.settings import Settings


async def open_store(url: str, master_key: bytes, stop: asyncio.Event) -> TaskStore | None:
    """Wait for PostgreSQL rather than crash-looping while it restarts."""
    delay = 0.2
    while not stop.is_set():
        try:
            return await asyncio.to_thread(TaskStore, url, master_key)
        except Exception as exc:  # noqa: BLE001  any connection failure: wait and retry
            logging.getLogger("router").warning("PostgreSQL not reachable (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    return None


async def main(stop: asyncio.Event) -> None:
    settings = Settings()
    limits = Limits.parse(os.environ.get("AE_TENANT_MAX_RUNNING", ""), os.environ.get("AE_TENANT_MAX_QUEUED", ""),
                          os.environ.get("AE_TENANT_LIMITS", ""))
    window_s = parse_window(os.environ.get("AE_IDEMPOTENCY_WINDOW_S", ""))
    day_limits = DayLimits.parse(os.environ.get("AE_BUDGET_LIMITS", ""))
    output_checks = outputchecks.parse(os.environ.get(outputchecks.ENV, ""))
    if not settings.postgres_url:
        raise SystemExit("AE_POSTGRES_URL is not set: the router needs PostgreSQL for its event store")
    try:
        master_key = master_key_from_env()
    except MasterKeyError as exc:
        raise SystemExit(str(exc)) from None
    store = await open_store(settings.postgres_url, master_key, stop)
    if store is None:
        return
    health.PROCESS.add("postgres", health.postgres(settings.postgres_url))
    bus = await Bus.open(settings.nats_url, "router")
    kv = await workflows.bucket(bus.js)
    await mcp_catalogue.bucket(bus.js)  # made here, at start: the tool-runner, which may not create it, waits for it
    try:
        await Router(bus, store, kv, settings, limits, window_s, day_limits, output_checks).run(stop)
    finally:
        await bus.close()
        store.close()


if __name__ == "__main__":
    service.run("router", main)
