"""`agentctl cost rebuild` over a real stack of its own: tasks run and priced calls come; the ledger is noted,
then spoiled in PostgreSQL (rows deleted, sums changed); the rebuild empties it and folds the stream again, and
every answer equals the noted one to the cent: by tenant, model and day, each task's line and call log, the
task list, the agent scores (emptied first, as after an upgrade from a version without them: the rebuild is how
an operator backfills them from history). A task erased before stays erased. Only the platform may ask."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import LlmCalled, Usage
from agent_engine.contracts.subjects import TELEMETRY_RPC, TENANT_FORGOTTEN, rpc_subject, subject_for
from agent_engine.runtime.bus import MSG_ID, connect

pytestmark = pytest.mark.e2e


def priced_calls(tenant: str, n: int, seed: int) -> list[Envelope]:
    """llm.called with real-looking prices over tasks, models and three days (tiny and large costs)."""
    rnd = random.Random(seed)
    events = []
    for i in range(n):
        task = f"priced-{rnd.randrange(4)}"
        call = LlmCalled(dispatch_id=f"d{i}", node=rnd.choice(["draft", "review"]), provider="anthropic",
                         model=rnd.choice(["claude-sonnet-4-5", "claude-haiku-4-5"]),
                         cost_usd=rnd.choice(["0.000003", "0.1", "0.0175", "2.5", "unpriced"]),
                         usage=Usage(input_tokens=rnd.randrange(1000), output_tokens=rnd.randrange(200)))
        events.append(Envelope(id=f"{tenant}-{i}", source="agent-engine/agent-runner", type=LlmCalled.TYPE,
                               time=datetime(2026, 3, 1 + i % 3, tzinfo=UTC), tenant=tenant, task_id=task,
                               correlation_id=task, data=call.model_dump(mode="json")))
    return events


async def asked(nc: Any, action: str, body: dict[str, Any]) -> Any:
    reply = await nc.request(rpc_subject(TELEMETRY_RPC, action), json.dumps(body).encode(), timeout=30)
    return json.loads(reply.data)


def noted(engine: Any, tenants: list[str], tasks: dict[str, list[str]]) -> dict[str, Any]:
    """Every answer the ledger gives about these tenants (asked as agentctl asks, on one connection: fast).
    Messages by subject are left out: the stream deletes a task's raw request once guardrails answered it, so
    a refold counts fewer than were seen live."""
    async def go() -> dict[str, Any]:
        nc = await connect(engine.nats_url, "rebuild-test")
        try:
            overall = await asked(nc, "ledger", {})
            answers: dict[str, Any] = {"tenants": {t: overall["tenants"].get(t) for t in tenants},
                                       "models": overall["models"], "days": overall["days"],
                                       "events_by_type": overall["events_by_type"]}
            for tenant in tenants:
                answers[tenant] = await asked(nc, "ledger", {"tenant": tenant})
                answers[f"{tenant} agents"] = await asked(nc, "agents", {"tenant": tenant})  # scores refold too
                answers[f"{tenant} list"] = await asked(nc, "tasks.list", {"tenant": tenant, "limit": 500})
                for workflow in sorted({t["workflow"] for t in answers[f"{tenant} list"]["tasks"]}):
                    answers[f"{tenant} agents of {workflow}"] = await asked(
                        nc, "agents", {"tenant": tenant, "workflow": workflow})
                for task in tasks[tenant]:
                    answers[f"{tenant} {task}"] = await asked(nc, "ledger", {"tenant": tenant, "task_id": task})
            return answers
        finally:
            await nc.close()

    return asyncio.run(go())


def test_a_spoiled_ledger_rebuilt_from_the_stream_equals_the_one_noted_to_the_cent(own_stack: Any) -> None:
    engine = own_stack()
    tenants = [f"t{uuid.uuid4().hex[:10]}", f"t{uuid.uuid4().hex[:10]}"]
    calls = priced_calls(tenants[0], 120, seed=3) + priced_calls(tenants[1], 80, seed=4)

    async def run() -> dict[str, list[str]]:
        nc = await engine.connect()
        try:
            js = nc.jetstream()
            for e in calls:
                await js.publish(subject_for(e), e.to_bytes(), headers={MSG_ID: e.id})
            ran: dict[str, list[str]] = {t: [] for t in tenants}
            for tenant in tenants:
                workflow = await engine.push(nc, tenant)
                for i in range(2):
                    ran[tenant].append(await engine.submit(nc, tenant, workflow, {"brief": f"rebuild {i}"}))
            ended = await engine.wait_terminal(nc, [t for ids in ran.values() for t in ids])
            assert set(ended.values()) == {"succeeded"}, ended
            return ran
        finally:
            await nc.close()

    ran = asyncio.run(run())
    tasks = {t: [*ran[t], *sorted({e.task_id for e in calls if e.tenant == t})] for t in tenants}
    # one task of the second tenant is erased (its data subject forgotten): its line goes, its sums stay
    erased = ran[tenants[1]][0]

    async def forget() -> None:
        nc = await connect(engine.nats_url, "rebuild-test")
        await nc.publish(TENANT_FORGOTTEN, json.dumps({"tenant": tenants[1], "task_ids": [erased]}).encode())
        await nc.flush()
        await nc.close()

    asyncio.run(forget())
    deadline = time.monotonic() + 60
    before = noted(engine, tenants, tasks)
    while time.monotonic() < deadline and not (
            all(len(before[f"{t} list"]["tasks"]) == 2 - (t == tenants[1]) for t in tenants)
            and all(t["finished_at"] for tenant in tenants for t in before[f"{tenant} list"]["tasks"])
            and before[f"{tenants[1]} {erased}"].get("erased")
            and before[tenants[0]]["calls"] > 120):
        time.sleep(0.3)
        before = noted(engine, tenants, tasks)
    settled = noted(engine, tenants, tasks)
    while settled != before and time.monotonic() < deadline:  # until nothing more comes
        before, settled = settled, noted(engine, tenants, tasks)
    assert before[f"{tenants[1]} {erased}"].get("erased")
    assert before[tenants[0]]["cost_usd"] != "0" and before[f"{tenants[0]} priced-0"]["calls"] > 0

    stats = {t: engine.agentctl("agents", "stats", "--tenant", t, "--json").stdout for t in tenants}
    assert all(json.loads(shown) for shown in stats.values())  # each tenant's agents have figures
    assert all(before[f"{t} agents of {w}"]["agents"] for t in tenants for w in {r["workflow"] for r in
                                                                               before[f"{t} list"]["tasks"]})

    # spoil it; the agent scores' tables emptied, as after an upgrade from a version without them
    with psycopg.connect(engine.env["AE_POSTGRES_URL"], autocommit=True) as conn:
        conn.execute("DELETE FROM ae_ledger_calls WHERE task_id = 'priced-0'")
        conn.execute("UPDATE ae_ledger_totals SET cost_usd = cost_usd + 1")
        conn.execute("DELETE FROM ae_ledger_tasks")
        conn.execute("TRUNCATE ae_ledger_attempts, ae_ledger_task_workflows")
    spoiled = noted(engine, tenants, tasks)
    assert spoiled != before and all(spoiled[f"{t} agents"] == {"agents": []} for t in tenants)

    viewer = engine.credential(tenants[0], "viewer", "admin")
    refused = engine.agentctl("--credential", viewer, "cost", "rebuild")
    assert refused.returncode == 1 and "only the platform administrator may rebuild the ledger" in refused.stderr

    rebuilt = engine.agentctl("cost", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "ledger rebuilt from the event stream" in rebuilt.stdout
    after = noted(engine, tenants, tasks)  # answered once caught up: no waiting here
    assert after == before
    shown = engine.agentctl("cost", "--tenant", tenants[0], "--json")  # and as agentctl shows it
    assert json.loads(shown.stdout) == before[tenants[0]]
    assert {t: engine.agentctl("agents", "stats", "--tenant", t, "--json").stdout for t in tenants} == stats
    log = (engine.home / "logs" / "telemetry.log").read_text()
    assert "ledger rebuild asked" in log
