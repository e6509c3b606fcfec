"""Deleting what a gate has answered from the event stream: a raw request, a runner's unchecked output."""

from __future__ import annotations

from nats.js.errors import NotFoundError

from agent_engine.contracts.subjects import STREAM
from agent_engine.runtime.bus import Bus


async def delete_answered(bus: Bus, seq: int) -> None:
    try:
        await bus.js.delete_msg(STREAM, seq)
    except NotFoundError:  # deleted already (a redelivery), or aged out
        pass
