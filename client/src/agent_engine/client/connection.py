"""A connection to the engine for another system: submit a task, await its outcome, follow it, ask about it.

    async with connect("nats://127.0.0.1:4222", "~/acme-billing.cred.json") as engine:
        submitted = await engine.submit("research-review", {"brief": "..."}, idempotency_key="order-42")
        outcome = await engine.outcome(submitted.task_id, timeout=600)

Everything a tenant's credential allows and nothing more: requests are published (with JetStream, so the
server confirms they are stored) on the subject the contracts name for them, under the credential's own user
(`ae.<tenant>.task.requested.<user>`); queries go to the tenant-scoped subjects (`rpc_subject(..., tenant)`),
which the engine answers about that tenant's tasks only; a task is followed with a core NATS subscription to
the tenant's events plus its stored history, never a JetStream consumer.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

from nats.aio.client import Client as Nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NoStreamResponseError
from pydantic import ValidationError

from agent_engine.client.errors import (
    ClientError,
    ClientTimeout,
    ConnectError,
    QueryError,
    RequestRejected,
    Unavailable,
)
from agent_engine.client.follow import TaskEvents, published
from agent_engine.client.results import END_TYPES, Outcome, Submitted
from agent_engine.contracts.credentials import Credential, CredentialError, load_credential
from agent_engine.contracts.envelope import TENANT_PATTERN, Envelope, command
from agent_engine.contracts.errors import validation_summary
from agent_engine.contracts.events import TaskRequested
from agent_engine.contracts.servers import server_list
from agent_engine.contracts.subjects import (
    IDENTITY_PATTERN,
    ROUTER_RPC,
    TELEMETRY_RPC,
    rpc_subject,
    subject_for,
    tenant_inbox,
)

SOURCE = "agent-engine-client"
"""The envelope `source` of requests, unless `connect(source=...)` names the system sending them."""
DEFAULT_USER = "client"
"""The sender (`requested_by`) without a credential, unless `connect(user=...)` names one."""
MSG_ID = "Nats-Msg-Id"
"""JetStream drops a second publish with the same id within its duplicate window: the envelope id."""
TASK_ID_HEADER = "Ae-Task-Id"
"""So that even a request whose body guardrails cannot read is rejected under its task id."""
SERVICES = {ROUTER_RPC: "router", TELEMETRY_RPC: "telemetry"}


class Client:
    """A connection to the engine, acting for one tenant and user (see `connect`)."""

    def __init__(self, nc: Nats, *, tenant: str, user: str, source: str = SOURCE) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=10)
        self.tenant = tenant
        self.user = user
        """The sender requests name (`requested_by`): a credential's user, the last token of their subject."""
        self.source = source
        self.server_error = ""
        """The last error the server reported on this connection since the last request or query began (say, a
        permissions violation): quoted in a timeout's message."""

    # --- requests ---------------------------------------------------------------------------------

    async def submit(self, workflow: str, task_input: Mapping[str, Any] | None = None, *,
                     idempotency_key: str | None = None, priority: int = 0, task_id: str | None = None,
                     timeout: float = 30.0, session: str | None = None) -> Submitted:
        """Request a task of `workflow` and wait (up to `timeout` seconds) for the engine's answer: started,
        queued, or deduplicated (a request of the tenant with the same `idempotency_key` within the engine's
        window started a task already: `Submitted.task_id` is that task's id). Raises RequestRejected when the
        engine will not run it, with the reason (and `retry_after_s` when a rate limit refused it; `session` is
        what guardrails' per-session limit counts by)."""
        try:
            request = TaskRequested(workflow=workflow, input=dict(task_input or {}), idempotency_key=idempotency_key,
                                    requested_by=self.user, priority=priority, session=session)
        except ValidationError as exc:
            raise ClientError(f"not a valid task request: {validation_summary(exc)}") from None
        envelope = command(request, tenant=self.tenant, task_id=task_id or str(uuid.uuid4()), source=self.source)
        async with self.follow(envelope.task_id, history=False) as events:  # subscribed before sending
            await self.publish(envelope, timeout=min(timeout, 10.0))
            return await self._answer(events, envelope.task_id, timeout)

    async def publish(self, envelope: Envelope, timeout: float = 10.0) -> None:
        """Publish a request on its subject with JetStream: returns once the server has stored it."""
        body = envelope.to_bytes()
        if len(body) > self.nc.max_payload:
            raise ClientError(f"request is {len(body)} bytes, over this NATS server's {self.nc.max_payload} byte "
                              "message limit; send large documents as files and pass their paths")
        subject = subject_for(envelope)
        self.server_error = ""  # what the server says from now on is about this request
        try:
            await self.js.publish(subject, body, timeout=timeout,
                                  headers={MSG_ID: envelope.id, TASK_ID_HEADER: envelope.task_id})
        except (NoStreamResponseError, NoRespondersError):
            raise Unavailable(f"no stream stores {subject}: is the engine running? (its services create "
                              "the stream)") from None
        except NatsTimeout:
            # the connection's own subscription to the tenant's events is interest in the subject too, so a
            # missing stream shows as silence rather than "no responders"
            raise ClientTimeout(f"the server did not confirm the request on {subject} within {timeout:g}s"
                                + (self._server_said() or ": is the engine running? (its services create the "
                                   "stream that stores requests)")) from None

    async def _answer(self, events: TaskEvents, task_id: str, timeout: float) -> Submitted:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                event = await events.next(max(left, 0.001))
            except ClientTimeout:
                return await self._answer_stored(task_id, timeout)
            answer = _submitted(task_id, event)
            if answer is not None:
                return answer

    async def _answer_stored(self, task_id: str, timeout: float) -> Submitted:
        """No answer came live (a reconnect may have dropped it): the router's store may have one."""
        try:
            for event in published(task_id, await self.history(task_id)):
                answer = _submitted(task_id, event)
                if answer is not None:
                    return answer
        except QueryError:
            pass
        raise ClientTimeout(f"no answer to the request for task {task_id} within {timeout:g}s: is the engine "
                            "running (guardrails and the router)?" + self._server_said())

    # --- following --------------------------------------------------------------------------------

    def follow(self, task_id: str, *, history: bool = True, until_end: bool = True,
               idle_timeout: float | None = None) -> TaskEvents:
        """The task's events, each once, in order (`async with ... as events: async for event in events`):
        with `history`, what the router stored of it so far first. Iteration ends after the task's last event
        unless `until_end` is false; `idle_timeout` raises ClientTimeout after that long without news."""
        return TaskEvents(self.nc, self.tenant, task_id, self.history if history else None, until_end=until_end,
                          idle_timeout=idle_timeout)

    async def outcome(self, task_id: str, timeout: float | None = None) -> Outcome:
        """Wait until the task ends (already ended: at once) and say how. A deduplicated request's id leads to
        the task its key names. ClientTimeout after `timeout` seconds (None: wait for as long as it takes)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            async with self.follow(task_id) as events:
                while True:
                    left = None if deadline is None else deadline - loop.time()
                    try:
                        if left is not None and left <= 0:
                            raise ClientTimeout
                        event = await events.next(left)
                    except ClientTimeout:
                        raise ClientTimeout(f"task {task_id} did not end within {timeout:g}s") from None
                    if event.type in END_TYPES:
                        return Outcome.of(event)
                    if event.type == "task.deduplicated":
                        task_id = str(event.data["original_task_id"])
                        break

    # --- queries ----------------------------------------------------------------------------------

    async def show(self, task_id: str) -> dict[str, Any]:
        """The task's state as the router holds it: `status`, `nodes` (each `node`, `status`, `attempts`,
        `output`, ...), `reason`, `usage`, `duplicate_of` (docs/events.md#queries lists every field)."""
        return dict(await self.query(ROUTER_RPC, "task.show", {"task_id": task_id}))

    async def history(self, task_id: str) -> list[Envelope]:
        """Every record the router stored for the task, in order (`router.input` records hold the inputs it
        applied: `data.input` is the input envelope)."""
        reply = await self.query(ROUTER_RPC, "task.history", {"task_id": task_id})
        return [Envelope.model_validate(record) for record in reply["events"]]

    async def ledger(self, task_id: str | None = None) -> dict[str, Any]:
        """The telemetry ledger line (calls, tokens, cost) of one task, or of the tenant."""
        return dict(await self.query(TELEMETRY_RPC, "ledger", {"task_id": task_id} if task_id else {}))

    async def query(self, service_rpc: str, action: str, body: Mapping[str, Any], timeout: float = 10.0) -> Any:
        """Ask a service, on the tenant-scoped subject (so it answers about this tenant's tasks only)."""
        subject = rpc_subject(service_rpc, action, self.tenant)
        who = SERVICES.get(service_rpc, service_rpc)
        self.server_error = ""
        try:
            msg = await self.nc.request(subject, json.dumps(dict(body)).encode(), timeout=timeout)
        except NoRespondersError:
            raise Unavailable(f"the {who} service is not running (no answer on {subject})"
                              + self._server_said()) from None
        except NatsTimeout:
            raise ClientTimeout(f"the {who} service did not answer within {timeout:g}s" + self._server_said()) from None
        reply = json.loads(msg.data)
        if isinstance(reply, dict) and "error" in reply:
            raise QueryError(str(reply["error"]))
        return reply

    # --- the connection ---------------------------------------------------------------------------

    async def close(self) -> None:
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:  # noqa: BLE001  closing a connection the server dropped: nothing left to do
                await self.nc.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _server_said(self) -> str:
        return f" (the server said: {self.server_error})" if self.server_error else ""


def _submitted(task_id: str, event: Envelope) -> Submitted | None:
    """The engine's answer to a request, from one of the task's events (None: not an answer)."""
    if event.type == "task.started":
        return Submitted(task_id, "started", task_id, event)
    if event.type == "task.queued":
        return Submitted(task_id, "queued", task_id, event)
    if event.type == "task.deduplicated":
        return Submitted(str(event.data["original_task_id"]), "deduplicated", task_id, event)
    if event.type == "task.rejected":
        retry = event.data.get("retry_after_s")
        raise RequestRejected(task_id, str(event.data.get("stage", "")), str(event.data.get("reason", "")),
                              float(retry) if isinstance(retry, int | float) else None)
    return None


class connect:  # a class used like a function: `await connect(...)` or `async with connect(...)`
    """Connect to the engine's NATS server at `url` (one URL; for a cluster, its URLs as a list or a string with
    commas) as the tenant and user of `credential` (a credential file's path, or a loaded `Credential`); with no
    credential (a server without authentication), as `tenant` and `user`. Other keyword arguments go to
    `nats.connect` (e.g. `max_reconnect_attempts`)."""

    def __init__(self, url: str | Sequence[str], credential: str | Path | Credential | None = None, *,
                 tenant: str | None = None, user: str | None = None, source: str = SOURCE,
                 connect_timeout: float = 10.0, **options: Any) -> None:
        try:
            self.servers = server_list(url, "url")
        except ValueError as exc:
            raise ClientError(str(exc)) from None
        self.url = ",".join(self.servers)
        self.credential = credential
        self.tenant = tenant
        self.user = user
        self.source = source
        self.connect_timeout = connect_timeout
        """The first connection's time limit, every attempt included; once connected, a connection lost (a NATS
        restart) is made again for as long as it takes, unless `max_reconnect_attempts` says otherwise."""
        self.options = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.5,
                        "connect_timeout": min(2.0, connect_timeout), **options}
        self._client: Client | None = None

    def __await__(self) -> Generator[Any, None, Client]:
        return self._open().__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._open()
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()

    async def _open(self) -> Client:
        cred = _credential(self.credential)
        tenant, user = identity(cred, self.tenant, self.user)
        holder: list[Client] = []
        last_error: list[str] = []

        async def on_error(exc: Exception) -> None:  # permissions violations arrive here, not at the publish
            said = str(exc) or type(exc).__name__
            if not (last_error and "authorization" in last_error[0].lower()):  # the refusal says most: keep it
                last_error[:] = [said]
            if holder:
                holder[0].server_error = said

        # the tenant's own inbox prefix even without a credential: the engine answers a tenant's queries there only
        auth: dict[str, Any] = ({"nkeys_seed_str": cred.seed, "inbox_prefix": cred.inbox} if cred
                                else {"inbox_prefix": tenant_inbox(tenant, user)})
        nc = Nats()
        try:
            await asyncio.wait_for(nc.connect(self.servers, name=self.source, error_cb=on_error, **auth,
                                              **self.options), self.connect_timeout)
        except Exception as exc:  # noqa: BLE001  every way of not getting a connection reads the same to a caller
            await nc.close()
            why = last_error[0] if last_error else (str(exc) or type(exc).__name__)
            raise ConnectError(f"cannot connect to NATS at {self.url} as {tenant}/{user} within "
                               f"{self.connect_timeout:g}s: {why}") from None
        holder.append(Client(nc, tenant=tenant, user=user, source=self.source))
        return holder[0]


