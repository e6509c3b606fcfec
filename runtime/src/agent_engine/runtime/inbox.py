"""The one rule every consumer follows for each message it takes from the bus.

An input is applied; or answered with a domain refusal (`task.rejected`, `node.errored`, a query
error); or, when it cannot be, dead-lettered at once with the reason, because the failure is
permanent: unparseable, invalid, naming something that does not exist or another tenant's. Only
transient failures (a server down) are redelivered. A handler never raises out of the loop: what it
cannot classify is treated as permanent, since redelivering the same input gives the same error.
"""

from __future__ import annotations

import logging

import psycopg
from nats import errors as nats_errors
from nats.aio.msg import Msg
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError
from pydantic import ValidationError

from agent_engine.contracts.binding import structured_body
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.errors import validation_summary
from agent_engine.contracts.subjects import subject_problem
from agent_engine.runtime.bus import Bus

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (
    psycopg.OperationalError, psycopg.InterfaceError, ConnectionError, TimeoutError,
    nats_errors.ConnectionClosedError, nats_errors.ConnectionReconnectingError, nats_errors.NoServersError,
    nats_errors.StaleConnectionError, nats_errors.TimeoutError, nats_errors.NoRespondersError,
    nats_errors.ConnectionDrainingError, nats_errors.FlushTimeoutError, nats_errors.OutboundBufferLimitError,
    ServiceUnavailableError,
    # a JetStream publish that no stream answered: on a cluster, while the stream elects a new leader (a node died)
    NoStreamResponseError,
)
"""Failures of a server or the connection to it: the same input succeeds once the server is back."""
DUPLICATE_IN_PROCESS = 10158
"""JetStream's answer to a publish whose message id another publish is storing right now (a retry racing the
first attempt across a change of stream leader): the next try gets the usual duplicate acknowledgement."""


class Refused(Exception):
    """One input that can never be applied as it is: dead-lettered at once with this reason."""


def transient(exc: BaseException, extra: tuple[type[BaseException], ...] = ()) -> bool:
    return isinstance(exc, TRANSIENT + extra) or (isinstance(exc, APIError) and exc.err_code == DUPLICATE_IN_PROCESS)


def describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, Refused) else f"{type(exc).__name__}: {exc}"


def read(msg: Msg) -> Envelope:
    """The message as an envelope published on its own subject (its tenant's, its type's); Refused otherwise."""
    try:
        envelope = Envelope.from_bytes(structured_body(msg.data, msg.headers))  # either content mode
    except ValidationError as exc:
        raise Refused(f"not a valid event envelope: {validation_summary(exc, count_rest=True)}") from None
    problem = subject_problem(msg.subject, envelope)
    if problem:
        raise Refused(problem)
    return envelope


async def read_all(bus: Bus, msgs: list[Msg]) -> list[tuple[Msg, Envelope]]:
    """Every message that reads as an envelope for its subject's tenant; the rest are dead-lettered now."""
    readable = []
    for msg in msgs:
        try:
            readable.append((msg, read(msg)))
        except Refused as exc:
            await refuse(bus, msg, str(exc))
    return readable


async def refuse(bus: Bus, msg: Msg, reason: str) -> None:
    """Dead-letter at once and ack: redelivery cannot make this input valid. An outage is raised (the
    message comes back); if the dead letter itself cannot be written for any other reason, the message
    is acked all the same, with an error in the log naming where the stream keeps it."""
    try:
        await bus.dead_letter(msg, reason)
    except Exception as exc:
        if transient(exc):
            raise
        seq = msg.metadata.sequence.stream if msg.metadata else "?"
        log.error("could not dead-letter the message on %s (stream sequence %s: %s): %s", msg.subject, seq, reason,
                  describe(exc))
    await msg.ack()


async def settle(bus: Bus, msg: Msg, failure: BaseException | None, *, max_deliver: int,
                 retry_delay: float = 1.0, extra_transient: tuple[type[BaseException], ...] = ()) -> None:
    """Ack a handled message; dead-letter a permanent failure at once; nak a transient one for redelivery
    (dead-lettered after `max_deliver` deliveries all the same, so nothing loops forever)."""
    if failure is None:
        await msg.ack()
        return
    if not transient(failure, extra_transient):
        await refuse(bus, msg, describe(failure))
        return
    delivered = msg.metadata.num_delivered if msg.metadata else 1
    if delivered >= max_deliver:
        await bus.dead_letter(msg, f"{describe(failure)} (after {delivered} deliveries)")
        await msg.ack()
    else:
        await msg.nak(delay=retry_delay * delivered)
