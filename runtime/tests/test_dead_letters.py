"""Dead letters against a real nats-server: even a message at the size limit is dead-lettered with its
reason (as a stub), never left to come back for ever."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.js.errors import NotFoundError

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


def _masking(raw: bytes) -> tuple[bytes, dict[str, int]]:
    """A stand-in for guardrails' redaction (runtime imports no service): every 'secret' becomes a placeholder."""
    n = raw.count(b"secret")
    return raw.replace(b"secret", b"[redacted:word]"), ({"word": n} if n else {})


async def _dead_letter_one(bus: Bus, subject: str, body: bytes, durable: str) -> tuple[Any, Any]:
    ack = await bus.js.publish(subject, body, headers={MSG_ID: str(uuid.uuid4())})
    sub = await bus.pull(durable, [subject], ack_wait=30)
    [msg] = await sub.fetch(1, timeout=5)
    await sub.unsubscribe()
    assert await read_all(bus, [msg]) == []
    return ack, await bus.js.get_last_msg(DLQ_STREAM, dlq_subject("dlq-test", subject.split(".")[1]))


async def test_a_scrubbing_bus_dead_letters_a_redacted_copy_and_says_so(bus: Bus) -> None:
    tenant = f"s{uuid.uuid4().hex[:8]}"
    scrubbing = dataclasses.replace(bus, scrub=_masking)
    ack, dead = await _dead_letter_one(scrubbing, f"ae.{tenant}.node.errored", b"{not json, a secret",
                                       f"scrub-{tenant}")
    assert dead.data == b"{not json, a [redacted:word]"
    assert dead.headers["Ae-Redacted"] == "word=1"
    assert dead.headers["Ae-Error"].startswith("not a valid event envelope")
    assert dead.headers["Ae-Error"].endswith("[the body is a copy with personal data redacted: 1 word]")
    assert (await bus.js.get_msg("AE_EVENTS", ack.seq)).data == b"{not json, a secret"  # kept: no delete_dead


async def test_a_deleting_bus_leaves_only_the_dead_letter(bus: Bus) -> None:
    tenant = f"s{uuid.uuid4().hex[:8]}"
    deleting = dataclasses.replace(bus, scrub=_masking, delete_dead=True)
    ack, dead = await _dead_letter_one(deleting, f"ae.{tenant}.node.errored", b"secret" * 3, f"del-{tenant}")
    assert dead.data == b"[redacted:word]" * 3 and dead.headers["Ae-Redacted"] == "word=3"
    with pytest.raises(NotFoundError):
        await bus.js.get_msg("AE_EVENTS", ack.seq)


async def test_a_plain_bus_keeps_the_body_as_it_was(bus: Bus) -> None:
    tenant = f"s{uuid.uuid4().hex[:8]}"
    _, dead = await _dead_letter_one(bus, f"ae.{tenant}.node.errored", b"{not json, a secret", f"plain-{tenant}")
    assert dead.data == b"{not json, a secret" and "Ae-Redacted" not in dead.headers


async def test_a_body_the_scrub_cannot_take_is_withheld(bus: Bus) -> None:
    def broken(raw: bytes) -> tuple[bytes, dict[str, int]]:
        raise ValueError("no")

    tenant = f"s{uuid.uuid4().hex[:8]}"
    _, dead = await _dead_letter_one(dataclasses.replace(bus, scrub=broken), f"ae.{tenant}.node.errored",
                                     b"{a secret", f"broken-{tenant}")
    assert json.loads(dead.data) == {"withheld": True, "bytes": 9} and dead.headers["Ae-Redacted"] == "failed"
    assert b"secret" not in dead.data and "could not be redacted" in dead.headers["Ae-Error"]
