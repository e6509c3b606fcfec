"""The router's I/O shell: consume inputs in batches, decide, commit once per batch, ack, relay.

Order of effects for every batch: decide (pure) -> one store transaction -> ack the inputs.
Publishing happens only from the relay, which reads what is committed, so a crash anywhere loses
nothing: an un-acked input is redelivered and absorbed by `decide`; an unpublished record is
published when the relay resumes from its durable position.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from agent_engine.contracts import pricing
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.contracts.pricing import PriceTable
from agent_engine.contracts.subjects import COMMAND_SENDERS, ROUTER_RPC, heartbeat_subject, partition_of, rpc_listen
from agent_engine.router import audit, erasure, queries, traces
from agent_engine.router.admission import TENANT_KEY, Limits
from agent_engine.router.approvals import asked_once
from agent_engine.router.batch import Batch
from agent_engine.router.buckets import ArtifactBuckets
from agent_engine.router.budgets import DayLimits, is_day_key, manifest_models
from agent_engine.router.core import BUS_INPUTS, Resolved, RouterInput
from agent_engine.router.datakeys import KeyDestroyed
from agent_engine.router.day_budgets import DayBudgets
from agent_engine.router.deadlines import DeadlineIndex
from agent_engine.router.follower import Follower
from agent_engine.router.idempotency import DEFAULT_WINDOW_S, is_key_aggregate
from agent_engine.router.intake import Intake
from agent_engine.router.keys import IdempotencyKeys
from agent_engine.router.lru import Lru
from agent_engine.router.outputchecks import checked
from agent_engine.router.partitions import Ownership
from agent_engine.router.refusals import decided, refusal
from agent_engine.router.relay import Relay
from agent_engine.router.state import TaskState
from agent_engine.router.store import STORE_TRANSIENT, TaskStore
from agent_engine.router.tasks import TaskCache
from agent_engine.router.tenants import AdmissionLogs
from agent_engine.router.timers import Progress, Timers
from agent_engine.runtime import inbox, mcp_catalogue, tracing, workflows
from agent_engine.runtime.artifacts import ArtifactStore
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.inbox import Refused, describe, read_all, refuse, settle
from agent_engine.runtime.queries import answer_query
from agent_engine.runtime.settings import Settings

if TYPE_CHECKING:  # the SDK comes with agent-engine-runtime; the router names its span type only
    from opentelemetry.trace import Span

log = logging.getLogger("router")
MANIFESTS_CACHED = 256


def transient(exc: BaseException) -> bool:
    """An outage: retrying later will succeed, so the input must not count towards dead-lettering.
    A write conflict (IntegrityError) is not here: it goes through the one-by-one path, where a
    genuine race heals on the next try and a deterministic one is dead-lettered after N tries."""
    return inbox.transient(exc, STORE_TRANSIENT)


class Router:
    def __init__(self, bus: Bus, store: TaskStore, kv: KeyValue, settings: Settings,
                 limits: dict[str, Limits], idempotency_window_s: float = DEFAULT_WINDOW_S,
                 day_limits: dict[str, DayLimits] | None = None, output_checks: frozenset[str] = frozenset()) -> None:
        self.bus = bus
        self.output_checks = output_checks
        """Tenants every task of which has its outputs checked (AE_OUTPUT_CHECKS; outputchecks.py)."""
        self.store = store
        self.kv = kv
        self.mcp_tools: KeyValue | None = None
        """The MCP catalogue bucket, opened when a workflow first names an MCP tool."""
        self.settings = settings
        self.deadlines = DeadlineIndex()
        self.tasks = TaskCache(store, self.deadlines)
        self.admission = AdmissionLogs(store, limits)
        self.keys = IdempotencyKeys(store, idempotency_window_s)
        self.days = DayBudgets(store, day_limits or {})
        self.progress = Progress()
        self.lock = asyncio.Lock()
        relay_name = "relay" if settings.router_name == "router" else f"relay:{settings.router_name}"
        self.forks = traces.ForkTraces()
        self.ownership = Ownership(settings.postgres_url)
        self.relay = Relay(bus, store, relay_name, observe=self.deadlines.observe, under=self.forks.under,
                           member=lambda: self.ownership.member)
        self.follower = Follower(store, self.relay, self.deadlines.observe)
        self.requests: dict[str, Span] = {}
        """The spans of the clients' requests being decided, by event id: linked to their task once decided."""
        self.buckets = ArtifactBuckets(ArtifactStore(bus.js))
        self.timers = Timers(self.deadlines, self.tasks, self.apply, self.progress, settings.heartbeat_s,
                             settings.router_name, read_through=lambda: self.follower.position,
                             owns=lambda task_id: self.ownership.owns(partition_of(task_id)))
        self.intake = Intake(bus, self._handle_batch, BUS_INPUTS, batch=settings.batch_size,
                             ack_wait=settings.ack_wait_s, progress=self.progress, ownership=self.ownership,
                             on_taken=self._taken)
        self.manifests: Lru[bytes, Resolved] = Lru(MANIFESTS_CACHED)
        """Workflow revisions as parsed, by the registry entry they were parsed from."""
        self.inputs_applied = 0
        """Inputs that changed a task: with several routers, each one's share shows in its log at stop."""

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop`, then drain in order: stop taking inputs and firing deadlines, commit the batch in
        hand, publish everything committed (the outbox), write the last audit checkpoint."""
        # /readyz says `starting` until consuming; the follower reads the other routers' records from where the
        # rebuild read to
        self.follower.position = await asyncio.to_thread(self.timers.rebuild, self.store)
        for subject in rpc_listen(ROUTER_RPC):
            await self.bus.nc.subscribe(subject, cb=self._query)
        await self.bus.nc.subscribe(erasure.FORGET, queue="router-forget", cb=self._forget)
        await self.bus.nc.subscribe(heartbeat_subject(), cb=self.timers.heartbeat)
        intake_done, published = asyncio.Event(), asyncio.Event()
        """Set once no input can be committed any more (only then may the relay make its last pass), and once the
        relay has published what this router committed (then the last checkpoint covers it all)."""

        async def relay() -> None:
            try:
                await self.relay.run(intake_done)
            finally:
                published.set()

        relaying = asyncio.create_task(relay())
        outbox = [relaying, asyncio.create_task(self.follower.run(intake_done)),
                  asyncio.create_task(audit.checkpoints(self.bus.js, self.store.app.recorder,
                                                                  self.settings.router_name, published))]
        intake: asyncio.Future[Any] = asyncio.gather(self.intake.run(stop), self.timers.run(stop))
        try:
            await asyncio.wait([intake, relaying], return_when=asyncio.FIRST_COMPLETED)
            if not intake.done():  # the relay ended while inputs were still being committed: nothing would go out
                intake.cancel()
                raise RuntimeError("the router's relay stopped while it was taking inputs; exiting so that it is "
                                   "restarted") from (None if relaying.cancelled() else relaying.exception())
            await intake
            async with self.lock:  # a query or erasure may be mid-apply
                intake_done.set()
            await asyncio.gather(*outbox)
            await self.timers.checkpoint(self.store)  # what is open, as of everything published: a quick next start
        finally:
            intake_done.set()
            for task in outbox:
                task.cancel()
            log.info("router %s stopping: applied %d inputs", self.settings.router_name, self.inputs_applied)

    async def _query(self, msg: Msg) -> None:
        if msg.subject == erasure.FORGET:
            return  # one router (the queue group's) answers it, in _forget
        if msg.subject == erasure.FORGOTTEN:
            self._forgotten(msg.data)
            return
        await queries.serve(msg, self.store.records, self.bus.nc.max_payload, transient)

    # --- erasure ------------------------------------------------------------------------------

    async def _forget(self, msg: Msg) -> None:
        reply = await erasure.serve_forget(msg.data, self.store.keyring, self.settings.postgres_url,
                                           self.bus.nc.publish)
        await answer_query(msg, reply, self.bus.nc.max_payload, None)

    def _forgotten(self, raw: bytes) -> None:
        """Another router (or this one) destroyed keys: drop what this process holds of the tenant."""
        note = erasure.forgotten_note(raw)
        if note is None:
            log.warning("ignored a malformed tenant.forgotten note")
            return
        tenant, erased = note
        for task_id, state in list(self.tasks.states.items()):
            if state.tenant == tenant and (erased is None or task_id in erased):
                self.tasks.drop(task_id)
                self.deadlines.drop(task_id)
        for key, entry in list(self.deadlines.open.items()):
            if entry.tenant == tenant and (erased is None or key[0] in erased):
                self.deadlines.open.pop(key, None)
        self.admission.saved.pop(tenant, None)
        self.days.forget()
        self.store.keyring.forget_cached(tenant)
        self.buckets.forget(tenant)
        self.relay.resync()

    # --- inputs -------------------------------------------------------------------------------

    def _taken(self, partitions: frozenset[int]) -> None:
        """Partitions just taken: what this router cached of their tasks may be stale (another owner moved
        them on), so it is read again from the store when next needed."""
        for task_id in [t for t in self.tasks.states if partition_of(t) in partitions]:
            self.tasks.drop(task_id)

    async def _handle_batch(self, msgs: list[Msg]) -> None:
        # a client's request is decided in the engine's trace, not its sender's (traces.received)
        opened = [(msg, *traces.received(msg.headers, env, msg.subject))
                  for msg, env in await read_all(self.bus, msgs)]
        readable = [(msg, env) for msg, _, env in opened]
        spans = [span for _, span, _ in opened]
        requests = {env.id: span for _, span, env in opened if span is not None and env.type in COMMAND_SENDERS}
        self.requests.update(requests)
        try:
            await self._handle_inputs(readable)
        finally:
            for event_id in requests:
                self.requests.pop(event_id, None)
            for span in spans:
                if span is not None:
                    span.end()

    async def _handle_inputs(self, readable: list[tuple[Msg, Envelope]]) -> None:
        entries = await self._lookups([env for _, env in readable])
        inputs = [i for i in readable if await self._admissible(*i)]
        if not inputs:
            return
        try:
            refused = await self.apply([env for _, env in inputs], entries)
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

    async def _lookups(self, events: list[Envelope]) -> dict[tuple[str, str], bytes | None] | None:
        """At once, what the batch will need: which of its tasks are new (one query; they are cached as new) and
        the registry entries of the workflows its task requests name. Either failing leaves it to be looked up
        where it is needed (the checks, `apply`)."""
        found = await asyncio.gather(
            self.tasks.prefetch(e.task_id for e in events if not e.task_id.startswith(TENANT_KEY)),
            workflows.current_entries(self.kv, events), return_exceptions=True)
        for failed in (f for f in found if isinstance(f, BaseException)):
            if not isinstance(failed, Exception):
                raise failed  # cancelled: the router is stopping
            log.warning("could not look up what the batch needs (%s)", describe(failed))
        return None if isinstance(found[1], BaseException) else found[1]

    async def _admissible(self, msg: Msg, env: Envelope) -> bool:
        """Whether the input goes on to be decided; one that may not is dead-lettered with the reason. A
        check that fails (the store or the bus) sends the input back for redelivery, never on unchecked."""
        try:
            why = await refusal(env, self.tasks, self.admission)
            if why:
                await refuse(self.bus, msg, why)
            return not why
        except KeyDestroyed:
            await self._drop_erased(msg, env)
            return False
        except Exception as exc:  # noqa: BLE001  an outage, or an error of the check itself: try again later
            log.warning("could not check input %s (%s): %s", env.id, env.type, exc)
            await settle(self.bus, msg, exc, max_deliver=self.settings.max_deliver, extra_transient=(Exception,))
            return False

    async def _drop_erased(self, msg: Msg, env: Envelope) -> None:
        """An input for an erased task: a known, final state, acked and dropped (a dead letter would keep
        the tenant's data)."""
        log.info("dropped input %s (%s): task %s was erased", env.id, env.type, env.task_id)
        self.tasks.drop(env.task_id)
        self.deadlines.drop(env.task_id)
        await msg.ack()

    async def _apply_one(self, msg: Msg, env: Envelope) -> None:
        """Isolate a failing batch: an outage is redelivered; a write conflict or another error that is not
        the input's own is retried (dead-lettered after N tries); a refusal of decide dead-letters at once.
        The input is checked again first: the cache it was checked against may have been what failed."""
        if not await self._admissible(msg, env):
            return
        try:
            refused = await self.apply([env])
        except KeyDestroyed:  # erased while this router held the task in its cache
            await self._drop_erased(msg, env)
            return
        except Exception as exc:
            if transient(exc):
                await msg.nak(delay=1.0)
                return
            log.exception("input %s (%s) failed", env.id, env.type)
            # not the input's fault (decide refusals are answered below): a write conflict, or a store or
            # registry error no list names; tried again, and dead-lettered only after AE_MAX_DELIVER tries
            await settle(self.bus, msg, exc, max_deliver=self.settings.max_deliver, extra_transient=(Exception,))
            return
        await self._settle(msg, refused.get(env.id))

    async def _settle(self, msg: Msg, refused: str | None) -> None:
        if refused is None:
            await msg.ack()
        else:
            await refuse(self.bus, msg, refused)

    async def apply(self, events: list[Envelope],
                    entries: dict[tuple[str, str], bytes | None] | None = None) -> dict[str, str]:
        """Decide for every input, then commit their records: one transaction per batch (split only
        when it would exceed SAVE_CHUNK_BYTES; a task's records always share one transaction).
        Returns the inputs refused, by event id, with the reason: decide found them invalid, and
        nothing of theirs is saved. `entries`: the registry entries the caller has read for them already."""
        async with self.lock:
            batch = Batch()
            refused: dict[str, str] = {}
            if entries is None:
                entries = await workflows.current_entries(self.kv, events)
            for event in events:
                saved = batch.snapshot(event)
                try:
                    await self._decide(event, batch, entries)
                    span = self.requests.pop(event.id, None)  # once: a batch retried one by one decides it again
                    if span is not None:  # a client's request: its span links the trace of the task it is about
                        state = batch.states.get(event.task_id)
                        tracing.link(span, traces.request_link(event, state.trace if state is not None else None))
                except Refused as exc:
                    log.warning("refused input %s (%s) of task %s: %s", event.id, event.type, event.task_id, exc)
                    refused[event.id] = str(exc)[:1000]
                    batch.restore(saved)
            for chunk in batch.to_save():
                await self._commit(chunk, batch)
            return refused

    async def _commit(self, chunk: dict[str, tuple[int, list[Envelope]]], batch: Batch) -> None:
        self.relay.begin()
        saving = asyncio.ensure_future(asyncio.to_thread(self.store.save, chunk, batch.states, batch.encoded))
        try:
            committed = await asyncio.shield(saving)
        except BaseException as exc:  # the save may have committed all the same
            for task_id in batch.pending:  # reload from the store, which may hold the records after all
                self.tasks.drop(task_id)
            self.admission.forget()
            self.days.forget()
            if isinstance(exc, asyncio.CancelledError) and not saving.done():
                saving.add_done_callback(self.relay.settled)  # it goes on in its thread: the relay hears how it ends
            else:
                self.relay.failed()
            raise
        self.relay.offer(committed)  # published by the relay's task, after what follows here
        self.follower.committed(committed)
        if tracing.ENABLED:  # before the relay may publish them: a fork's records go out in its own trace
            for key in chunk:
                self.forks.committed(key, batch.states[key].trace if key in batch.states else None)
        for key, (_, records) in chunk.items():
            if is_day_key(key):
                self.days.committed(key, batch)
                for record in records:  # a settlement that frees room wakes the nodes waiting for it
                    self.deadlines.observe(record)
                continue
            if is_key_aggregate(key):
                continue  # read from the store again whenever needed
            if key.startswith(TENANT_KEY):
                self.admission.committed(key, batch)
                continue
            self.tasks.saved(key, batch.states[key])
            if tracing.ENABLED:
                traces.workflow_span(batch.states[key], records)
            for record in records:
                self.deadlines.observe(record)
            if any(r.type == "task.forked" for r in records):  # timers copied with the history
                self.deadlines.sync(batch.states[key])

    async def _decide(self, event: Envelope, batch: Batch,
                      entries: dict[tuple[str, str], bytes | None] | None = None) -> None:
        """Decide one input on the state the batch has reached; its records join the batch."""
        # a state served from the cache (not read from the store in this batch) may be stale
        cached = event.task_id not in batch.states and event.task_id in self.tasks
        state = batch.states.get(event.task_id) or await self.tasks.get(event.task_id)
        version = batch.pending.get(event.task_id, (state.version, []))[0]
        inp = await self._resolve(event, state, entries)
        new = event.type == "task.accepted" and state.status == "new" and event.id not in state.applied
        if new:
            inp = await self.keys.check(inp, batch)
        if new and inp.workflow is not None and inp.duplicate is None:
            inp = await self.admission.admit(inp, batch)
        inp = await self.days.rooms(inp, state, batch)
        after, records = decided(state, inp)
        if not records and event.task_id not in batch.pending and cached:
            # a no-op on a cached state may only mean the cache is stale (another router moved
            # the task on): decide again on what the store holds before dropping the input
            fresh = await self.tasks.fresh(event.task_id)
            if fresh.version != state.version:
                version = fresh.version
                again = await self.days.rooms(await self._resolve(event, fresh, entries), fresh, batch)
                after, records = decided(fresh, again)
        batch.states[event.task_id] = after
        batch.append(event.task_id, version, records)
        await self.days.mirror(records, batch)
        if new and any(r.type in ("task.started", "task.queued") for r in records):
            await self.keys.claim(event, batch)  # the key names this task now (even one that failed at once)
        self.inputs_applied += bool(records)
        if (after.terminal and not state.terminal and state.status != "new") or (
                after.status in ("cancelled", "rejected") and state.status in ("new", "queued")):
            await self.admission.release(event, after.status, batch)

    async def _resolve(self, event: Envelope, state: TaskState,
                       entries: dict[tuple[str, str], bytes | None] | None = None) -> RouterInput:
        """Look up what a new task needs from outside (the workflow revision it pins, or the history a
        fork copies); the lookup result is recorded with the input."""
        if event.type == "task.fork_requested" and state.status == "new":
            source_id = event.data.get("source_task_id")
            records = []
            if isinstance(source_id, str) and source_id and not source_id.startswith(TENANT_KEY):
                try:
                    records = await asyncio.to_thread(self.store.records, source_id)
                except KeyDestroyed:
                    records = []  # an erased task cannot be forked
            if records and records[0].tenant != event.tenant:
                records = []  # another tenant's task is no task at all to this one: nothing of it is read on
            return RouterInput(event, source=tuple(records))
        if event.type == "task.admitted" and state.status == "queued" and state.manifest is not None:
            # a queued task starts: its budget's prices
            budgeted = self.days.apply_to(event.tenant) or bool(state.queued_budget_usd)
            return RouterInput(event, prices=_prices(state.manifest, budgeted))
        if event.type != "task.accepted" or state.status != "new":
            return RouterInput(event)
        await self.buckets.ensure(event.tenant)  # before any of its outputs may need storing (buckets.py)
        wanted = workflows.requested(event)
        entry = (entries[wanted] if entries is not None and wanted in entries
                 else await workflows.current_entry(self.kv, *wanted))
        if entry is None:
            return RouterInput(event)
        resolved = self.manifests.get(entry)
        if resolved is None:  # each stored entry parsed once: every task of a revision starts from the same one
            revision, manifest = workflows.parse_entry(entry)
            resolved = self.manifests[entry] = Resolved(revision, asked_once(manifest.with_tool_interfaces()))
        refs = resolved.manifest.mcp_tools()
        withheld: tuple[str, ...] | None = None
        if refs:  # read for each new task: a tool-runner started since with other servers changes the catalogue
            self.mcp_tools = self.mcp_tools or await mcp_catalogue.bucket(self.bus.js)
            found = await mcp_catalogue.read(self.mcp_tools, refs)
            found, kept = mcp_catalogue.for_tenant(resolved.manifest, found, event.tenant)
            withheld = kept or None
            resolved = Resolved(resolved.revision, resolved.manifest.with_tool_interfaces(found))
        if self.output_checks:
            resolved = Resolved(resolved.revision, checked(resolved.manifest, event.tenant, self.output_checks))
        budgeted = self.days.apply_to(event.tenant) or bool(event.data.get("budget_usd"))  # or the request's own
        return RouterInput(event, resolved, prices=_prices(resolved.manifest, budgeted), withheld=withheld)


def _prices(manifest: WorkflowManifest, budgeted: bool) -> PriceTable | None:
    """The price rows a task of this workflow reserves its budget with (AE_PRICE_TABLE, else the bundled
    table), recorded with the input that starts it; None without a budget (the workflow's, or `budgeted`: the
    request's, or day budgets of its tenant), so nothing changes for the rest."""
    if manifest.budget is None and not budgeted:
        return None
    return pricing.active().subset(manifest_models(manifest))
