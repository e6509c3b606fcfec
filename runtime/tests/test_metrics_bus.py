"""The bus's metrics hooks against a real nats-server: an event published twice (a redelivered dispatch answered
again) is counted once; each handled message's hop is timed; a consumer's lag and a service's dead letters are
read from JetStream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from agent_engine.contracts.envelope import Envelope
from agent_engine.runtime import metrics
from agent_engine.runtime.bus import MSG_ID, Bus

pytestmark = pytest.mark.integration


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": metrics.SERVICE[0], **labels}) or 0.0


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    opened = await Bus.open(nats_url, f"metrics-{uuid.uuid4().hex[:8]}")
    yield opened
    await opened.close()


def _llm_called(tenant: str) -> Envelope:
    return Envelope(id=str(uuid.uuid4()), source="agent-engine/agent-runner", type="llm.called", time=datetime.now(UTC),
                    tenant=tenant, task_id=str(uuid.uuid4()), correlation_id="c", data={
                        "dispatch_id": "d1", "node": "draft", "provider": "anthropic", "model": "claude-x",
                        "usage": {"input_tokens": 10, "output_tokens": 5}, "cost_usd": "0.25", "outcome": "valid"})


async def test_an_event_published_again_is_counted_once(bus: Bus) -> None:
    tenant = f"m{uuid.uuid4().hex[:8]}"
    route = {"tenant": tenant, "provider": "anthropic", "model": "claude-x"}
    event = _llm_called(tenant)
    await bus.publish(event)
    await bus.publish(event)  # the same id: JetStream answers duplicate
    assert _value("ae_llm_calls_total", **route, outcome="valid") == 1
    assert _value("ae_llm_cost_usd_total", **route) == 0.25
    assert _value("ae_llm_tokens_total", **route, kind="input") == 10


async def test_each_handled_message_is_timed_and_the_consumer_lag_is_read_from_jetstream(bus: Bus) -> None:
    tenant = f"m{uuid.uuid4().hex[:8]}"
    durable = f"metrics-{uuid.uuid4().hex[:8]}"
    subject = f"ae.{tenant}.task.requested"
    for i in range(3):
        await bus.js.publish(subject, b"{}", headers={MSG_ID: f"{durable}-{i}"})
    await bus.pull(durable, [subject], ack_wait=30)
    await bus.sample_lag(durable)()
    assert _value("ae_consumer_pending_messages", consumer=durable) == 3

    stop = asyncio.Event()
    seen: list[Msg] = []

    async def handle(msgs: list[Msg]) -> None:
        for msg in msgs:
            await msg.ack()
        seen.extend(msgs)
        if len(seen) >= 3:
            stop.set()

    consuming = asyncio.create_task(bus.consume(durable, [subject], handle, batch=10, ack_wait=30, stop=stop))
    await asyncio.sleep(0)  # the loop starts: it registers its lag sampler before it first waits
    assert f"consumer {durable}" in metrics.SAMPLERS.samplers
    await asyncio.wait_for(consuming, 30)
    assert _value("ae_hop_seconds_count", consumer=durable, event_type="task.requested") == 3
    # the loop has ended (as when a router partition moves to another owner): its lag series (3 when last
    # sampled) is gone rather than stale
    assert f"consumer {durable}" not in metrics.SAMPLERS.samplers
    assert REGISTRY.get_sample_value("ae_consumer_pending_messages",
                                     {"service": metrics.SERVICE[0], "consumer": durable}) is None


async def test_the_dlq_size_counts_this_services_dead_letters(bus: Bus) -> None:
    tenant = f"m{uuid.uuid4().hex[:8]}"
    subject = f"ae.{tenant}.task.requested"
    await bus.js.publish(subject, b"not an event", headers={MSG_ID: str(uuid.uuid4())})
    durable = f"metrics-{uuid.uuid4().hex[:8]}"
    sub = await bus.pull(durable, [subject], ack_wait=30)
    [msg] = await sub.fetch(1, timeout=5)
    await bus.sample_dead_letters()
    assert _value("ae_dlq_messages") == 0
    await bus.dead_letter(msg, "not an event")
    await bus.sample_dead_letters()
    assert _value("ae_dlq_messages") == 1
