"""agentctl task cancel: the task stops; the result of a node that was running arrives later,
is recorded as ignored, and nothing else is dispatched."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytestmark = pytest.mark.e2e


async def _start_with_runner_down(engine, tenant: str) -> str:
    nc = await engine.connect()
    try:
        workflow = await engine.push(nc, tenant)
        engine.kill("agent-runner")
        task_id = await engine.submit(nc, tenant, workflow, {"brief": "cancel me"})
        nodes: dict[str, str] = {}
        for _ in range(100):  # the tool node finishes; the first agent node waits for a runner
            try:
                nodes = {n["node"]: n["status"] for n in (await engine.show(nc, task_id)).get("nodes", [])}
            except Exception:  # noqa: BLE001  the router is still starting
                nodes = {}
            if nodes.get("interpretation") == "dispatched":
                return task_id
            await asyncio.sleep(0.1)
        raise AssertionError(f"interpretation was never dispatched: {nodes}")
    finally:
        await nc.close()


def test_cancel_stops_the_task_and_records_the_late_result(engine, tenant):
    task_id = asyncio.run(_start_with_runner_down(engine, tenant))
    done = engine.agentctl("task", "cancel", task_id, "--reason", "no longer needed")
    assert done.returncode == 0, done.stderr
    assert "cancelled" in done.stdout and "interpretation" in done.stdout

    engine.up()  # the agent-runner comes back and answers the dispatch it missed
    history = []
    for _ in range(100):
        history = json.loads(engine.agentctl("task", "history", task_id, "--json").stdout)
        if any(e["type"] == "node.result_ignored" for e in history):
            break
        time.sleep(0.2)
    types = [e["type"] for e in history]
    assert "task.cancelled" in types and "node.result_ignored" in types
    assert types.count("node.dispatched") == 2  # gather_context and interpretation, nothing after the cancel
    shown = json.loads(engine.agentctl("task", "show", task_id, "--json").stdout)
    assert shown["status"] == "cancelled" and shown["reason"] == "no longer needed"
    assert {n["node"]: n["status"] for n in shown["nodes"]}["interpretation"] == "cancelled"

    again = engine.agentctl("task", "cancel", task_id)
    assert again.returncode == 1 and "already cancelled" in again.stderr
