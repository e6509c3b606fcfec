"""Replaying a finished task's recorded router inputs reproduces its recorded router events exactly."""

from __future__ import annotations

import asyncio

import pytest

from agent_engine.router.core import replay

pytestmark = pytest.mark.e2e


async def _finished_history(engine, tenant: str):
    nc = await engine.connect()
    try:
        workflow = await engine.push(nc, tenant)
        task_id = await engine.submit(nc, tenant, workflow, {"brief": "replay me"})
        status = await engine.wait_terminal(nc, [task_id])
        return status[task_id], await engine.history(nc, task_id)
    finally:
        await nc.close()


def test_replay_of_a_finished_task_matches_its_history(engine, tenant):
    status, history = asyncio.run(_finished_history(engine, tenant))
    assert status == "succeeded"
    replayed = replay(history)
    assert [e.model_dump(mode="json") for e in replayed] == [e.model_dump(mode="json") for e in history]
    assert len(history) > 10
