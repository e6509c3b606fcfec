"""What the tool gate and the output gate share: a durable consumer whose every message is answered with events
(published before the ack), and the deletion of what a gate has answered from the event stream (a raw request,
a runner's unchecked output)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.aio.msg import Msg
from pydantic import ValidationError

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.errors import validation_summary
from agent_engine.contracts.events import EventData
from agent_engine.contracts.subjects import STREAM
from agent_engine.guardrails.deadletters import redacted_copy
from agent_engine.runtime import tracing
from agent_engine.runtime.bus import Bus, delete_message
from agent_engine.runtime.inbox import read_all, refuse, settle
from agent_engine.runtime.settings import Settings

log = logging.getLogger("guardrails")
T = TypeVar("T", bound=EventData)
Answer = tuple[list[Envelope], str] | tuple[list[Envelope], str, Callable[[], Awaitable[None]]]
"""The events answering one message, what to log about it ("" for a plain pass), and optionally what to do
once the message is acked (the output gate deletes unredacted artifacts then, never before: a redelivery of
an unacked message must still find them)."""


async def delete_answered(bus: Bus, seq: int, overwrite: bool = True) -> None:
    """Delete an answered message from the event stream (runtime/bus.py's delete_message)."""
    await delete_message(bus.js, STREAM, seq, overwrite)


async def serve_gate(bus: Bus, durable: str, subjects: list[str], model: type[T],
                     decide: Callable[[Msg, Envelope, T], Awaitable[Answer]], settings: Settings, stop: asyncio.Event,
                     *, delete: bool = False, logger: logging.Logger = log) -> None:
    """Consume `subjects` on `durable`: a payload that is not a valid `model` is dead-lettered at once; the others
    get `decide`'s answer, published before the ack (and, with `delete`, the message deleted from the stream:
    what it held is kept nowhere once answered). The bus down: redelivered, dead-lettered when it keeps failing.
    Every dead letter of a gate is a copy with personal data redacted (deadletters.py), never the message as it
    was: it may hold an unchecked output, or the arguments a model chose; with `delete`, the message itself is
    deleted from the stream once dead-lettered, as once answered."""
    bus = dataclasses.replace(bus, scrub=redacted_copy, delete_dead=delete)
    async def handle_one(msg: Msg, envelope: Envelope) -> None:
        with tracing.processing(msg.headers, envelope, msg.subject):
            await answer_one(msg, envelope)

    async def answer_one(msg: Msg, envelope: Envelope) -> None:
        try:
            parsed = model.model_validate(envelope.data)
        except ValidationError as exc:
            await refuse(bus, msg, f"not a valid {model.TYPE} payload: {validation_summary(exc, count_rest=True)}")
            return
        answered = await decide(msg, envelope, parsed)
        events, said = answered[0], answered[1]
        try:
            await bus.publish_many(events)
            if delete and msg.metadata and msg.metadata.sequence.stream:
                await delete_answered(bus, msg.metadata.sequence.stream)
        except Exception as exc:  # noqa: BLE001  the bus is down: redeliver (settle dead-letters what keeps failing)
            logger.warning("could not answer %s %s of task %s: %s", envelope.type, envelope.id, envelope.task_id, exc)
            await settle(bus, msg, exc, max_deliver=settings.max_deliver)
            return
        if said:
            logger.info("%s", said)
        await msg.ack()
        if len(answered) == 3:
            try:
                await answered[2]()
            except Exception as exc:  # noqa: BLE001  answered already: what is left is logged, never retried
                logger.warning("after answering %s %s of task %s: %s", envelope.type, envelope.id,
                               envelope.task_id, exc)

    async def handle_batch(msgs: list[Msg]) -> None:
        await asyncio.gather(*(handle_one(m, e) for m, e in await read_all(bus, msgs)))

    await bus.consume(durable, subjects, handle_batch, batch=settings.batch_size, ack_wait=settings.ack_wait_s,
                      stop=stop)
