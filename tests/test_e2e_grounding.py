"""The output gate's grounding judge over real NATS and PostgreSQL: guardrails asks the agent-runner (the mock
provider, scripted by the workflow's policy) whether an agent node's output is grounded in its inputs; an
output judged ungrounded fails the node naming `judge.grounding` and the score (action fail), or waits for a
person who approves it (action pause). The judge's call is an llm.called of the task."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
LETTERS = str.maketrans("0123456789", "ghijklmnop")
WORKFLOW = Path("tests/workflows/output-checks")
UNGROUNDED = {"grounded": False, "score": 0.2, "reason": "names a diagnosis the file does not mention"}


def _workflow(tmp_path: Path, name: str, action: str) -> Path:
    """The output-checks workflow with a grounding judge instead of its topic rule."""
    folder = tmp_path / name
    shutil.copytree(WORKFLOW, folder)
    manifest = (folder / "workflow.yaml").read_text().replace("name: output-checks", f"name: {name}")
    judge = json.dumps({"provider": "mock", "model": "mock-1", "below": 0.5, "action": action,
                        "mock_responses": [UNGROUNDED]})
    manifest = manifest.replace("    topics:\n      - {id: medical, pattern: 'diagnos\\w*', action: pause}\n",
                                f"    judge: {judge}\n")
    assert "judge:" in manifest and "topics" not in manifest
    (folder / "workflow.yaml").write_text(manifest)
    return folder


def _node(shown: dict[str, Any], node: str) -> dict[str, Any]:
    return next(n for n in shown["nodes"] if n["node"] == node)


def _submit(engine: Any, tenant: str, folder: Path) -> str:
    assert engine.agentctl("workflow", "push", str(folder), "--tenant", tenant).returncode == 0
    # letters only: eight random hex digits are sometimes all digits, which the input checks redact as a phone
    name = f"customer-{uuid.uuid4().hex[:8].translate(LETTERS)}.txt"
    (engine.workspace / name).write_text("Customer asks when the replacement part ships.")
    sub = engine.agentctl("submit", folder.name, "--tenant", tenant, "--input", json.dumps({"file": name}))
    assert sub.returncode == 0, sub.stderr
    return str(sub.stdout.strip())


def test_an_output_the_judge_finds_ungrounded_fails_the_node_naming_the_rule(engine: Any, tenant: str,
                                                                            tmp_path: Path) -> None:
    task_id = _submit(engine, tenant, _workflow(tmp_path, "grounded-fail", "fail"))
    failed = engine.wait_for_status(task_id, "failed")
    advise = _node(failed, "advise")
    assert advise["status"] == "failed"
    assert "judge.grounding" in advise["error"] and "score 0.2" in advise["error"]
    assert advise["error"].startswith("output refused by guardrails: the grounding judge found the output not "
                                      "grounded in the node's inputs")
    assert "diagnosis before" not in advise["error"]
    tail = engine.agentctl("tail", "--task", task_id, "--type", "guardrail.verdict", "--no-follow", "--json")
    verdicts = [json.loads(line)["data"] for line in tail.stdout.splitlines() if line.strip()]
    assert {"rule": "judge.grounding", "count": 1, "score": 0.2} in [r for v in verdicts for r in v["rules"]]
    calls = engine.agentctl("tail", "--task", task_id, "--type", "llm.called", "--no-follow", "--json")
    nodes = [json.loads(line)["data"]["node"] for line in calls.stdout.splitlines() if line.strip()]
    assert "guardrails.judge" in nodes


def test_with_action_pause_an_ungrounded_output_waits_for_a_person(engine: Any, tenant: str,
                                                                 tmp_path: Path) -> None:
    task_id = _submit(engine, tenant, _workflow(tmp_path, "grounded-pause", "pause"))
    try:
        waiting = engine.wait_for_status(task_id, "waiting")
    except AssertionError:
        print(engine.agentctl("task", "history", task_id, "--json").stdout)  # why, in the failure's output
        raise
    advise = _node(waiting, "advise")
    assert advise["status"] == "awaiting_approval" and advise["paused"] == "guardrail"
    approved = engine.agentctl("--credential", engine.credential(tenant, "alice"), "approve", task_id, "advise")
    assert approved.returncode == 0, approved.stderr
    done = engine.wait_for_status(task_id, "succeeded")
    assert _node(done, "advise")["output"] == {"text": "Wait for the diagnosis before replying."}
