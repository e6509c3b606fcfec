"""Talking to a running engine over NATS: submit requests, follow a task, query the services."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext

from agent_engine.cli.stack import Stack
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import TaskRequested
from agent_engine.contracts.subjects import AGENT_RUNNER_RPC, PREFIX, ROUTER_RPC, TELEMETRY_RPC
from agent_engine.runtime.bus import MSG_ID, TASK_ID_HEADER, ensure_streams

SOURCE = "agentctl"


class CliError(Exception):
    """An error agentctl prints as one readable line and turns into a non-zero exit."""


def nats_url() -> str:
    url = Stack.load().nats_url
    if not url:
        raise CliError("no running stack found: start one with `agentctl up` or set AE_NATS_URL")
    return url


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[Client, JetStreamContext]]:
    url = nats_url()
    try:
        nc = await nats.connect(url, name=SOURCE, connect_timeout=3, max_reconnect_attempts=2,
                                allow_reconnect=False)
    except Exception as exc:  # noqa: BLE001  every connect failure reads the same to a user
        raise CliError(f"cannot reach NATS at {url} ({exc}); is the stack up? (`agentctl ps`)") from None
    try:
        js = nc.jetstream(timeout=10)
        await ensure_streams(js)
        yield nc, js
    finally:
        await nc.drain()


def task_id_for(tenant: str, idempotency_key: str | None) -> str:
    if idempotency_key:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"agent-engine:{tenant}:{idempotency_key}"))
    return str(uuid.uuid4())


def request_envelope(tenant: str, workflow: str, task_input: dict[str, Any], idempotency_key: str | None,
                     priority: int = 0) -> Envelope:
    task_id = task_id_for(tenant, idempotency_key)
    # a fresh event id even with a key: the key fixes the task id, and the router absorbs repeats, while a
    # derived id would make JetStream drop a retry (say, after a rejection) as a duplicate
    event_id = str(uuid.uuid4())
    data = TaskRequested(workflow=workflow, input=task_input, idempotency_key=idempotency_key,
                         requested_by=SOURCE, priority=priority)
    return Envelope(id=event_id, source=SOURCE, type=TaskRequested.TYPE, time=datetime.now(UTC), tenant=tenant,
                    task_id=task_id, correlation_id=task_id, data=data.model_dump(mode="json", exclude_none=True))


async def publish_request(js: JetStreamContext, envelope: Envelope, max_payload: int) -> None:
    body = envelope.to_bytes()
    if len(body) > max_payload:
        raise CliError(f"request is {len(body) / 1048576:.1f} MiB, over this NATS server's "
                       f"{max_payload / 1048576:.1f} MiB message limit")
    await js.publish(f"{PREFIX}.{envelope.tenant}.task.requested", body,
                     headers={MSG_ID: envelope.id, TASK_ID_HEADER: envelope.task_id})


async def rpc(nc: Client, service_subject: str, action: str, body: dict[str, Any], timeout: float = 10) -> Any:
    subject = f"{service_subject}.{action}"
    who = {ROUTER_RPC: "router", TELEMETRY_RPC: "telemetry", AGENT_RUNNER_RPC: "agent-runner"}.get(service_subject,
                                                                                                 subject)
    try:
        msg = await nc.request(subject, json.dumps(body).encode(), timeout=timeout)
    except NoRespondersError:
        raise CliError(f"the {who} service is not running (`agentctl ps`, then `agentctl up`)") from None
    except NatsTimeout:
        raise CliError(f"the {who} service did not answer within {timeout:g}s") from None
    reply = json.loads(msg.data)
    if isinstance(reply, dict) and "error" in reply:
        raise CliError(reply["error"])
    return reply


class TaskEvents:
    """A core-NATS subscription to one tenant's events, filtered to one task.

    Subscribe before submitting: JetStream publishes reach core subscribers too, so nothing is missed.
    """

    def __init__(self, nc: Client, tenant: str, task_id: str) -> None:
        self.nc = nc
        self.subject = f"{PREFIX}.{tenant}.>"
        self.task_id = task_id
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue()

    async def __aenter__(self) -> TaskEvents:
        async def on_msg(msg: Any) -> None:
            try:
                event = Envelope.from_bytes(msg.data)
            except Exception:  # noqa: BLE001  someone else's bad message is not ours to print
                return
            if event.task_id == self.task_id:
                await self.queue.put(event)

        self.sub = await self.nc.subscribe(self.subject, cb=on_msg)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sub.unsubscribe()

    async def next(self, timeout: float) -> Envelope:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            raise CliError(f"no news of task {self.task_id} for {timeout:g}s; is the stack up? "
                           "(`agentctl ps`)") from None
