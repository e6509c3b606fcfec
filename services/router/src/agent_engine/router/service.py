"""The router's I/O shell: consume inputs in batches, decide, commit once per batch, ack, relay.

Order of effects for every batch: decide (pure) -> one store transaction -> ack the inputs.
Publishing happens only from the relay, which reads what is committed, so a crash anywhere loses
nothing: an un-acked input is redelivered and absorbed by `decide`; an unpublished record is
published when the relay resumes from its durable position.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.persistence import IntegrityError as PersistenceIntegrityError
from eventsourcing.persistence import InterfaceError as PersistenceInterfaceError
from eventsourcing.persistence import OperationalError as PersistenceOperationalError
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from agent_engine.contracts.envelope import Envelope, caused_by, derive_id
from agent_engine.contracts.events import TaskAdmitted, TenantAdmitted
from agent_engine.contracts.subjects import ROUTER_RPC, heartbeat_subject, rpc_subject, type_subject
from agent_engine.router import views
from agent_engine.router.admission import TENANT_KEY, Limits, TenantState, admit, evolve_tenant, release
from agent_engine.router.core import BUS_INPUTS, SOURCE, InvalidInput, Resolved, RouterInput, apply, starts_task
from agent_engine.router.deadlines import DeadlineIndex
from agent_engine.router.relay import Relay
from agent_engine.router.state import TaskState
from agent_engine.router.store import TaskStore
from agent_engine.runtime import inbox, workflows
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.inbox import describe, read_all, refuse, settle
from agent_engine.runtime.queries import read_query
from agent_engine.runtime.settings import Settings

log = logging.getLogger("router")
DURABLE = "router"


SAVE_CHUNK_BYTES = 2 * 1024 * 1024
"""psycopg's pipeline (used by the store) deadlocks on a transaction of about 6 MB; stay well below."""
STORE_TRANSIENT = (PersistenceOperationalError, PersistenceInterfaceError, OSError)
"""The event store's outages, besides the runtime's list (OSError: a socket error the driver passes on raw)."""


def transient(exc: BaseException) -> bool:
    """An outage: retrying later will succeed, so the input must not count towards dead-lettering.
    A write conflict (IntegrityError) is not here: it goes through the one-by-one path, where a
    genuine race heals on the next try and a deterministic one is dead-lettered after N tries."""
    return inbox.transient(exc, STORE_TRANSIENT)


def _chunks(pending: dict[str, tuple[int, list[Envelope]]]) -> list[dict[str, tuple[int, list[Envelope]]]]:
    """Split a batch into transactions under SAVE_CHUNK_BYTES; a task's records are never split, and a
    batch that writes a tenant's admission log is never split (the log and its tasks commit together)."""
    if len(pending) <= 1 or any(key.startswith(TENANT_KEY) for key in pending):
        return [pending] if pending else []
    chunks: list[dict[str, tuple[int, list[Envelope]]]] = [{}]
    size = 0
    for task_id, entry in pending.items():
        task_size = sum(len(r.model_dump_json()) for r in entry[1])
        if chunks[-1] and size + task_size > SAVE_CHUNK_BYTES:
            chunks.append({})
            size = 0
        chunks[-1][task_id] = entry
        size += task_size
    return chunks


