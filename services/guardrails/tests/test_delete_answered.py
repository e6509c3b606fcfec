"""Deleting an answered message on a real nats-server: gone from the stream either way (overwritten or not), and
a second delete of it (a redelivery, or a second replica that answered it too) is not an error. nats-server
answers that second delete with error 10043, never 404: taken for a failure, the request would be dead-lettered
with its raw body."""

from __future__ import annotations

import uuid

import nats
import pytest
from nats.js.errors import NotFoundError

from agent_engine.contracts.subjects import STREAM
from agent_engine.guardrails.gate import delete_answered
from agent_engine.runtime.bus import Bus, auth_options
from agent_engine.runtime.keyring import credential_from_env
from agent_engine.runtime.streams import ensure_streams

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("overwrite", [True, False])
async def test_an_answered_message_is_deleted_once_and_a_second_delete_is_no_error(nats_url: str,
                                                                                   overwrite: bool) -> None:
    admin = await nats.connect(nats_url, **auth_options(credential_from_env()))
    bus = await Bus.open(nats_url, "guardrails")
    try:
        js = admin.jetstream()
        await ensure_streams(js)
        seq = (await js.publish(f"ae.t{uuid.uuid4().hex[:10]}.task.requested", b"{}")).seq
        await delete_answered(bus, seq, overwrite)
        with pytest.raises(NotFoundError):
            await js.get_msg(STREAM, seq)
        await delete_answered(bus, seq, overwrite)  # again: already gone, no error
    finally:
        await bus.nc.close()
        await admin.close()
