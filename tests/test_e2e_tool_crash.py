"""kill -9 of the agent-runner, the tool-runner and the router at random moments during 20 tool-using
tasks (issue 4): none is lost, and the side-effecting tool never runs twice for one call.

Each task's model appends the task's line to the task's own file (a python snippet declared side_effects,
which then waits, so kills of the tool-runner land while it runs), reads it back, then answers. A call whose tool-runner died between claiming it and storing its result comes back
to the model as "may have run already" rather than running again, so a file holds at most as many lines as
the task's history records journal calls, and at least as many as came back done.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

WORKFLOW = Path(__file__).parent / "workflows" / "journal"
TASKS = 20
VICTIMS = ("agent-runner", "tool-runner", "agent-runner", "tool-runner", "router")
MAY_HAVE_RUN = "has side effects and may have run already"


async def _scenario(engine, tenant: str) -> tuple[int, dict[str, str], list[list[str]], list[list]]:
    files = engine.workspace / "journal" / tenant
    rng = random.Random(20261201)
    nc = await engine.connect()
    try:
        workflow = await engine.push(nc, tenant, WORKFLOW)
        files.mkdir(parents=True, exist_ok=True)
        ids = [await engine.submit(nc, tenant, workflow, {
            "file": f"journal/{tenant}/{i}.md",
            "job": {"abs_file": str(files / f"{i}.md"), "line": f"task {i}", "sleep_s": 1.0}})
            for i in range(TASKS)]
        # first, for certain, the tool-runner while a journal snippet sleeps after writing its line
        while not any(p.exists() and p.read_text() for p in files.glob("*.md")):
            await asyncio.sleep(0.02)
        engine.kill("tool-runner")
        engine.up()
        kills_while_running = 1
        for _ in range(8):  # then random moments, random victims
            await asyncio.sleep(rng.uniform(0.2, 0.9))
            unfinished = [s for s in (await engine.statuses(nc, ids)).values() if s not in ("succeeded", "failed")]
            if not unfinished:
                break
            engine.kill(rng.choice(VICTIMS))
            kills_while_running += 1
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            engine.up()  # idempotent: brings back only what is missing
        status = await engine.wait_terminal(nc, ids, timeout=120)
        lines = [(files / f"{i}.md").read_text().splitlines() if (files / f"{i}.md").exists() else []
                 for i in range(TASKS)]
        histories = [await engine.history(nc, task_id) for task_id in ids]
        return kills_while_running, status, lines, histories
    finally:
        await nc.close()


def test_random_kills_of_runners_and_router_lose_no_task_and_run_no_side_effect_twice(engine, tenant):
    kills, status, lines, histories = asyncio.run(_scenario(engine, tenant))
    assert kills >= 3, f"only {kills} kill(s) came while tasks ran: the test proves little"
    assert set(status.values()) == {"succeeded"}, status
    journal_calls = may_have_run = 0
    for i, (task_lines, history) in enumerate(zip(lines, histories, strict=True)):
        assert set(task_lines) <= {f"task {i}"}, task_lines
        recorded = [c for r in history if r.type == "node.tool_turn_recorded" for c in r.data["calls"]
                    if c["tool"] == "journal"]
        done = [r for r in history if r.type == "node.tool_returned" and r.data["tool"] == "journal"
                and r.data.get("output") is not None]
        # each recorded call appended at most once; each call that came back done did append
        assert len(done) <= len(task_lines) <= len(recorded), (i, task_lines, recorded, done)
        journal_calls += len(recorded)
        may_have_run += sum(1 for r in history if r.type == "node.tool_returned" and MAY_HAVE_RUN in (
            r.data.get("error") or ""))
        succeeded = [r for r in history if r.type == "node.succeeded"]
        assert len(succeeded) == 1 and succeeded[0].data["output"] == {"noted": True}
    assert journal_calls >= TASKS  # every task's model did ask for its side effect
    assert may_have_run >= 1  # a call cut off mid-run came back to its model as such, and was not run again