class Router:
    def __init__(self, bus: Bus, store: TaskStore, kv: KeyValue, settings: Settings) -> None:
        self.bus = bus
        self.store = store
        self.kv = kv
        self.settings = settings
        self.cache: dict[str, TaskState] = {}
        self.tenants: dict[str, TenantState] = {}
        """Admission logs by tenant, as last saved (only kept where limits apply)."""
        self.limits = Limits.from_env()
        self.deadlines = DeadlineIndex()
        self.read_through: datetime | None = None
        """Stream time of the newest input read: every input stored before it has been read."""
        self.lock = asyncio.Lock()
        self.relay = Relay(bus, store, "relay" if settings.router_name == "router" else f"relay:{settings.router_name}",
                           observe=self.deadlines.observe)
        self.inputs_applied = 0
        """Inputs that changed a task: with several routers, each one's share shows in its log at stop."""
        self.grace_until = datetime.now(UTC)
        self.backlog: int | None = None
        """Messages waiting behind the last one fetched; deadlines wait until results are not queued."""

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self._rebuild_deadlines)
        await self.bus.nc.subscribe(rpc_subject(ROUTER_RPC, ">"), cb=self._rpc)
        await self.bus.nc.subscribe(heartbeat_subject(), cb=self._heartbeat)
        self.grace_until = datetime.now(UTC) + timedelta(seconds=2 * self.settings.heartbeat_s)
        subjects = [type_subject(t) for t in BUS_INPUTS]
        loops = [
            self.bus.consume(DURABLE, subjects, self._handle_batch, batch=self.settings.batch_size,
                             ack_wait=self.settings.ack_wait_s, stop=stop, on_idle=self._caught_up),
            self.relay.run(stop),
            self._watch_deadlines(stop),
        ]
        try:
            await asyncio.gather(*loops)
        finally:
            log.info("router %s stopping: applied %d inputs", self.settings.router_name, self.inputs_applied)

    def _caught_up(self) -> None:
        self.backlog = 0

    # --- inputs -------------------------------------------------------------------------------

    async def _handle_batch(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            if msg.metadata is not None:
                self.backlog = msg.metadata.num_pending
                stamp = msg.metadata.timestamp
                if stamp is not None and (self.read_through is None or stamp > self.read_through):
                    self.read_through = stamp
        inputs = await read_all(self.bus, msgs)
        if not inputs:
            return
        try:
            inputs = [i for i in inputs if await self._admissible(*i)]
            refused = await self._apply([env for _, env in inputs])
        except Exception as exc:  # noqa: BLE001  sorted below: outage (retry) or a write conflict (isolate)
            if transient(exc):
                log.warning("store or bus unavailable (%s); %d input(s) will be redelivered", exc, len(inputs))
                await asyncio.gather(*(msg.nak(delay=1.0) for msg, _ in inputs), return_exceptions=True)
                return
            log.warning("batch of %d failed (%s); retrying one by one", len(inputs), exc)
            for msg, env in inputs:
                await self._apply_one(msg, env)
            return
        await asyncio.gather(*(self._settle(msg, refused.get(env.id)) for msg, env in inputs))

    async def _apply_one(self, msg: Msg, env: Envelope) -> None:
        """Isolate a failing batch: an outage is redelivered, a write conflict retried (dead-lettered
        after N tries), anything else dead-lettered at once."""
        try:
            refused = await self._apply([env])
        except Exception as exc:
            if transient(exc):
                await msg.nak(delay=1.0)
                return
            log.exception("input %s (%s) failed", env.id, env.type)
            await settle(self.bus, msg, exc, max_deliver=self.settings.max_deliver,
                         extra_transient=(PersistenceIntegrityError,))
            return
        await self._settle(msg, refused.get(env.id))

    async def _settle(self, msg: Msg, refused: str | None) -> None:
        if refused is None:
            await msg.ack()
        else:
            await refuse(self.bus, msg, refused)

    async def _admissible(self, msg: Msg, env: Envelope) -> bool:
        problem = await self._problem(env)
        if problem:
            await refuse(self.bus, msg, problem)
        return not problem

    async def _problem(self, env: Envelope) -> str:
        """Why the input may not touch the task it names ("" when it may): a reserved id, no such task of
        its tenant, or a subtask its parent never asked for. The answer never tells whether another
        tenant has a task of that id."""
        if env.task_id.startswith(TENANT_KEY):
            return f"task id '{env.task_id}' uses the reserved prefix '{TENANT_KEY}'"
        if env.type not in BUS_INPUTS:
            return f"the router does not take {env.type} from the stream"
        state = await self._state(env.task_id)
        if state.status == "reserved":
            return f"task id '{env.task_id}' names a tenant's admission log, not a task"
        if state.tenant and state.tenant != env.tenant:
            return f"no task {env.task_id} of tenant '{env.tenant}'"
        if state.status != "new":
            return ""
        if not starts_task(env):
            fresh = await self._fresh(env.task_id)  # another router may have started it since this one cached it
            if fresh.status == "new":
                return f"no task {env.task_id} of tenant '{env.tenant}'"
            return "" if fresh.tenant == env.tenant else f"no task {env.task_id} of tenant '{env.tenant}'"
        return await self._lineage_problem(env)

    async def _lineage_problem(self, env: Envelope) -> str:
        """A subtask may only be started (or stopped before it starts) by the parent whose SPLIT made it."""
        if env.type == "subtask.requested":
            lineage = env.data.get("lineage")
            parent_id = lineage.get("parent_id") if isinstance(lineage, dict) else None
        elif env.type == "task.cancel_requested":
            parent_id = env.data.get("parent_id")
        else:
            return ""
        if not isinstance(parent_id, str) or not parent_id or parent_id.startswith(TENANT_KEY):
            return ""  # decide refuses a payload that is not valid
        parent = await self._state(parent_id)
        if not _made(parent, env):
            parent = await self._fresh(parent_id)
        if _made(parent, env):
            return ""
        return f"{env.type} for task {env.task_id} names parent task {parent_id}, which has no such subtask"

    async def _fresh(self, task_id: str) -> TaskState:
        state = await asyncio.to_thread(self.store.load, task_id)
        if state.status != "new":
            self.cache[task_id] = state
            self.deadlines.sync(state)
        return state

    async def _apply(self, events: list[Envelope]) -> dict[str, str]:
        """Decide for every input, then commit their records: one transaction per batch (split only
        when it would exceed SAVE_CHUNK_BYTES; a task's records always share one transaction).
        Returns the inputs refused, by event id, with the reason: decide found them invalid, and
        nothing of theirs is saved."""
        async with self.lock:
            pending: dict[str, tuple[int, list[Envelope]]] = {}
            states: dict[str, TaskState] = {}
            tenants: dict[str, TenantState] = {}
            refused: dict[str, str] = {}
            for event in events:
                saved = ({k: v for k, v in pending.items() if k.startswith(TENANT_KEY) or k == event.task_id},
                         dict(states), dict(tenants))
                try:
                    await self._decide(event, pending, states, tenants)
                except Exception as exc:
                    if transient(exc):
                        raise
                    why = str(exc) if isinstance(exc, InvalidInput) else describe(exc)
                    log.warning("refused input %s (%s) of task %s: %s", event.id, event.type, event.task_id, why)
                    refused[event.id] = why[:1000]
                    for key in [k for k in pending if k.startswith(TENANT_KEY) or k == event.task_id]:
                        del pending[key]
                    pending.update(saved[0])
                    states, tenants = saved[1], saved[2]
            pending = {t: p for t, p in pending.items() if p[1]}
            for chunk in _chunks(pending):
                try:
                    committed = await asyncio.to_thread(self.store.save, chunk)
                except Exception:
                    for task_id in pending:  # reload from the store, which may hold the records after all
                        self.cache.pop(task_id, None)
                    self.tenants.clear()
                    self.relay.resync()
                    raise
                self.relay.offer(committed)
                for task_id, (_, records) in chunk.items():
                    if task_id.startswith(TENANT_KEY):
                        self.tenants[task_id[len(TENANT_KEY):]] = tenants[task_id[len(TENANT_KEY):]]
                        continue
                    self.cache[task_id] = states[task_id]
                    for record in records:
                        self.deadlines.observe(record)
                    if any(r.type == "task.forked" for r in records):  # timers copied with the history
                        self.deadlines.sync(states[task_id])
            return refused

    async def _decide(self, event: Envelope, pending: dict[str, tuple[int, list[Envelope]]],
                      states: dict[str, TaskState], tenants: dict[str, TenantState]) -> None:
        """Decide one input of a batch on the state the batch has reached; its records join `pending`."""
        # a state served from the cache (not read from the store in this batch) may be stale
        cached = event.task_id not in states and event.task_id in self.cache
        state = states.get(event.task_id) or await self._state(event.task_id)
        base = pending.get(event.task_id, (state.version, []))
        inp = await self._resolve(event, state)
        if inp.workflow is not None and state.status == "new" and event.id not in state.applied:
            inp = await self._admit(inp, tenants, pending)
        after, records = apply(state, inp)
        if not records and not base[1] and cached:
            # a no-op on a cached state may only mean the cache is stale (another router moved
            # the task on): decide again on what the store holds before dropping the input
            fresh = await asyncio.to_thread(self.store.load, event.task_id)
            if fresh.version != state.version:
                self.cache[event.task_id] = fresh
                self.deadlines.sync(fresh)
                base = (fresh.version, [])
                after, records = apply(fresh, await self._resolve(event, fresh))
        states[event.task_id] = after
        pending[event.task_id] = (base[0], base[1] + records)
        self.inputs_applied += bool(records)
        if (after.terminal and not state.terminal and state.status != "new") or (
                after.status in ("cancelled", "rejected") and state.status in ("new", "queued")):
            await self._release(event, after.status, tenants, pending)

    # --- scheduling ----------------------------------------------------------------------------

    def _limits(self, tenant: str) -> Limits:
        return self.limits.get(tenant, self.limits[""])

    async def _tenant(self, tenant: str, tenants: dict[str, TenantState]) -> TenantState:
        if tenant not in tenants:
            cached = self.tenants.get(tenant)
            if cached is None:
                cached = self.tenants[tenant] = await asyncio.to_thread(self.store.load_tenant, tenant)
            tenants[tenant] = cached
        return tenants[tenant]

    def _log(self, tenant: str, tenants: dict[str, TenantState], pending: dict[str, tuple[int, list[Envelope]]],
             cause: Envelope, task_id: str, data: Any) -> Envelope:
        """Append one record to the tenant's admission log (saved with the batch)."""
        key = TENANT_KEY + tenant
        state = tenants[tenant]
        base = pending.get(key, (state.version, []))
        record = caused_by(cause, data, id=derive_id(cause.id, "admission", len(base[1])), source=SOURCE,
                           time=cause.time, tenant=tenant, task_id=task_id)
        pending[key] = (base[0], [*base[1], record])
        if record.type.startswith("tenant."):
            tenants[tenant] = evolve_tenant(state, record)
        else:
            tenants[tenant] = replace(state, version=state.version + 1)
        return record

    async def _admit(self, inp: RouterInput, tenants: dict[str, TenantState],
                     pending: dict[str, tuple[int, list[Envelope]]]) -> RouterInput:
        event = inp.event
        limits = self._limits(event.tenant)
        if limits.max_running <= 0:
            return inp
        state = await self._tenant(event.tenant, tenants)
        if event.task_id in state.running or any(q[2] == event.task_id for q in state.queued):
            return inp  # decided before (a redelivery after a failed save): the task records will say so
        priority = int(event.data.get("priority", 0) or 0)
        admission, data = admit(state, limits, event.tenant, event.task_id, priority)
        if data is not None:
            self._log(event.tenant, tenants, pending, event, event.task_id, data)
        return replace(inp, admission=admission)

    async def _release(self, event: Envelope, status: str, tenants: dict[str, TenantState],
                       pending: dict[str, tuple[int, list[Envelope]]]) -> None:
        state = await self._tenant(event.tenant, tenants)  # read once per tenant, then kept
        if not state.running and not state.queued:
            return  # a tenant without limits, now or before
        for task_id, data in release(state, self._limits(event.tenant), event.task_id, status):
            self._log(event.tenant, tenants, pending, event, task_id, data)
            if isinstance(data, TenantAdmitted):  # tell the queued task it may start
                self._log(event.tenant, tenants, pending, event, task_id,
                          TaskAdmitted(reason=f"a running task of tenant '{event.tenant}' ended"))

    async def _state(self, task_id: str) -> TaskState:
        cached = self.cache.get(task_id)
        if cached is not None:
            return cached
        state = await asyncio.to_thread(self.store.load, task_id)
        newer = self.cache.get(task_id)  # saved by another coroutine while this one was loading
        if newer is not None and newer.version >= state.version:
            return newer
        if len(self.cache) > 10_000:
            self.cache.clear()
        self.cache[task_id] = state
        self.deadlines.sync(state)
        return state

    async def _resolve(self, event: Envelope, state: TaskState) -> RouterInput:
        """Look up what a new task needs from outside (the workflow revision it pins, or the history a
        fork copies); the lookup result is recorded with the input."""
        if event.type == "task.fork_requested" and state.status == "new":
            source_id = event.data.get("source_task_id")
            records = []
            if isinstance(source_id, str) and source_id and not source_id.startswith(TENANT_KEY):
                records = await asyncio.to_thread(self.store.records, source_id)
            if records and records[0].tenant != event.tenant:
                records = []  # another tenant's task is no task at all to this one: nothing of it is read on
            return RouterInput(event, source=tuple(records))
        if event.type != "task.accepted" or state.status != "new":
            return RouterInput(event)
        found = await workflows.current(self.kv, event.tenant, str(event.data.get("workflow", "")))
        if found is None:
            return RouterInput(event)
        revision, manifest = found
        return RouterInput(event, Resolved(revision, manifest.with_tool_interfaces()))

    # --- deadlines ----------------------------------------------------------------------------

    def _rebuild_deadlines(self) -> None:
        count = 0
        for record in self.store.all_records():
            self.deadlines.observe(record)
            count += 1
        log.info("scanned %d records; %d open dispatches", count, len(self.deadlines.open))

    async def _heartbeat(self, msg: Msg) -> None:
        try:
            beat = json.loads(msg.data)
            self.deadlines.heartbeat(str(beat["task_id"]), str(beat["node"]), str(beat["dispatch_id"]),
                                     datetime.now(UTC))
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed heartbeat on %s", msg.subject)

    async def _watch_deadlines(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.5)
            now = datetime.now(UTC)
            if now < self.grace_until:
                continue  # after a start, give running calls one heartbeat to say they are alive
            due = self.deadlines.expired(now, caught_up=self.backlog == 0, read_through=self.read_through)
            for event in due:  # one at a time: a task that cannot be saved must not hold up the others
                try:
                    refused = await self._apply([event])
                except Exception:
                    log.exception("deadline of task %s node %s failed; will retry", event.task_id, event.data["node"])
                    continue
                if refused:  # the task cannot take it (a bug, or a forged record): stop firing it
                    log.error("deadline of task %s node %s refused: %s", event.task_id, event.data["node"],
                              refused[event.id])
                    self.deadlines.open.pop((event.task_id, event.data["node"]), None)
                state = self.cache.get(event.task_id)  # an entry the state no longer has was stale: drop it
                if state is not None:
                    self.deadlines.sync(state)
            if due:
                log.info("deadline passed for %d dispatch(es)", len(due))

    # --- queries ------------------------------------------------------------------------------

    async def _rpc(self, msg: Msg) -> None:
        try:
            reply = await self._query(msg.subject.removeprefix(ROUTER_RPC + "."), msg.data)
        except Exception as exc:
            if not transient(exc):
                log.exception("query on %s failed", msg.subject)
            reply = {"error": f"the router could not answer: {type(exc).__name__}: {exc}"}
        body = json.dumps(reply, default=str).encode()
        if len(body) > self.bus.nc.max_payload:
            limit = self.bus.nc.max_payload / 1048576
            body = json.dumps({"error": f"the answer is {len(body) / 1048576:.1f} MiB, over the {limit:.1f} MiB "
                                        "a NATS message may carry"}).encode()
        if not msg.reply:
            return  # published, not asked: nobody waits for an answer
        try:
            await msg.respond(body)
        except Exception as exc:  # noqa: BLE001  the asker has gone, or the bus: nothing to do
            log.warning("could not answer the query on %s: %s", msg.subject, exc)

    async def _query(self, action: str, raw: bytes) -> dict[str, Any]:
        """Answer one query; a task outside the asker's tenant (when it names one) is no task at all."""
        request, problem = read_query(raw, task_required=True)
        if problem:
            return {"error": problem}
        task_id, tenant = request["task_id"], request.get("tenant")
        if action not in ("task.show", "task.history", "task.replay"):
            return {"error": f"unknown router query '{action}'; known: task.show, task.history, task.replay"}
        records = await asyncio.to_thread(self.store.records, task_id)
        if not records or (tenant is not None and records[0].tenant != tenant):
            scope = f" for tenant '{tenant}'" if tenant else ""
            return {"error": f"no task '{task_id}' in the router's store{scope}"}
        if action == "task.show":
            return views.show(records)
        if action == "task.history":
            return {"events": [r.model_dump(mode="json") for r in records]}
        return views.replay_report(records)


def _made(parent: TaskState, env: Envelope) -> bool:
    """The parent (of the same tenant) fanned out the task the input names."""
    return parent.tenant == env.tenant and any(env.task_id in f.subtasks for f in parent.fanouts.values())
