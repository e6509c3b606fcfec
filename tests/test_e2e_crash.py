"""kill -9 in the middle of 20 tasks: every task still succeeds, and each node completes exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

pytestmark = pytest.mark.e2e

TASKS = 20
WORKING_NODES = {"gather_context", "interpretation", "decomposition", "planning", "execution", "review"}


async def _crash_run(engine, tenant: str, victim: str) -> tuple[int, dict[str, str], list]:
    nc = await engine.connect()
    try:
        ids, succeeded = await engine.start_tasks(nc, tenant, TASKS)
        await asyncio.wait_for(succeeded.reached.wait(), 60)
        engine.kill(victim)
        done_at_kill = succeeded.count
        await asyncio.sleep(1.0)
        engine.up()  # idempotent: brings back only what is missing
        status = await engine.wait_terminal(nc, ids)
        histories = [await engine.history(nc, task_id) for task_id in ids]
        return done_at_kill, status, histories
    finally:
        await nc.close()


@pytest.mark.parametrize("victim", ["router", "agent-runner"])
def test_kill_9_mid_run_loses_nothing_and_repeats_nothing(engine, tenant, victim):
    done_at_kill, status, histories = asyncio.run(_crash_run(engine, tenant, victim))
    assert done_at_kill < TASKS * len(WORKING_NODES), "the kill came after all work was done; test proves nothing"
    assert set(status.values()) == {"succeeded"}, status
    for history in histories:
        completed = Counter(e.data["node"] for e in history if e.type == "node.succeeded")
        assert completed == Counter(dict.fromkeys(WORKING_NODES, 1)), completed
