"""One tenant's events never touch another tenant's task."""

from __future__ import annotations

import asyncio
import json

import pytest

pytestmark = pytest.mark.e2e


async def _inject(engine, victim: str, intruder: str):
    nc = await engine.connect()
    try:
        dlq = await nc.subscribe("aedlq.router")
        workflow = await engine.push(nc, victim)
        task_id = await engine.submit(nc, victim, workflow, {"brief": "mine"})
        status = await engine.wait_terminal(nc, [task_id])
        history = await engine.history(nc, task_id)
        dispatch = next(e for e in history if e.type == "node.dispatched" and e.data["node"] == "review")
        forged = {"id": "forged-1", "source": "intruder", "type": "node.completed", "time": dispatch.time.isoformat(),
                  "tenant": victim, "task_id": task_id, "correlation_id": task_id,
                  "data": {"dispatch_id": dispatch.data["dispatch_id"], "node": "review", "attempt": 1,
                           "output": {"verdict": "reject", "comments": "forged"}}}
        # the intruder may publish only on its own subjects, with the victim's tenant inside the envelope
        await nc.jetstream().publish(f"ae.{intruder}.node.completed", json.dumps(forged).encode())
        dead = await dlq.next_msg(timeout=15)
        return status[task_id], len(history), dead, await engine.history(nc, task_id)
    finally:
        await nc.close()


def test_an_envelope_for_another_tenants_task_is_dead_lettered_and_changes_nothing(engine, tenant):
    status, recorded, dead, after = asyncio.run(_inject(engine, tenant, tenant + "x"))
    assert status == "succeeded"
    assert "arrived on subject" in dead.headers["Ae-Error"]
    assert len(after) == recorded
