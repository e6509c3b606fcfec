"""Bad requests get task.rejected with a reason a person can act on, and no service restarts."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from agent_engine.contracts.envelope import Envelope

pytestmark = pytest.mark.e2e


async def _rejection(engine, tenant: str, body: bytes, task_id: str) -> str:
    nc = await engine.connect()
    try:
        sub = await nc.subscribe(f"ae.{tenant}.task.rejected")
        await nc.jetstream().publish(f"ae.{tenant}.task.requested", body, headers={"Ae-Task-Id": task_id})
        while True:
            msg = await sub.next_msg(timeout=15)
            event = Envelope.from_bytes(msg.data)
            if event.task_id == task_id:
                return str(event.data["reason"])
    finally:
        await nc.close()


def _envelope(tenant: str, **overrides):
    body = {"id": str(uuid.uuid4()), "source": "test", "type": "task.requested", "time": "2026-11-22T10:00:00Z",
            "tenant": tenant, "task_id": str(uuid.uuid4()), "correlation_id": "c1",
            "data": {"workflow": "research-review", "input": {}}}
    body.update(overrides)
    return body


def test_bad_requests_are_rejected_with_reasons_and_nothing_restarts(engine, tenant, tmp_path):
    before = engine.pids()

    reason = asyncio.run(_rejection(engine, tenant, b"{not json", "t-notjson"))
    assert "not JSON" in reason

    env = _envelope(tenant, schema_version=3)
    reason = asyncio.run(_rejection(engine, tenant, json.dumps(env).encode(), env["task_id"]))
    assert "schemaversion 3 is not supported" in reason and "versions 1 and 2" in reason

    unknown = engine.agentctl("submit", "no-such-workflow", "--tenant", tenant)
    assert unknown.returncode != 0
    assert "unknown workflow 'no-such-workflow'" in unknown.stderr and "workflow push" in unknown.stderr

    big = tmp_path / "big.json"
    big.write_text(json.dumps({"brief": "x" * (2 * 1024 * 1024)}))
    engine.agentctl("workflow", "push", "examples/research-review", "--tenant", tenant)
    too_big = engine.agentctl("submit", "research-review", "--tenant", tenant, "--input", f"@{big}")
    assert too_big.returncode != 0
    assert "2.0 MiB" in too_big.stderr and "limit" in too_big.stderr

    # the stack still works and nothing was restarted
    ok = engine.agentctl("run", "examples/research-review", "--tenant", tenant, "--input", "{\"brief\": \"hi\"}")
    assert ok.returncode == 0, ok.stderr
    assert engine.pids() == before
