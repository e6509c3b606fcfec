"""The cost ledger in PostgreSQL over a real stack: telemetry killed (-9) in the middle of the stream and started
again equals a ledger folded in one pass, to the cent, with nothing counted twice and nothing skipped; the restart
reads only what came after its position; a forgotten tenant's task lines go from PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import LlmCalled, Usage
from agent_engine.contracts.subjects import STREAM, TENANT_FORGOTTEN, subject_for
from agent_engine.runtime.bus import MSG_ID, connect
from agent_engine.telemetry.ledger import Ledger, Message, call_of

pytestmark = pytest.mark.e2e


def calls(tenant: str, n: int, seed: int) -> list[Envelope]:
    """n llm.called of `tenant` over a few tasks, nodes and models; every tenth a second copy of an earlier one
    (the same event id, published again: the stream keeps both)."""
    rnd = random.Random(seed)
    events: list[Envelope] = []
    for i in range(n):
        if events and i % 10 == 9:
            events.append(events[rnd.randrange(len(events))])
            continue
        task = f"task-{rnd.randrange(5)}"
        call = LlmCalled(dispatch_id=f"d{i}", node=rnd.choice(["draft", "review"]), provider="anthropic",
                         model=rnd.choice(["claude-sonnet-4-5", "claude-haiku-4-5"]),
                         cost_usd=rnd.choice(["0.000003", "0.1", "0.0175", "2.5", "unpriced"]),
                         usage=Usage(input_tokens=rnd.randrange(1000), output_tokens=rnd.randrange(200)))
        events.append(Envelope(id=f"{tenant}-{i}", source="agent-engine/agent-runner", type=LlmCalled.TYPE,
                               time=datetime(2026, 3, 1 + i % 3, tzinfo=UTC), tenant=tenant, task_id=task,
                               correlation_id=task, data=call.model_dump(mode="json")))
    return events


async def publish(url: str, events: list[Envelope]) -> None:
    nc = await connect(url, "ledger-test")  # the platform credential (AE_NATS_CREDENTIAL)
    js = nc.jetstream()
    try:
        for e in events:  # a repeated id gets a message id of its own, so the stream keeps both copies
            await js.publish(subject_for(e), e.to_bytes(), headers={MSG_ID: f"{e.id}-{uuid.uuid4().hex[:6]}"})
    finally:
        await nc.close()


async def last_sequence(url: str) -> int:
    nc = await connect(url, "ledger-test")
    try:
        return int((await nc.jetstream().stream_info(STREAM)).state.last_seq)
    finally:
        await nc.close()


def cost(engine: Any, **query: str) -> dict[str, Any]:
    args = [a for k, v in query.items() for a in (f"--{k}", v)]
    result = engine.agentctl("cost", *args, "--json")
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def wait_for_calls(engine: Any, tenant: str, expected: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        seen = cost(engine, tenant=tenant).get("calls", -1)
        if seen == expected:
            return
        time.sleep(0.3)
    raise AssertionError(f"the ledger of {tenant} has {seen} call(s), not {expected}")


def test_a_ledger_killed_mid_stream_and_restarted_equals_one_folded_in_a_single_pass(own_stack: Any) -> None:
    engine = own_stack(AE_LEDGER_BATCH="50")  # many small transactions: the kill falls between or inside one
    tenant = f"t{uuid.uuid4().hex[:10]}"
    events = calls(tenant, 3000, seed=11)
    single_pass = Ledger()
    single_pass.apply([Message(i + 1, subject_for(e), e, call_of(e)) for i, e in enumerate(events)])

    # telemetry is killed once it has folded part of the first 2000 while they are being published; the rest
    # comes while it is down
    publisher = threading.Thread(target=lambda: asyncio.run(publish(engine.nats_url, events[:2000])))
    publisher.start()
    while cost(engine, tenant=tenant).get("calls", 0) == 0:
        time.sleep(0.05)
    engine.kill("telemetry")
    publisher.join()
    asyncio.run(publish(engine.nats_url, events[2000:]))
    log = engine.home / "logs" / "telemetry.log"
    before_restart = len(log.read_text())
    engine.up()

    expected = single_pass.query(tenant=tenant)
    wait_for_calls(engine, tenant, expected["calls"])
    assert cost(engine, tenant=tenant) == expected
    for task in sorted({e.task_id for e in events}):
        assert cost(engine, task=task, tenant=tenant) == single_pass.query(task, tenant), task
    overall = cost(engine)
    summary = {k: v for k, v in expected.items() if k not in ("models", "days")}
    assert {"tenant": tenant, **overall["tenants"][tenant]} == summary  # the platform's line: no parts
    assert expected["models"] and expected["days"]
    assert overall["events_by_type"]["llm.called"] == single_pass.query()["events_by_type"]["llm.called"]

    # the restart read only what came after its position, not the stream from the start
    restarted = log.read_text()[before_restart:]
    resumed = re.search(r"resuming from stream sequence (\d+)", restarted)
    assert resumed, restarted[-2000:]
    deadline = time.monotonic() + 10
    while "caught up" not in restarted and time.monotonic() < deadline:
        time.sleep(0.2)
        restarted = log.read_text()[before_restart:]
    caught_up = re.search(r"caught up: (\d+) message\(s\) read since start", restarted)
    assert caught_up, restarted[-2000:]
    start, read = int(resumed.group(1)), int(caught_up.group(1))
    assert start > 1
    assert read == asyncio.run(last_sequence(engine.nats_url)) - start + 1

    # erasure: the tenant's task lines leave PostgreSQL; its totals, which name no task, stay
    async def forget() -> None:
        nc = await connect(engine.nats_url, "ledger-test")
        await nc.publish(TENANT_FORGOTTEN, json.dumps({"tenant": tenant, "task_ids": None}).encode())
        await nc.flush()
        await nc.close()

    asyncio.run(forget())
    deadline = time.monotonic() + 20
    answer = engine.agentctl("cost", "--task", "task-0", "--tenant", tenant, "--json")
    while "was erased" not in answer.stderr and time.monotonic() < deadline:
        time.sleep(0.3)
        answer = engine.agentctl("cost", "--task", "task-0", "--tenant", tenant, "--json")
    assert "task 'task-0' was erased" in answer.stderr
    with psycopg.connect(engine.env["AE_POSTGRES_URL"]) as conn:
        row = conn.execute("SELECT count(*) FROM ae_ledger_calls WHERE tenant = %s", (tenant,)).fetchone()
    assert row == (0,)
    # its by-model and by-day sums are summed from its calls, which are gone with them
    assert cost(engine, tenant=tenant) == summary
