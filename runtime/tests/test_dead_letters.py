"""Dead letters against a real nats-server: even a message at the size limit is dead-lettered with its
reason (as a stub), never left to come back for ever."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from agent_engine.contracts.subjects import DLQ_STREAM, dlq_subject
from agent_engine.runtime.bus import MSG_ID, Bus
from agent_engine.runtime.inbox import read_all

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    opened = await Bus.open(nats_url, "dlq-test")
    yield opened
    await opened.close()


async def test_a_message_at_the_size_limit_is_dead_lettered_as_a_stub_and_acked(bus: Bus) -> None:
    """Found in review: the dead letter added headers to a body already at max_payload, the server closed
    the connection, and the message was redelivered every ack_wait for ever."""
    subject = "ae.beta.node.errored"
    body = b"x" * (bus.nc.max_payload - 200)
    await bus.js.publish(subject, body, headers={MSG_ID: "big-1", "Ae-Fuzz": "1"})
    sub = await bus.pull("dlq-test", [subject], ack_wait=30)
    [msg] = await sub.fetch(1, timeout=5)
    assert await read_all(bus, [msg]) == []
    for _ in range(50):  # an ack is a plain publish: give the server a moment to count it
        info = await bus.js.consumer_info("AE_EVENTS", "dlq-test")
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.05)
    assert info.num_ack_pending == 0 and bus.nc.is_connected
    dead = await bus.js.get_last_msg(DLQ_STREAM, dlq_subject("dlq-test", "beta"))
    stub = json.loads(dead.data or b"{}")
    assert stub["stub"] is True and stub["bytes"] == len(body) and stub["head"].startswith("xxx")
    assert dead.headers is not None and dead.headers["Ae-Error"].startswith("not a valid event envelope")
    assert dead.headers["Ae-Original-Subject"] == subject and dead.headers["Ae-Fuzz"] == "1"
