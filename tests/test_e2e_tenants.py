"""One tenant's events never touch another tenant's task."""

from __future__ import annotations

import asyncio
import json

import pytest

pytestmark = pytest.mark.e2e


async def _inject(engine, victim: str, intruder: str):
    nc = await engine.connect()
    try:
        dlq = await nc.subscribe("aedlq.router.>")
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


def test_dead_letters_are_listed_and_can_be_replayed(engine, tenant):
    asyncio.run(_inject(engine, tenant, tenant + "y"))
    listed = engine.agentctl("dlq", "list", "--service", "router", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = [e for e in json.loads(listed.stdout) if e["original_subject"] == f"ae.{tenant}y.node.completed"]
    assert entries and "arrived on subject" in entries[-1]["error"]
    seq = str(entries[-1]["seq"])

    replayed = engine.agentctl("dlq", "replay", seq)
    assert replayed.returncode == 0, replayed.stderr
    assert f"ae.{tenant}y.node.completed" in replayed.stdout
    # still a forgery: the router dead-letters it again, under a new number; the old entry is gone
    seqs = []
    for _ in range(50):
        seqs = [e["seq"] for e in json.loads(engine.agentctl("dlq", "list", "--json").stdout)
                if e["original_subject"] == f"ae.{tenant}y.node.completed"]
        if seqs and seqs[-1] != int(seq):
            break
    assert int(seq) not in seqs and seqs
    assert engine.agentctl("dlq", "replay", seq).returncode == 1


def test_task_replay_reports_identical_for_a_finished_task(engine, tenant):
    sub = engine.agentctl("run", "examples/research-review", "--tenant", tenant, "--input", '{"brief": "replay"}')
    task_id = sub.stdout.strip().splitlines()[-1].split()[1]
    done = engine.agentctl("task", "replay", task_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "identical" in done.stdout
    report = json.loads(engine.agentctl("task", "replay", task_id, "--json").stdout)
    assert report["identical"] and report["stored"] == report["replayed"] > 10