def _credential(credential: str | Path | Credential | None) -> Credential | None:
    if credential is None or isinstance(credential, Credential):
        return credential
    try:
        return load_credential(credential)
    except CredentialError as exc:
        raise ConnectError(str(exc)) from None


def identity(cred: Credential | None, tenant: str | None, user: str | None) -> tuple[str, str]:
    """(tenant, user) the connection acts as: a tenant credential's own (an explicit tenant must agree with
    it); a service's or the platform's credential, or none, acts for the tenant named, as its user or `user`."""
    if cred is not None and cred.kind == "tenant" and cred.tenant:
        if tenant is not None and tenant != cred.tenant:
            raise ClientError(f"the credential is tenant '{cred.tenant}'s, not tenant '{tenant}'s")
        tenant = cred.tenant
    if tenant is None:
        raise ClientError("name the tenant to act for: connect(url, tenant=...) (a tenant's credential names it)")
    user = cred.user if cred is not None else (user or DEFAULT_USER)
    if not re.match(TENANT_PATTERN, tenant):
        raise ClientError(f"tenant '{tenant}' is not a tenant name ({TENANT_PATTERN})")
    if not re.match(IDENTITY_PATTERN, user):
        raise ClientError(f"user '{user}' is not a sender name ({IDENTITY_PATTERN}): it is a subject token")
    return tenant, user
