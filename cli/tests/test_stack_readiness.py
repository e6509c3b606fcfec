"""`agentctl up` and `ps` call a service ready only when the process they started answers on its health port:
a port taken by another process between picking it and the start must not pass for the service."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator

import pytest

from agent_engine.cli.stack import readiness
from agent_engine.runtime import health


@pytest.fixture
def health_port() -> Iterator[int]:
    """A real health server of this process, in a thread of its own."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []

    async def start() -> None:
        registry = health.Health()
        registry.serving = True
        server = await health.serve(registry, 0, "127.0.0.1")
        port.append(server.sockets[0].getsockname()[1])
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield port[0]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_ready_from_the_process_that_was_started(health_port: int) -> None:
    assert readiness(health_port, pid=os.getpid()) == "ready"
    assert readiness(health_port) == "ready"


def test_not_ready_when_another_process_answers_on_the_port(health_port: int) -> None:
    said = readiness(health_port, pid=os.getpid() + 1)
    assert said == (f"health port {health_port} is answered by another process (pid {os.getpid()}), "
                    f"not pid {os.getpid() + 1}")
