"""agentctl's one way to talk to a running engine over NATS: send a request, ask a query, follow a task.

    async with connect() as engine:
        shown = await engine.query(ROUTER_RPC, "task.show", {"task_id": task_id})
        async with engine.request(TaskCancelRequested(...), tenant=..., task_id=...) as events:
            event = await events.next(timeout)

Every request is built by the contracts' envelope factory and published on the subject the contracts
name for it; every query goes to `rpc_subject(service, action)`. A command that only asks uses `ask`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from agent_engine.cli.stack import Stack
from agent_engine.contracts.credentials import Credential, CredentialError, load_credential
from agent_engine.contracts.envelope import Envelope, Payload, command
from agent_engine.contracts.servers import server_list
from agent_engine.contracts.subjects import (
    AGENT_RUNNER_RPC,
    AUDIT_STREAM,
    AUTH_RPC,
    ROUTER_RPC,
    TELEMETRY_RPC,
    WORKFLOW_BUCKET,
    rpc_subject,
    subject_for,
    tenant_subject,
)
from agent_engine.runtime import tracing
from agent_engine.runtime.bus import MSG_ID, TASK_ID_HEADER, auth_options
from agent_engine.runtime.keyring import credential_from_env
from agent_engine.runtime.streams import apply_replicas, ensure_streams

SOURCE = "agentctl"
DEFAULT_TENANT = "default"
SERVICE_NAMES = {ROUTER_RPC: "router", TELEMETRY_RPC: "telemetry", AGENT_RUNNER_RPC: "agent-runner",
                 AUTH_RPC: "authority"}


class CliError(Exception):
    """An error agentctl prints as one readable line and turns into a non-zero exit."""


def nats_url() -> str:
    """The stack's NATS: AE_NATS_URL (one URL or a cluster's, comma-separated), else the local stack's."""
    url = Stack.load().nats_url
    if not url:
        raise CliError("no running stack found: start one with `agentctl up` or set AE_NATS_URL")
    try:
        server_list(url)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return url


class TaskEvents:
    """A core-NATS subscription to one tenant's events, filtered to one task.

    Subscribe before sending: JetStream publishes reach core subscribers too, so nothing is missed.
    """

    def __init__(self, nc: Client, tenant: str, task_id: str) -> None:
        self.nc = nc
        self.subject = tenant_subject(tenant)
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


class Engine:
    """A connection to the running engine (see `connect`), as the credential it was made with."""

    def __init__(self, nc: Client, js: JetStreamContext, credential: Credential | None = None) -> None:
        self.nc = nc
        self.js = js
        self.credential = credential

    @property
    def scope(self) -> str | None:
        """The one tenant a tenant credential may act for; None for the platform credential (any tenant)."""
        return self.credential.tenant if self.credential and self.credential.kind == "tenant" else None

    @property
    def sender(self) -> str:
        """The name requests are sent under: the credential's (the server refuses any other)."""
        return self.credential.user if self.credential else SOURCE

    def tenant(self, asked: str | None) -> str:
        """The tenant a command acts for: the one asked, else the credential's, else the default tenant."""
        if self.scope and asked and asked != self.scope:
            raise CliError(f"credential {self.credential.identity if self.credential else ''} may act for "
                           f"tenant '{self.scope}' only, not '{asked}'")
        return asked or self.scope or DEFAULT_TENANT

    async def query(self, service_rpc: str, action: str, body: dict[str, Any], timeout: float = 10) -> Any:
        """A service's answer to one query; an `{"error": ...}` answer raises it as a CliError. A tenant
        credential asks on its tenant's scoped subject, so the answer is about its own tasks only."""
        subject = rpc_subject(service_rpc, action, self.scope)
        who = SERVICE_NAMES.get(service_rpc, subject)
        try:
            msg = await self.nc.request(subject, json.dumps(body).encode(), timeout=timeout)
        except NoRespondersError:
            raise CliError(f"the {who} service is not running (`agentctl ps`, then `agentctl up`)") from None
        except NatsTimeout:
            raise CliError(f"the {who} service did not answer within {timeout:g}s") from None
        reply = json.loads(msg.data)
        if isinstance(reply, dict) and "error" in reply:
            raise CliError(reply["error"])
        return reply

    async def send(self, data: Payload, *, tenant: str, task_id: str) -> Envelope:
        """Publish a request for task `task_id` (a fresh event id, so JetStream never drops it as a repeat)."""
        envelope = command(data, tenant=tenant, task_id=task_id, source=SOURCE)
        with tracing.publishing(envelope, subject_for(envelope), root=True) as (envelope, trace_headers):
            return await self._send(envelope, trace_headers)

    async def _send(self, envelope: Envelope, trace_headers: dict[str, str]) -> Envelope:
        task_id = envelope.task_id
        body = envelope.to_bytes()
        if len(body) > self.nc.max_payload:
            raise CliError(f"request is {len(body) / 1048576:.1f} MiB, over this NATS server's "
                           f"{self.nc.max_payload / 1048576:.1f} MiB message limit")
        subject = subject_for(envelope)
        try:
            await self.js.publish(subject, body, headers={MSG_ID: envelope.id, TASK_ID_HEADER: task_id,
                                                          **trace_headers})
        except NatsTimeout:
            who = f"credential {self.credential.identity} ({self.credential.role or self.credential.kind})" \
                if self.credential else "this connection"
            raise CliError(f"the request on {subject} was not stored: the server did not acknowledge it (is "
                           f"{who} allowed to send {envelope.type}? see docs/security.md)") from None
        return envelope

    def follow(self, tenant: str, task_id: str) -> TaskEvents:
        """The task's events from now on (`async with`)."""
        return TaskEvents(self.nc, tenant, task_id)

    @asynccontextmanager
    async def request(self, data: Payload, *, tenant: str, task_id: str) -> AsyncIterator[TaskEvents]:
        """Send a request and follow the task it is about, from before the request was sent."""
        async with self.follow(tenant, task_id) as events:
            await self.send(data, tenant=tenant, task_id=task_id)
            yield events


