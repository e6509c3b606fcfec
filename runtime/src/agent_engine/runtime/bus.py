"""The NATS JetStream bus every service uses: publish envelopes, consume with durable pull consumers.

We use nats-py directly rather than FastStream here because the router needs batch fetches with
its own ack timing (ack only after the store commit) and the DLQ rule needs the delivery count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from agent_engine.contracts import Envelope, subject_for
from agent_engine.contracts.credentials import Credential
from agent_engine.contracts.servers import server_list
from agent_engine.contracts.subjects import (
    DLQ_STREAM,
    STREAM,
    dlq_subject,
    tenant_from_subject,
)
from agent_engine.runtime import health, metrics, tracing
from agent_engine.runtime.keyring import credential_from_env
from agent_engine.runtime.settings import (
    nats_servers,
)
from agent_engine.runtime.streamowner import creates_streams, wait_for_streams
from agent_engine.runtime.streams import ensure_streams

log = logging.getLogger(__name__)

HEADER_MAX = 1024
"""A dead letter keeps at most this much of each header it copies."""
MSG_ID = "Nats-Msg-Id"
TASK_ID_HEADER = "Ae-Task-Id"
FETCH_S = 1.0
"""How long one fetch of a consumer waits for messages; one that finds none is idle."""
LATE_STATUS_S = 0.02
"""After an idle fetch: time for the server's late "request timed out" answer to arrive (see Bus.consume)."""


def auth_options(credential: Credential | None) -> dict[str, Any]:
    """nats-py connect options for a credential: its nkey seed, and the inbox prefix its permissions allow."""
    if credential is None:
        return {}
    return {"nkeys_seed_str": credential.seed, "inbox_prefix": credential.inbox}


class AuthRefused(SystemExit):
    """The server refused the credential: retrying cannot help, so a service stops with this message."""


