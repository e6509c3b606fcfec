"""The dashboard's one connection to the engine: queries (as agentctl asks them), a live feed of which tasks
changed, and the one event it may publish, node.approval_decided.

Live status: a core NATS subscription on every tenant's events. The dashboard never parses them: it reads the
task id header (or, failing that, the body's task_id) and wakes the browsers watching that task, which then
ask the router for the task's state. Core NATS may drop a message under load; a watcher also refreshes every
few seconds (app.py), so a missed wake-up costs a moment, never a wrong picture.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from agent_engine.contracts.artifacts import DEFAULT_MAX_BYTES, DEFAULT_THRESHOLD
from agent_engine.contracts.envelope import command
from agent_engine.contracts.events import NodeApprovalDecided
from agent_engine.contracts.subjects import ROUTER_RPC, TELEMETRY_RPC, rpc_subject, tenant_subject
from agent_engine.runtime.artifacts import ArtifactError, ArtifactStore
from agent_engine.runtime.bus import TASK_ID_HEADER, Bus

log = logging.getLogger("dashboard")
SOURCE = "dashboard"
DECIDER_PREFIX = "dashboard:"
"""A decision from the dashboard is recorded as `dashboard:<operator>`: who decided, and that it was through
here. The ':' is no subject token character, so the decision goes on the type's bare subject, which only
services may publish on: no tenant credential can send under such a name, and the dashboard under no other
(runtime/auth.py)."""


class QueryError(Exception):
    """A query the engine answered with an error, or did not answer: the text says which and why."""


class Link:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.watchers: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.closing = False
        self.subscription: Subscription | None = None
        self.listening = asyncio.Lock()
        """Set at shutdown: every live feed wakes and ends, so the web server need not cut them off."""

    async def _listen(self, on: bool) -> None:
        """Subscribe to every tenant's events only while some browser watches a task: an idle dashboard costs
        the bus nothing (a busy engine publishes a lot)."""
        async with self.listening:  # two browsers arriving at once subscribe once
            if on and self.subscription is None:
                self.subscription = await self.bus.nc.subscribe(tenant_subject(), cb=self._on_event)
            elif not on and self.subscription is not None and not self.watchers:
                subscription, self.subscription = self.subscription, None
                await subscription.unsubscribe()

    async def _on_event(self, msg: Msg) -> None:
        task_id = (msg.headers or {}).get(TASK_ID_HEADER)
        if task_id is None and self.watchers:
            try:
                task_id = str(json.loads(msg.data).get("task_id"))
            except (ValueError, AttributeError, RecursionError):
                return
        for wake in self.watchers.get(task_id or "", ()):
            wake.set()

    def close(self) -> None:
        self.closing = True
        for wakes in self.watchers.values():
            for wake in wakes:
                wake.set()

    async def watch(self, task_id: str) -> asyncio.Event:
        wake = asyncio.Event()
        self.watchers[task_id].add(wake)
        await self._listen(True)
        return wake

    async def unwatch(self, task_id: str, wake: asyncio.Event) -> None:
        self.watchers[task_id].discard(wake)
        if not self.watchers[task_id]:
            del self.watchers[task_id]
        if not self.watchers:
            await self._listen(False)

    async def query(self, service_rpc: str, action: str, body: dict[str, Any], timeout: float = 10) -> Any:
        who = "router" if service_rpc == ROUTER_RPC else "telemetry"
        try:
            msg = await self.bus.nc.request(rpc_subject(service_rpc, action), json.dumps(body).encode(),
                                            timeout=timeout)
        except NoRespondersError:
            raise QueryError(f"the {who} service is not running") from None
        except NatsTimeout:
            raise QueryError(f"the {who} service did not answer within {timeout:g}s") from None
        reply = json.loads(msg.data)
        if isinstance(reply, dict) and "error" in reply:
            raise QueryError(str(reply["error"]))
        return reply

    async def show(self, task_id: str) -> dict[str, Any]:
        return dict(await self.query(ROUTER_RPC, "task.show", {"task_id": task_id}))

    async def history(self, task_id: str) -> list[dict[str, Any]]:
        return list((await self.query(ROUTER_RPC, "task.history", {"task_id": task_id}))["events"])

    async def ledger(self, task_id: str | None = None, tenant: str | None = None) -> dict[str, Any]:
        body = {k: v for k, v in (("task_id", task_id), ("tenant", tenant)) if v}
        return dict(await self.query(TELEMETRY_RPC, "ledger", body))

    async def tenant_sums(self, tenants: list[str]) -> dict[str, Any]:
        """Those tenants' ledger lines and their calls summed by model and by day (the ledger's `tenants`)."""
        return dict(await self.query(TELEMETRY_RPC, "ledger", {"tenants": tenants}))

    async def tasks(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        return list((await self.query(TELEMETRY_RPC, "tasks.list", filters))["tasks"])

    def _store(self) -> ArtifactStore:
        # the limits are a writer's: given, so a bad AE_ARTIFACT_* setting cannot fail a read here
        return ArtifactStore(self.bus.js, threshold_bytes=DEFAULT_THRESHOLD, max_artifact_bytes=DEFAULT_MAX_BYTES)

    async def artifact(self, tenant: str, artifact: str) -> bytes:
        """An artifact's bytes from `tenant`'s bucket, checked against its id (ArtifactStore.get). Which
        tenant and which ids are the caller's to check: the dashboard's credential reads every bucket."""
        try:
            return await self._store().get(tenant, artifact)
        except (ArtifactError, ValueError) as exc:
            raise QueryError(str(exc)) from None
        except NatsError as exc:  # a refused or lost read surfaces as no answer
            raise QueryError(f"could not read artifact {artifact} of tenant '{tenant}' "
                             f"({type(exc).__name__})") from None

    async def artifact_chunks(self, tenant: str, artifact: str) -> tuple[int, AsyncIterator[bytes]]:
        """An artifact's size and its bytes chunk by chunk (ArtifactStore.open), for a download that holds one
        chunk at a time; a missing one is a QueryError before any byte. A failure while the chunks are read
        (damaged content, a lost connection) is logged and ends the download short of its Content-Length, so
        a browser reports it failed rather than saving part of the file as if whole."""
        try:
            size, chunks = await self._store().open(tenant, artifact)
        except (ArtifactError, ValueError) as exc:
            raise QueryError(str(exc)) from None
        except NatsError as exc:
            raise QueryError(f"could not read artifact {artifact} of tenant '{tenant}' "
                             f"({type(exc).__name__})") from None

        async def logged() -> AsyncIterator[bytes]:
            try:
                async for chunk in chunks:
                    yield chunk
            except (ArtifactError, NatsError) as exc:
                log.warning("download of artifact %s of tenant '%s' cut short: %s", artifact, tenant,
                            exc if isinstance(exc, ArtifactError) else type(exc).__name__)
                raise

        return size, logged()

    async def decide(self, task_id: str, node: str, decision: str, reason: str, operator: str) -> str:
        """Publish the operator's decision as agentctl approve/reject does; returns the name it is recorded
        under. Checks first that the node waits, so a stale page gets a clear answer instead of a refusal."""
        shown = await self.show(task_id)
        waiting = [n["node"] for n in shown["nodes"] if n["status"] == "awaiting_approval"]
        if node not in waiting:
            raise QueryError(f"node '{node}' of task {task_id} is not waiting for approval "
                             f"(task {shown['status']}; waiting: {', '.join(waiting) or 'none'})")
        decided_by = f"{DECIDER_PREFIX}{operator}"
        request = NodeApprovalDecided(node=node, decision=decision, decided_by=decided_by,  # type: ignore[arg-type]
                                      reason=reason)
        await self.bus.publish(command(request, tenant=shown["tenant"], task_id=task_id, source=SOURCE))
        log.info("%s decided %s on node %s of task %s", decided_by, decision, node, task_id)
        return decided_by
