"""Run a service's async main until SIGTERM/SIGINT, with one log setup, the health port and a bounded drain.

On SIGTERM the service's `stop` event is set: consume loops stop fetching, finish the batch in hand and
return; the router then publishes what it committed. The process exits 0 when `main` returns within
AE_SHUTDOWN_GRACE_S (default 25 s; Kubernetes waits 30). Past the grace period what is left is cancelled
(a consume loop hands its un-acked messages back first) and the process exits 1; if even that hangs (a
thread blocked on a server that is gone), a watchdog ends the process a few seconds later.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from agent_engine.runtime import health, logs
from agent_engine.runtime.settings import env_float

Main = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
GRACE_ENV = "AE_SHUTDOWN_GRACE_S"
DEFAULT_GRACE_S = 25.0
CANCEL_S = 3.0
"""After the grace period: how long cancelled work may take to unwind before the watchdog ends the process."""


def grace_from_env() -> float:
    grace = env_float(GRACE_ENV, DEFAULT_GRACE_S)
    if not 0 <= grace <= 3600:
        raise SystemExit(f"{GRACE_ENV}={grace:g} must be a number of seconds from 0 to 3600")
    return grace


def run(service: str, main: Main) -> None:
    log = logs.setup(service)
    grace = grace_from_env()
    port = health.port_from_env()
    exit_code = asyncio.run(_supervise(service, main, grace, port, log))
    logging.shutdown()
    if exit_code:
        os._exit(exit_code)  # threads stuck on a dead server must not hold the exit


async def _supervise(service: str, main: Main, grace: float, port: int | None, log: logging.Logger) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await health.serve(health.PROCESS, port) if port is not None else None
    log.info("starting%s", f"; health on port {port} (/livez, /readyz)" if port is not None else "")
    work = asyncio.create_task(main(stop))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if not work.done():
        health.PROCESS.draining = True
        log.info("draining: no new work; finishing what is in hand (at most %gs, %s)", grace, GRACE_ENV)
        _watchdog(grace + CANCEL_S + 2.0, log)
        try:
            await asyncio.wait_for(asyncio.shield(work), grace)
        except TimeoutError:
            log.warning("not drained within %gs (%s): stopping the rest; un-acked messages go back to the stream "
                        "and are redelivered", grace, GRACE_ENV)
            work.cancel()
            await asyncio.wait({work}, timeout=CANCEL_S)
            code = 1
    stopping.cancel()
    if server is not None:
        server.close()
    if work.done() and not work.cancelled() and work.exception() is not None:
        raise work.exception()  # type: ignore[misc]  # e.g. SystemExit with the reason the service gave
    log.info("stopped" if code == 0 else "stopped after the grace period")
    return code


def _watchdog(after_s: float, log: logging.Logger) -> None:
    def end() -> None:
        log.error("still running %gs after SIGTERM: exiting now", after_s)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(after_s, end)
    timer.daemon = True
    timer.start()
