"""Per-tenant limits (R10) over real NATS and PostgreSQL: the e2e stack gives tenant 'limited' 2
running tasks and 3 queued. Extra requests wait in `queued` (higher priority first), a request over
the queue bound is rejected with the reason, and every queued task runs once a place frees."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
TENANT = "limited"


async def _recorded(engine: Any, nc: Any, task_id: str) -> None:
    """Wait until the router has decided on the request (so submissions keep their order)."""
    for _ in range(150):
        try:
            if (await engine.show(nc, task_id)).get("status") in ("running", "queued"):
                return
        except Exception:  # noqa: BLE001  the router is still starting
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} was never recorded")


async def _fill(engine: Any) -> dict[str, str]:
    nc = await engine.connect()
    try:
        workflow = await engine.push(nc, TENANT)
        engine.kill("agent-runner")  # nothing finishes: the first two tasks hold both places
        ids = {}
        for name in ("run1", "run2", "wait1", "wait2"):
            ids[name] = await engine.submit(nc, TENANT, workflow, {"brief": name})
            await _recorded(engine, nc, ids[name])
        return ids
    finally:
        await nc.close()


def test_limits_queue_by_priority_refuse_over_the_bound_and_run_everything_admitted(engine):
    ids = asyncio.run(_fill(engine))
    urgent = engine.agentctl("submit", "research-review", "--tenant", TENANT, "--priority", "9",
                             "--input", '{"brief": "urgent"}')
    assert urgent.returncode == 0, urgent.stderr
    assert "queued at position 1 of 3" in urgent.stderr  # ahead of wait1 and wait2
    ids["urgent"] = urgent.stdout.strip()
    refused = engine.agentctl("submit", "research-review", "--tenant", TENANT, "--input", '{"brief": "one too many"}')
    assert refused.returncode == 2
    assert "tenant 'limited' has 2 running task(s) (limit 2) and 3 queued (limit 3)" in refused.stderr

    shown = {k: json.loads(engine.agentctl("task", "show", v, "--json").stdout) for k, v in ids.items()}
    assert {k: s["status"] for k, s in shown.items()} == {
        "run1": "running", "run2": "running", "wait1": "queued", "wait2": "queued", "urgent": "queued"}

    engine.up()  # the agent-runner returns: places free up one by one
    for task_id in ids.values():
        engine.wait_for_status(task_id, "succeeded", tries=300)
    # the order the tenant's admission log admitted them (its records reach the stream in commit order); their
    # start times come from the inputs that freed each place, which two runners may stamp in either order
    tail = engine.agentctl("tail", "--tenant", TENANT, "--type", "tenant.admitted", "--all", "--no-follow", "--json")
    admitted = [json.loads(line)["taskid"]
                for line in tail.stdout.splitlines() if line.strip()]
    waited = {ids["urgent"]: "urgent", ids["wait1"]: "wait1", ids["wait2"]: "wait2"}
    assert [waited[t] for t in admitted if t in waited] == ["urgent", "wait1", "wait2"]
