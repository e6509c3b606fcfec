"""kill -9 of the tool-runner while side-effecting tools run: no tool runs twice for one task, and every
task ends: succeeded, or failed saying the tool may have run already (an operator decides, not a retry)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

WORKFLOW = Path(__file__).parent / "workflows" / "side-effects"
SLEEP_S = 3.0
"""How long each snippet waits after writing its line: the window in which the tool-runner is killed."""
MAY_HAVE_RUN = "has side effects and may have run already"


async def _wait_for_line(path: Path, line: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and line in path.read_text():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never got the line {line!r}")


async def _scenario(engine, tenant: str) -> tuple[list[str], dict[str, str], dict[str, str], list[list[str]]]:
    logs = engine.workspace / "side-effects" / tenant
    nc = await engine.connect()
    try:
        workflow = await engine.push(nc, tenant, WORKFLOW)
        ids: list[str] = []

        async def submit(i: int) -> None:
            line = f"task {i}"
            job = {"line": line, "abs_file": str(logs / f"{i}.log"), "sleep_s": SLEEP_S}
            ids.append(await engine.submit(nc, tenant, workflow,
                                           {"file": f"side-effects/{tenant}/{i}.log", "line": line, "job": job}))

        killed_mid_run = []
        for wave in ((0, 1, 2), (3, 4)):  # each wave: kill the tool-runner while its first snippet waits
            for i in wave:
                await submit(i)
            first = wave[0]
            # the snippet wrote its line, so the call is claimed, and it sleeps SLEEP_S before its result
            await _wait_for_line(logs / f"{first}.log", f"task {first} (python)")
            engine.kill("tool-runner")
            killed_mid_run.append(ids[first])
            engine.up()
        for i in (5, 6):  # no kill: these simply succeed
            await submit(i)
        status = await engine.wait_terminal(nc, ids, timeout=60)
        reasons = {task_id: (await engine.show(nc, task_id)).get("reason", "") for task_id in ids}
        lines = [(logs / f"{i}.log").read_text().splitlines() if (logs / f"{i}.log").exists() else []
                 for i in range(len(ids))]
        return killed_mid_run, status, reasons, lines
    finally:
        await nc.close()


def test_kill_9_mid_run_never_runs_a_side_effecting_tool_twice(engine, tenant):
    killed_mid_run, status, reasons, lines = asyncio.run(_scenario(engine, tenant))
    for i, (task_id, task_lines) in enumerate(zip(status, lines, strict=True)):
        assert task_lines.count(f"task {i}") <= 1 and task_lines.count(f"task {i} (python)") <= 1, task_lines
        if status[task_id] == "succeeded":
            assert task_lines == [f"task {i}", f"task {i} (python)"]
        else:
            assert status[task_id] == "failed", (i, status[task_id])
            assert MAY_HAVE_RUN in reasons[task_id] and "not run twice" in reasons[task_id], reasons[task_id]
    for task_id in killed_mid_run:  # killed while its snippet slept: claimed, no result, so not run again
        assert status[task_id] == "failed"
        assert reasons[task_id].startswith("node 'slow_note' failed: tool 'slow_append' " + MAY_HAVE_RUN)
    assert [status[t] for t in list(status)[-2:]] == ["succeeded", "succeeded"]
