"""Run a service's async main until SIGTERM/SIGINT, with one log setup, the health port and a bounded drain.

On SIGTERM the service's `stop` event is set: consume loops stop fetching, finish the batch in hand and
return; the router then publishes what it committed. The process exits 0 when `main` returns within
AE_SHUTDOWN_GRACE_S (default 25 s; Kubernetes waits 30). Past the grace period what is left is cancelled
(a consume loop hands its un-acked messages back first) and the process exits 1; if even that hangs, a
watchdog ends the process CANCEL_S + 2 s later. The process ends with os._exit either way, so a thread
blocked on a server that is gone never holds it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from agent_engine.runtime import health, logs, metrics, tracing
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
    metrics.SERVICE[0] = service  # the `service` label of this process's metrics
    tracing.setup(service)
    grace = grace_from_env()
    port = health.port_from_env()
    asyncio.run(_supervise(main, grace, port, log))


async def _supervise(main: Main, grace: float, port: int | None, log: logging.Logger) -> None:
    """Run `main` until it returns or a signal comes, then drain; ends the process itself (see `_end`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await health.serve(health.PROCESS, port) if port is not None else None
    log.info("starting%s", f"; health on port {port} (/livez, /readyz, /metrics)" if port is not None else "")

    async def guarded() -> SystemExit | None:
        # asyncio lets a SystemExit out of a task straight through the loop, as a traceback: keep it as a value
        try:
            await main(stop)
        except SystemExit as exc:
            return exc
        return None

    work = asyncio.create_task(guarded())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
    _watchdog(grace + CANCEL_S + 2.0, log)  # from here on, the process ends whatever hangs
    code = 0
    if not work.done():
        health.PROCESS.draining = True
        log.info("draining: no new work; finishing what is in hand (at most %gs, %s)", grace, GRACE_ENV)
        finished, _ = await asyncio.wait({work}, timeout=grace)
        if not finished:
            log.warning("not drained within %gs (%s): stopping the rest; un-acked messages go back to the stream "
                        "and are redelivered", grace, GRACE_ENV)
            work.cancel()
            await asyncio.wait({work}, timeout=CANCEL_S)
            code = 1
    stopping.cancel()
    if server is not None:
        server.close()
    message = None
    failure = work.exception() if work.done() and not work.cancelled() else None
    exited = work.result() if work.done() and not work.cancelled() and failure is None else None
    if failure is not None:
        log.error("stopped by an error", exc_info=failure)
        code = 1
    elif exited is not None:  # the service's own reason to stop: one line, as SystemExit prints it
        message = None if isinstance(exited.code, int | None) else str(exited.code)
        code = exited.code if isinstance(exited.code, int) else (0 if exited.code is None else 1)
    if message is None:
        log.info("stopped" if code == 0 else "stopped after the grace period")
    _end(code, message)


def _end(code: int, message: str | None = None) -> None:
    """Exit now. Not through asyncio.run's return: on Python 3.11 it waits, with no limit, for every thread it
    handed work to, and a thread blocked on a server that is gone would hold a drained process for ever."""
    if message:
        print(message, file=sys.stderr)
    tracing.flush()  # os._exit skips atexit, where the SDK would export the last spans
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _watchdog(after_s: float, log: logging.Logger) -> None:
    def end() -> None:
        log.error("still running %gs after stopping began: exiting now", after_s)
        _end(1)

    timer = threading.Timer(after_s, end)
    timer.daemon = True
    timer.start()
