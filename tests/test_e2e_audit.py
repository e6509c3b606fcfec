"""`agentctl audit` on the running stack: after a real task, the router's own checkpoints anchor the chain,
the whole store and the task verify, and the task's exported bundle verifies under a bare Python."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "verify_audit_bundle.py"


def test_a_finished_task_verifies_against_the_routers_checkpoints(engine, tenant, tmp_path: Path) -> None:
    status, history = asyncio.run(engine.run_to_end(tenant, {"brief": "audit me"}))
    assert status == "succeeded"
    task_id = history[0].task_id

    deadline = time.monotonic() + 30
    while True:  # the router checkpoints every second (AE_AUDIT_CHECKPOINT_S) once it has written
        task = engine.agentctl("audit", "verify", "--task", task_id)
        if (task.returncode == 0 and "up to checkpoint" in task.stdout) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert task.returncode == 0 and task.stdout.startswith(f"ok: task {task_id}: {len(history)} records verified up "
                                                           "to checkpoint "), task.stdout + task.stderr
    everything = engine.agentctl("audit", "verify", "--all", "--json")
    assert everything.returncode == 0, everything.stdout + everything.stderr
    report = json.loads(everything.stdout)
    assert report["ok"] and report["records"] >= len(history) and report["checkpoint"] is not None

    bundle = tmp_path / "task.json"
    exported = engine.agentctl("audit", "export", "--task", task_id, "--output", str(bundle))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    checked = subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), str(bundle)], capture_output=True, text=True,
                             timeout=60, cwd="/")
    assert checked.returncode == 0 and checked.stdout.startswith(f"ok: task {task_id}: {len(history)} records"), \
        checked.stdout + checked.stderr
