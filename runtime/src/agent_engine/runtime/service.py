"""Run a service's async main until SIGTERM/SIGINT, with one log setup for all services."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from agent_engine.runtime import logs

Main = Callable[[asyncio.Event], Awaitable[None]]


def run(service: str, main: Main) -> None:
    log = logs.setup(service)

    async def wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("starting")
        await main(stop)
        log.info("stopped")

    asyncio.run(wrapper())
