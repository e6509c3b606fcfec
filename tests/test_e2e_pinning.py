"""A running task keeps the workflow revision it started on when a new revision is pushed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent_engine.contracts.envelope import CONTRACT_VERSION

pytestmark = pytest.mark.e2e
APPROVAL = Path(__file__).parent / "workflows" / "approval"



def test_a_running_task_keeps_its_revision_and_a_new_task_gets_the_new_one(engine, tenant, tmp_path):
    v1 = tmp_path / "approval"
    shutil.copytree(APPROVAL, v1)
    assert engine.agentctl("workflow", "push", str(v1), "--tenant", tenant).returncode == 0
    first = engine.agentctl("submit", "approval", "--tenant", tenant, "--input", '{"folder": "examples"}')
    old_task = first.stdout.strip()
    pinned = engine.wait_for_status(old_task, "waiting")["revision"]

    # revision 2 lists only YAML files; the waiting task must still run revision 1's arguments
    text = (v1 / "workflow.yaml").read_text().replace("path: $input.folder", "path: $input.folder\n      pattern: '*.yaml'")
    (v1 / "workflow.yaml").write_text(text)
    pushed = engine.agentctl("workflow", "push", str(v1), "--tenant", tenant)
    assert pushed.returncode == 0 and "pushed" in pushed.stderr

    assert engine.agentctl("approve", old_task, "listing").returncode == 0
    old = engine.wait_for_status(old_task, "succeeded")
    assert old["revision"] == pinned
    assert old["engine_version"] and old["contract_version"] == CONTRACT_VERSION
    old_files = {n["node"]: n for n in old["nodes"]}["listing"]["output"]["files"]
    assert any(not f.endswith(".yaml") for f in old_files)  # revision 1: no pattern

    second = engine.agentctl("submit", "approval", "--tenant", tenant, "--input", '{"folder": "examples"}')
    new_task = second.stdout.strip()
    new_revision = engine.wait_for_status(new_task, "waiting")["revision"]
    assert new_revision != pinned
    assert engine.agentctl("approve", new_task, "listing").returncode == 0
    new_files = {n["node"]: n for n in engine.wait_for_status(new_task, "succeeded")["nodes"]}["listing"]["output"]["files"]
    assert new_files and all(f.endswith(".yaml") for f in new_files)
