"""Against a real nats-server: a consume loop cut off at the end of the drain's grace period hands back what it
had not answered, so another replica takes it at once instead of after the ack wait; what it had answered
stays answered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.msg import Msg

from agent_engine.runtime import health
from agent_engine.runtime.bus import MSG_ID, Bus

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    opened = await Bus.open(nats_url, "hand-back-test")
    yield opened
    await opened.close()


async def test_a_consume_loop_cut_off_mid_batch_hands_back_only_what_it_had_not_answered(bus: Bus) -> None:
    durable, tenant = f"hand-back-{uuid.uuid4().hex[:8]}", f"t{uuid.uuid4().hex[:8]}"
    subject = f"ae.{tenant}.node.errored"
    for i in range(2):
        await bus.js.publish(subject, f"message {i}".encode(), headers={MSG_ID: f"{durable}-{i}"})
    stop, holding = asyncio.Event(), asyncio.Event()

    async def answer_one_then_hang(msgs: list[Msg]) -> None:
        await msgs[0].ack()
        holding.set()
        await asyncio.sleep(3600)  # a call that outlives the grace period

    health.PROCESS.serving = False
    loop = asyncio.create_task(bus.consume(durable, [subject], answer_one_then_hang, batch=2, ack_wait=60,
                                           stop=stop))
    await asyncio.wait_for(holding.wait(), 10)
    assert await health.PROCESS.problems() == {}, "bound and fetching: ready"
    loop.cancel()  # what the supervisor does when the grace period runs out
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert f"consumer {durable}" not in health.PROCESS.checks

    sub = await bus.pull(durable, [subject], ack_wait=60)
    again = await sub.fetch(2, timeout=5)  # long before the 60 s ack wait
    assert [m.data for m in again] == [b"message 1"], "the answered message came back, or the other did not"
    await again[0].ack()

