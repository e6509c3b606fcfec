"""A dispatch whose result never comes back is re-dispatched when its deadline passes."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
WORKFLOW = Path(__file__).parent / "workflows" / "deadline"


async def _run_with_runner_down(engine, tenant: str):
    nc = await engine.connect()
    try:
        workflow = await engine.push(nc, tenant, WORKFLOW)
        engine.kill("agent-runner")
        task_id = await engine.submit(nc, tenant, workflow, {})
        await asyncio.sleep(3.0)  # three one-second deadlines pass with no runner
        engine.up()
        status = await engine.wait_terminal(nc, [task_id])
        return status[task_id], await engine.history(nc, task_id)
    finally:
        await nc.close()


def test_deadline_redispatches_and_the_node_completes_once(engine, tenant):
    status, history = asyncio.run(_run_with_runner_down(engine, tenant))
    assert status == "succeeded"
    dispatches = [e for e in history if e.type == "node.dispatched"]
    assert len(dispatches) >= 2
    assert any("deadline" in d.data["reason"] for d in dispatches[1:])
    assert [d.data["attempt"] for d in dispatches] == list(range(1, len(dispatches) + 1))
    assert Counter(e.data["node"] for e in history if e.type == "node.succeeded") == {"ask": 1}
