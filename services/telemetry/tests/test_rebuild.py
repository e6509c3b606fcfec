"""A rebuild answers its askers once the refold has caught up, and only then; askers who come meanwhile join it;
a reset that failed is told."""

from __future__ import annotations

import asyncio

from agent_engine.telemetry.rebuild import Rebuild


def test_askers_are_answered_once_the_refold_reaches_the_stream_end() -> None:
    async def go() -> None:
        rebuild = Rebuild()
        first = rebuild.ask(10)
        assert rebuild.asked.is_set()
        rebuild.progress(5, 5)  # before the reset: the old fold's batch, not counted
        rebuild.started()
        second = rebuild.ask(99)  # joins the one running
        rebuild.progress(4, 4)
        assert not first.done()
        rebuild.progress(6, 10)
        assert first.result() == second.result()
        assert {k: v for k, v in first.result().items() if k != "seconds"} == {
            "rebuilt": True, "messages": 10, "position": 10}
        assert not rebuild.running and not rebuild.asked.is_set()

    asyncio.run(go())


def test_an_idle_consumer_means_caught_up() -> None:
    """The stream's last messages may be deleted ones (a task's raw request): the fold never sees them."""
    async def go() -> None:
        rebuild = Rebuild()
        waiting = rebuild.ask(10)
        rebuild.started()
        rebuild.progress(7, 8)
        rebuild.progress(0, None)
        assert waiting.result()["position"] == 8

    asyncio.run(go())


def test_a_failed_reset_is_told() -> None:
    async def go() -> None:
        rebuild = Rebuild()
        waiting = rebuild.ask(3)
        rebuild.failed("connection refused")
        assert waiting.result() == {"error": "the ledger was not rebuilt: connection refused"}
        assert not rebuild.asked.is_set()

    asyncio.run(go())