def credential() -> Credential | None:
    """Who agentctl is: the file AE_NATS_CREDENTIAL (or --credential) names, else the local stack's platform
    credential, else nobody (a server without authorization)."""
    try:
        found = credential_from_env()
        admin = Stack.load().keyring.admin
        if found is None and admin.exists():
            found = load_credential(admin)
    except CredentialError as exc:
        raise CliError(str(exc)) from None
    return found


@asynccontextmanager
async def connect() -> AsyncIterator[Engine]:
    if not tracing.ENABLED:  # a request agentctl sends starts its task's trace (docs/observability.md)
        tracing.setup("agentctl")
    url = nats_url()
    cred = credential()

    async def on_error(exc: Exception) -> None:  # one line, not nats-py's traceback
        print(f"agentctl: NATS: {exc}", file=sys.stderr)

    try:
        nc = await nats.connect(server_list(url), name=SOURCE, connect_timeout=3, max_reconnect_attempts=2,
                                allow_reconnect=False, error_cb=on_error, **auth_options(cred))
    except Exception as exc:  # noqa: BLE001  every connect failure reads the same to a user
        if "authorization violation" in str(exc).lower():
            who = f"credential {cred.identity}" if cred else "an anonymous connection (no credential)"
            raise CliError(f"NATS at {url} refused {who}: wrong, revoked or missing credential") from None
        raise CliError(f"cannot reach NATS at {url} ({exc}); is the stack up? (`agentctl ps`)") from None
    try:
        js = nc.jetstream(timeout=10)
        if cred is None or cred.kind == "platform":  # only the platform may create streams
            await ensure_streams(js)
            await apply_replicas(js, AUDIT_STREAM, f"KV_{WORKFLOW_BUCKET}")  # the router's, which it cannot edit
        yield Engine(nc, js, cred)
    finally:
        await nc.drain()


async def stored(js: JetStreamContext, subject: str, *, stream: str | None = None,
                 idle: float = 1.0) -> AsyncGenerator[Msg, None]:
    """Every message stored on `subject` (an ordered consumer from the first), up to the last one there now,
    or until `idle` seconds pass with nothing new. Use it with `contextlib.aclosing`."""
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def put(msg: Msg) -> None:
        await queue.put(msg)

    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, cb=put, deliver_policy=DeliverPolicy.ALL)
    try:
        while True:
            try:
                msg = await asyncio.wait_for(queue.get(), timeout=idle)
            except TimeoutError:
                return
            yield msg
            if msg.metadata.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()


def ask(service_rpc: str, action: str, body: dict[str, Any], timeout: float = 10) -> Any:
    """Connect, ask one query, disconnect: for commands that only ask."""
    async def go() -> Any:
        async with connect() as engine:
            return await engine.query(service_rpc, action, body, timeout)
    return asyncio.run(go())
