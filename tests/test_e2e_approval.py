"""Human in the loop, end to end: the task waits; an edit that breaks the schema is refused; an
approved edit runs; a rejection fails the task. Who decided is in the history: the name of the operator
credential that decided, which the server lets send decisions under that name only."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e
WORKFLOW = "tests/workflows/approval"



def _submit(engine, tenant: str) -> str:
    assert engine.agentctl("workflow", "push", WORKFLOW, "--tenant", tenant).returncode == 0
    sub = engine.agentctl("submit", "approval", "--tenant", tenant, "--input", '{"folder": "examples"}')
    assert sub.returncode == 0, sub.stderr
    return sub.stdout.strip()


def test_approval_round_trip_with_a_refused_and_an_accepted_edit(engine, tenant):
    task_id = _submit(engine, tenant)
    waiting = engine.wait_for_status(task_id, "waiting")
    assert {n["node"]: n["status"] for n in waiting["nodes"]}["listing"] == "awaiting_approval"

    alice = engine.credential(tenant, "alice")
    bad = engine.agentctl("--credential", alice, "approve", task_id, "listing", "--edit", '{"path": 5}')
    assert bad.returncode == 2 and "args_schema" in bad.stderr

    good = engine.agentctl("--credential", alice, "approve", task_id, "listing", "--edit",
                           '{"path": "examples/research-review", "pattern": "*.yaml"}')
    assert good.returncode == 0, good.stderr
    assert "edited arguments" in good.stdout

    done = engine.wait_for_status(task_id, "succeeded")
    files = {n["node"]: n for n in done["nodes"]}["listing"]["output"]["files"]
    assert files and all(f.startswith("examples/research-review/") and f.endswith(".yaml") for f in files)
    history = json.loads(engine.agentctl("task", "history", task_id, "--json").stdout)
    approved = next(e for e in history if e["type"] == "node.approved")
    assert approved["data"]["decided_by"] == "alice" and approved["data"]["edited"] is True
    assert any(e["type"] == "node.approval_refused" for e in history)


def test_reject_fails_the_task_with_the_reason(engine, tenant):
    task_id = _submit(engine, tenant)
    engine.wait_for_status(task_id, "waiting")
    bob = engine.credential(tenant, "bob")
    rejected = engine.agentctl("--credential", bob, "reject", task_id, "listing", "--reason", "not today")
    assert rejected.returncode == 0, rejected.stderr
    failed = engine.wait_for_status(task_id, "failed")
    assert failed["reason"] == "node 'listing' failed: rejected by bob: not today"
    again = engine.agentctl("approve", task_id, "listing")
    assert again.returncode == 1 and "not waiting for approval" in again.stderr
