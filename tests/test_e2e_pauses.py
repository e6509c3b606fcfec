"""Pauses for a person, end to end: a node whose model fails three times in a row puts the task in waiting
instead of failing it; `agentctl approve` resumes it with fresh attempts; a judge unsure of its verdict
waits again, and approving accepts its output."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.e2e
WORKFLOW = "tests/workflows/pauses"


def _node(shown: dict, node: str) -> dict:
    return next(n for n in shown["nodes"] if n["node"] == node)


def _wait_for_node(engine, task_id: str, node: str, status: str, tries: int = 100) -> dict:
    shown: dict = {}
    for _ in range(tries):
        shown = json.loads(engine.agentctl("task", "show", task_id, "--json").stdout or "{}")
        if shown.get("nodes") and _node(shown, node)["status"] == status:
            return shown
        time.sleep(0.2)
    raise AssertionError(f"node {node} of task {task_id} never became {status}: {shown}")


def test_three_failures_pause_the_task_and_approve_resumes_it(engine, tenant):
    assert engine.agentctl("workflow", "push", WORKFLOW, "--tenant", tenant).returncode == 0
    sub = engine.agentctl("submit", "pauses", "--tenant", tenant, "--input", '{"topic": "tides"}')
    assert sub.returncode == 0, sub.stderr
    task_id = sub.stdout.strip()

    waiting = engine.wait_for_status(task_id, "waiting")
    draft = _node(waiting, "draft")
    assert draft["status"] == "awaiting_approval" and draft["paused"] == "failures" and draft["attempts"] == 3
    alice = engine.credential(tenant, "alice")
    resumed = engine.agentctl("--credential", alice, "approve", task_id, "draft")
    assert resumed.returncode == 0, resumed.stderr
    assert "dispatched again with fresh attempts" in resumed.stdout

    doubtful = _wait_for_node(engine, task_id, "judge", "awaiting_approval")
    assert _node(doubtful, "draft")["output"] == {"text": "A short note."}
    judge = _node(doubtful, "judge")
    assert judge["paused"] == "confidence" and judge["held_output"] == {"verdict": "publish", "confidence": 0.3}
    accepted = engine.agentctl("--credential", alice, "approve", task_id, "judge")
    assert accepted.returncode == 0, accepted.stderr
    assert "held output is accepted" in accepted.stdout

    done = engine.wait_for_status(task_id, "succeeded")
    assert _node(done, "judge")["output"] == {"verdict": "publish", "confidence": 0.3}
    history = json.loads(engine.agentctl("task", "history", task_id, "--json").stdout)
    pauses = [e["data"] for e in history if e["type"] == "node.approval_requested"]
    assert [(p["node"], p["pause"]) for p in pauses] == [("draft", "failures"), ("judge", "confidence")]
    assert "3 failed attempts in a row" in pauses[0]["reason"]
    assert pauses[1]["reason"] == "'confidence' is 0.3, below 0.5 (pause.confidence)"
    assert [e["data"]["decided_by"] for e in history if e["type"] == "node.approved"] == ["alice", "alice"]
    replayed = engine.agentctl("task", "replay", task_id)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