async def connect(url: str | Sequence[str], name: str, credential: Credential | None = None) -> Client:
    """Connect, retrying until a server answers (a service may start before NATS is up). `url` is one URL or
    a cluster's URLs (a list, or a string with commas: AE_NATS_URL). The credential is the one given, else the
    file AE_NATS_CREDENTIAL names; with neither, the connection is anonymous (which a server with
    authorization refuses)."""
    servers = nats_servers(url) if isinstance(url, str) else server_list(url)
    url = ",".join(servers)
    credential = credential or credential_from_env()
    connecting = True

    async def on_error(exc: Exception) -> None:
        # nats-py retries a refused credential for ever while connecting; refusal is final, so end it. Later
        # errors (a permission violation, a reconnect) are logged in one line, never with a traceback.
        if connecting and "authorization violation" in str(exc).lower():
            who = credential.identity if credential else "an anonymous connection (no AE_NATS_CREDENTIAL)"
            raise AuthRefused(f"NATS at {url} refused {who}: authorization violation")
        log.warning("NATS (%s): %s", name, exc)

    delay = 0.2
    while True:
        try:
            nc = await nats.connect(
                servers, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                connect_timeout=2, allow_reconnect=True, error_cb=on_error, **auth_options(credential),
            )
            connecting = False
            return nc
        except AuthRefused:
            raise
        except Exception as exc:  # noqa: BLE001  any failure to reach the server: wait and try again
            log.warning("cannot reach NATS at %s (%s); retrying in %.1fs", url, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def connection_check(nc: Client) -> health.Check:
    """A readiness check: `nc` is connected to a NATS server."""

    async def connected() -> str | None:
        if nc.is_connected:
            return None
        return "reconnecting to NATS" if nc.is_reconnecting else "not connected to NATS"

    return connected


Scrub = Callable[[bytes], tuple[bytes, dict[str, int]]]
"""What a consumer's dead letters keep of a message body: a copy with personal data redacted, and the count per
kind redacted (guardrails' gates: their messages carry outputs and tool arguments)."""
REDACTED_HEADER = "Ae-Redacted"
ORIGINAL_SUBJECT_HEADER = "Ae-Original-Subject"
ERROR_HEADER = "Ae-Error"
"""The headers a dead letter carries (`Bus.dead_letter`): where the message was going, why it was refused, and (a
gate's) what its copy had redacted; agentctl's `dlq` and `forget` read them."""


@dataclass
class Bus:
    nc: Client
    js: JetStreamContext
    service: str
    scrub: Scrub | None = field(default=None, compare=False)
    """When set, a dead letter keeps the body (and the reason) as this redacts them, never as they were:
    `dataclasses.replace(bus, scrub=...)` gives one consumer such a bus over the same connection."""
    delete_dead: bool = field(default=False, compare=False)
    """Delete a dead-lettered message from its stream once its dead letter is written (with `scrub`: the
    redacted copy is then the only one left), as a gate deletes each message it answered."""

    @classmethod
    async def open(cls, url: str, service: str) -> Bus:
        nc = await connect(url, service)
        js = nc.jetstream(timeout=10)
        creates = creates_streams(credential_from_env())  # the credential `connect` used
        while True:
            try:
                if creates:
                    await ensure_streams(js)
                else:  # its credential may not create them: the router does
                    await wait_for_streams(js, service)
                bus = cls(nc, js, service)
                health.PROCESS.add("nats", connection_check(nc))
                metrics.SAMPLERS.add("dlq", bus.sample_dead_letters)
                return bus
            except Exception as exc:  # noqa: BLE001  JetStream not ready yet (server restarting)
                log.warning("JetStream not ready (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        # close, not drain: draining a pull subscription waits out its fetch (30 s); anything
        # un-acked is redelivered to the next consumer, so closing loses nothing.
        if not self.nc.is_closed:
            await self.nc.close()

    async def publish(self, envelope: Envelope, *, under: str | None = None, body: bytes | None = None) -> None:
        """Publish with Nats-Msg-Id = event id, so a republish after a crash is dropped by JetStream. With
        tracing on, in a `publish` span whose context goes in the traceparent header (runtime/tracing.py; `under`:
        another parent than the envelope's own, `tracing.publishing`). What the stream stores for the first
        time is counted (metrics.published); a duplicate it drops is not. `body`: the envelope's `to_bytes` when
        the caller has them already (with tracing on the envelope may be stamped, so it is encoded again)."""
        subject = subject_for(envelope)
        headers = {MSG_ID: envelope.id, TASK_ID_HEADER: envelope.task_id}
        if not tracing.ENABLED:
            ack = await self.js.publish(subject, envelope.to_bytes() if body is None else body, headers=headers)
        else:
            with tracing.publishing(envelope, subject, under=under) as (envelope, trace_headers):
                ack = await self.js.publish(subject, envelope.to_bytes(), headers={**headers, **trace_headers})
        if not ack.duplicate:
            metrics.published(envelope.type, envelope.tenant, envelope.data)

    async def publish_many(self, envelopes: Sequence[Envelope], bodies: Sequence[bytes | None] = ()) -> None:
        """Publish concurrently; `bodies`, when given, are the envelopes' bytes (None: not encoded yet)."""
        if not bodies:
            await asyncio.gather(*(self.publish(e) for e in envelopes))
            return
        await asyncio.gather(*(self.publish(e, body=b) for e, b in zip(envelopes, bodies, strict=True)))

    async def dead_letter(self, msg: Msg, error: str) -> None:
        """Keep the message on `aedlq.<service>.<tenant>` (the tenant token of its subject) with its reason.
        One too large to carry the extra headers within the server's max_payload is kept as a stub (its size
        and first bytes; the stream still holds it whole). With `scrub`, the body and the reason are kept only
        as it redacts them, and the `Ae-Redacted` header says what it found (`email=1,card=1`, or `none`)."""
        headers = {k: v[:HEADER_MAX] for k, v in (msg.headers or {}).items() if k != MSG_ID}
        body = msg.data
        if self.scrub is not None:
            try:
                body, counts = self.scrub(body)
                error_bytes, error_counts = self.scrub(error.encode("utf-8", "replace"))
            except Exception:  # a body the redaction cannot take: keep none of it, and no reason text
                log.exception("could not redact a dead letter of %s; keeping only its size", msg.subject)
                body = json.dumps({"withheld": True, "bytes": len(msg.data)}).encode()
                headers[REDACTED_HEADER] = "failed"
                error = "the reason and the body are withheld: they could not be redacted"
            else:
                error = error_bytes.decode("utf-8", "replace")
                for kind, n in error_counts.items():
                    counts[kind] = counts.get(kind, 0) + n
                found = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "none found"
                headers[REDACTED_HEADER] = ",".join(f"{kind}={n}" for kind, n in sorted(counts.items())) or "none"
                error = f"{error[:900]} [the body is a copy with personal data redacted: {found}]"
        headers.update({ORIGINAL_SUBJECT_HEADER: msg.subject[:HEADER_MAX],
                        ERROR_HEADER: error[:1000].replace("\n", " ")})
        room = self.nc.max_payload - sum(len(k) + len(v) + 4 for k, v in headers.items()) - 64
        if len(body) > room:
            seq = msg.metadata.sequence.stream if msg.metadata else None
            body = json.dumps({"stub": True, "bytes": len(msg.data), "stream_sequence": seq,
                               "head": body[:1024].decode("utf-8", "backslashreplace")}).encode()
        await self.js.publish(dlq_subject(self.service, tenant_from_subject(msg.subject)), body, headers=headers)
        log.warning("dead-lettered message on %s: %s", msg.subject, error)
        if self.delete_dead and msg.metadata and msg.metadata.sequence.stream:
            await delete_message(self.js, msg.metadata.stream or STREAM, msg.metadata.sequence.stream)

    async def sample_dead_letters(self) -> None:
        """metrics: how many of this service's dead letters (`aedlq.<service>[.<tenant>]`) AE_DLQ keeps."""
        info = await self.js.stream_info(DLQ_STREAM, subjects_filter=dlq_subject(self.service, ">"))
        kept = sum((info.state.subjects or {}).values())
        bare = await self.js.stream_info(DLQ_STREAM, subjects_filter=dlq_subject(self.service))
        metrics.DLQ_MESSAGES.labels(metrics.SERVICE[0]).set(kept + sum((bare.state.subjects or {}).values()))

    def sample_lag(self, durable: str) -> metrics.Sampler:
        """metrics: the durable consumer's pending and unacknowledged messages, asked of the server on scrape."""
        async def sample() -> None:
            info = await self.js.consumer_info(STREAM, durable, timeout=metrics.SAMPLE_TIMEOUT_S)
            metrics.CONSUMER_PENDING.labels(metrics.SERVICE[0], durable).set(info.num_pending or 0)
            metrics.CONSUMER_ACK_PENDING.labels(metrics.SERVICE[0], durable).set(info.num_ack_pending or 0)

        return sample

    async def pull(self, durable: str, subjects: list[str], *, ack_wait: float,
                   max_ack_pending: int = 1024, pinned: bool = False) -> JetStreamContext.PullSubscription:
        """A durable pull consumer with explicit acks over `subjects` of the event stream. `pinned` (one subject):
        created through the API subject that names the filter, which is all a credential whose consumer is
        confined to one filter may use (auth._gated_durable)."""
        filters: dict[str, Any] = ({"name": durable, "filter_subject": subjects[0]} if pinned and len(subjects) == 1
                                   else {"filter_subjects": subjects})
        config = ConsumerConfig(
            durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, ack_wait=ack_wait, max_ack_pending=max_ack_pending, **filters,
        )
        try:
            await self.js.add_consumer(STREAM, config)  # creates, or updates the editable settings
        except APIError as exc:  # a setting the server cannot change: keep the consumer and its position
            log.error("consumer %s exists with settings that cannot be changed (%s); using it as it is",
                      durable, exc.description)
        return await self.js.pull_subscribe_bind(durable, stream=STREAM)

    async def consume(self, durable: str, subjects: list[str],
                      handle: Callable[[list[Msg]], Awaitable[None]], *, batch: int, ack_wait: float,
                      stop: asyncio.Event, on_idle: Callable[[], None] | None = None, pinned: bool = False) -> None:
        """Fetch batches until `stop` is set; `handle` acks (or naks) each message itself.
        `on_idle` is called whenever a fetch finds nothing waiting."""
        failing = ["its consumer is not created yet"]

        async def consuming() -> str | None:
            return f"not fetching from consumer {durable}: {failing[0]}" if failing else None

        health.PROCESS.add(f"consumer {durable}", consuming)
        metrics.SAMPLERS.add(f"consumer {durable}", self.sample_lag(durable))
        sub: JetStreamContext.PullSubscription | None = None
        try:
            while sub is None:
                if stop.is_set():
                    return
                try:
                    sub = await self.pull(durable, subjects, ack_wait=ack_wait, pinned=pinned)
                    failing.clear()
                    health.PROCESS.serving = True
                except Exception as exc:  # noqa: BLE001  server restarting: try again
                    log.warning("cannot create consumer %s (%s); retrying", durable, exc)
                    failing[:] = [f"cannot create it: {str(exc)[:200]}"]
                    await asyncio.sleep(1.0)
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(batch, timeout=FETCH_S)
                    failing.clear()
                except (TimeoutError, NatsTimeoutError):
                    failing.clear()
                    if on_idle is not None:
                        on_idle()
                    # the server's "request timed out" answer may still be on its way: let it arrive, so that the
                    # next fetch discards it instead of taking it for the answer to its own first request (nats-py
                    # then leaves a second pull request open, and the next message waited up to a second)
                    await asyncio.sleep(LATE_STATUS_S)
                    continue
                except Exception as exc:  # noqa: BLE001  connection blips: back off, keep going
                    log.warning("fetch on %s failed: %s", durable, exc)
                    failing[:] = [f"fetch failed: {str(exc)[:200] or type(exc).__name__}"]
                    await asyncio.sleep(0.5)
                    continue
                try:
                    await handle(msgs)
                except asyncio.CancelledError:
                    await _hand_back(msgs)
                    raise
                except Exception:  # e.g. an ack lost to a disconnect: JetStream redelivers
                    log.exception("handling a batch on %s failed; un-acked messages will be redelivered", durable)
                metrics.handled(durable, ((m.subject, _stored_at(m)) for m in msgs))
        finally:
            health.PROCESS.remove(f"consumer {durable}")
            metrics.consumer_stopped(durable)
            if sub is not None:  # a pull request still open must not deliver to an inbox nobody reads
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()


GONE = frozenset({10043, 10057})
"""nats-server's error codes for a delete of a message that is not there: "sequence not found" (10043), and
"no message found" (10057). It answers such a delete with these, never with 404."""


async def delete_message(js: JetStreamContext, stream: str, seq: int, overwrite: bool = True) -> None:
    """Delete a message from a stream; one deleted already (a redelivery, another replica) or aged out is no error.
    With `overwrite` (the server's secure delete) its bytes are overwritten in the file store too, which rewrites
    the whole block it is in (guardrails/overwrite.py says when that is needed)."""
    try:
        if overwrite:
            await js.delete_msg(stream, seq)
        else:  # nats-py's delete_msg cannot leave out the overwrite: the same API request with `no_erase`
            await js._api_request(f"{js._prefix}.STREAM.MSG.DELETE.{stream}",
                                  json.dumps({"seq": seq, "no_erase": True}).encode(), timeout=js._timeout)
    except APIError as exc:
        if not (isinstance(exc, NotFoundError) or exc.err_code in GONE):
            raise


def _stored_at(msg: Msg) -> float | None:
    """When the stream stored the message (epoch seconds), from its ack subject; None when it has none."""
    try:
        return msg.metadata.timestamp.timestamp()
    except Exception:  # noqa: BLE001  a message that did not come from JetStream: no hop to time
        return None


async def _hand_back(msgs: list[Msg]) -> None:
    """Work cut short (the drain's grace period ran out): nak what is not yet settled, so another consumer gets
    it now rather than after the ack wait. A message already acked refuses the nak, which is as it should be."""
    results = await asyncio.gather(*(asyncio.wait_for(m.nak(), 1.0) for m in msgs), return_exceptions=True)
    handed = sum(1 for r in results if not isinstance(r, BaseException))
    if handed:
        log.warning("handed back %d unfinished message(s) for redelivery", handed)
