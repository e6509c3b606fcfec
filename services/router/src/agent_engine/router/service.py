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
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from pydantic import ValidationError

from agent_engine.contracts.envelope import Envelope, derive_id
from agent_engine.contracts.events import NodeDeadlineExpired
from agent_engine.contracts.subjects import ROUTER_RPC, type_subject
from agent_engine.router import views
from agent_engine.router.core import INPUT_RECORD, INPUT_TYPES, SOURCE, Resolved, RouterInput, apply
from agent_engine.router.state import TaskState
from agent_engine.router.store import TaskStore
from agent_engine.runtime import workflows
from agent_engine.runtime.bus import Bus, settle
from agent_engine.runtime.settings import Settings

log = logging.getLogger("router")
RELAY = "relay"
DURABLE = "router"


class DeadlineIndex:
    """Open dispatches and their deadlines, kept from the records this router commits."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str], tuple[str, int, datetime, Envelope]] = {}

    def observe(self, record: Envelope) -> None:
        data = record.data
        if record.type == "node.dispatched":
            deadline = datetime.fromisoformat(data["deadline"])
            self.open[(record.task_id, data["node"])] = (data["dispatch_id"], data["attempt"], deadline, record)
        elif record.type in ("node.succeeded", "node.failed"):
            self.open.pop((record.task_id, data["node"]), None)
        elif record.type in ("task.succeeded", "task.failed", "task.rejected"):
            for key in [k for k in self.open if k[0] == record.task_id]:
                del self.open[key]

    def expired(self, now: datetime) -> list[Envelope]:
        """Deadline inputs for every overdue dispatch; ids derive from the dispatch, so repeats dedupe."""
        due = []
        for (task_id, node), (dispatch_id, attempt, deadline, record) in self.open.items():
            if deadline <= now:
                due.append(Envelope(
                    id=derive_id(dispatch_id, "deadline"), source=SOURCE, type=NodeDeadlineExpired.TYPE,
                    time=now, tenant=record.tenant, task_id=task_id, correlation_id=record.correlation_id,
                    causation_id=record.id,
                    data=NodeDeadlineExpired(dispatch_id=dispatch_id, node=node, attempt=attempt).model_dump(),
                ))
        return due


class Router:
    def __init__(self, bus: Bus, store: TaskStore, kv: KeyValue, settings: Settings) -> None:
        self.bus = bus
        self.store = store
        self.kv = kv
        self.settings = settings
        self.cache: dict[str, TaskState] = {}
        self.deadlines = DeadlineIndex()
        self.lock = asyncio.Lock()
        self.committed = asyncio.Event()
        self.handoff: deque[tuple[int, Envelope]] = deque()
        """Records just committed, with their notification ids, so the relay need not read them back."""

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self._rebuild_deadlines)
        await self.bus.nc.subscribe(f"{ROUTER_RPC}.>", cb=self._rpc)
        subjects = [type_subject(t) for t in INPUT_TYPES if t != "node.deadline_expired"]
        loops = [
            self.bus.consume(DURABLE, subjects, self._handle_batch, batch=self.settings.batch_size,
                             ack_wait=self.settings.ack_wait_s, stop=stop),
            self._relay(stop),
            self._watch_deadlines(stop),
        ]
        await asyncio.gather(*loops)

    # --- inputs -------------------------------------------------------------------------------

    async def _handle_batch(self, msgs: list[Msg]) -> None:
        inputs: list[tuple[Msg, Envelope]] = []
        for msg in msgs:
            try:
                inputs.append((msg, Envelope.from_bytes(msg.data)))
            except ValidationError as exc:
                await self.bus.dead_letter(msg, f"not a valid event envelope: {exc.errors()[:3]}")
                await msg.ack()
        if not inputs:
            return
        try:
            await self._apply([env for _, env in inputs])
        except Exception as exc:  # noqa: BLE001  isolate the bad input: retry one by one
            log.warning("batch of %d failed (%s); retrying one by one", len(inputs), exc)
            for msg, env in inputs:
                try:
                    await self._apply([env])
                    error = None
                except Exception as one:
                    log.exception("input %s (%s) failed", env.id, env.type)
                    error = f"{type(one).__name__}: {one}"
                await settle(self.bus, msg, error, max_deliver=self.settings.max_deliver)
            return
        await asyncio.gather(*(msg.ack() for msg, _ in inputs))

    async def _apply(self, events: list[Envelope]) -> None:
        """Decide for every input, then commit all their records in one transaction."""
        async with self.lock:
            pending: dict[str, tuple[int, list[Envelope]]] = {}
            states: dict[str, TaskState] = {}
            for event in events:
                state = states.get(event.task_id) or await self._state(event.task_id)
                base = pending.get(event.task_id, (state.version, []))
                state, records = apply(state, await self._resolve(event, state))
                states[event.task_id] = state
                pending[event.task_id] = (base[0], base[1] + records)
            pending = {t: p for t, p in pending.items() if p[1]}
            if not pending:
                return
            try:
                committed = await asyncio.to_thread(self.store.save, pending)
            except Exception:
                for task_id in pending:
                    self.cache.pop(task_id, None)
                raise
            self.handoff.extend(committed)
            for task_id, (_, records) in pending.items():
                self.cache[task_id] = states[task_id]
                for record in records:
                    self.deadlines.observe(record)
            self.committed.set()

    async def _state(self, task_id: str) -> TaskState:
        cached = self.cache.get(task_id)
        if cached is not None:
            return cached
        state = await asyncio.to_thread(self.store.load, task_id)
        if len(self.cache) > 10_000:
            self.cache.clear()
        self.cache[task_id] = state
        return state

    async def _resolve(self, event: Envelope, state: TaskState) -> RouterInput:
        """Look up the workflow revision a new task pins; the lookup result is recorded with the input."""
        if event.type != "task.accepted" or state.status != "new":
            return RouterInput(event)
        found = await workflows.current(self.kv, event.tenant, str(event.data.get("workflow", "")))
        return RouterInput(event, Resolved(*found) if found else None)

    # --- deadlines ----------------------------------------------------------------------------

    def _rebuild_deadlines(self) -> None:
        count = 0
        for record in self.store.all_records():
            self.deadlines.observe(record)
            count += 1
        log.info("scanned %d records; %d open dispatches", count, len(self.deadlines.open))

    async def _watch_deadlines(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.5)
            due = self.deadlines.expired(datetime.now(UTC))
            if due:
                try:
                    await self._apply(due)
                    log.info("re-dispatched %d node(s) after their deadline", len(due))
                except Exception:
                    log.exception("deadline handling failed; will retry")

    # --- relay --------------------------------------------------------------------------------

    async def _relay(self, stop: asyncio.Event) -> None:
        """Publish committed records in commit order from the store's notification log.

        Records this process just committed come through `handoff` with their notification ids, so
        the steady state needs no read-back; the log is read at start, on gaps and after errors.
        The position is saved at most every 0.2 s: a crash republishes at most that much, which
        JetStream's duplicate window (and every consumer's idempotency) absorbs.
        """
        position = saved = await asyncio.to_thread(self.store.relay_position, RELAY)
        caught_up = False
        last_save = time.monotonic()
        while not stop.is_set():
            try:
                page = self._from_handoff(position) if caught_up else None
                if page is None:
                    page = await asyncio.to_thread(self.store.notifications, position, 256)
                    caught_up = not page
                if page:
                    await self.bus.publish_many([r for _, r in page if r.type != INPUT_RECORD])
                    position = page[-1][0]
                if position != saved and (not page or time.monotonic() - last_save > 0.2):
                    await asyncio.to_thread(self.store.set_relay_position, RELAY, position)
                    saved, last_save = position, time.monotonic()
                if not page:
                    self.committed.clear()
                    if not self.handoff:
                        try:
                            await asyncio.wait_for(self.committed.wait(), timeout=0.25)
                        except TimeoutError:
                            pass
            except Exception:
                log.exception("relay failed at position %d; retrying", position)
                caught_up = False
                await asyncio.sleep(1.0)

    def _from_handoff(self, position: int) -> list[tuple[int, Envelope]] | None:
        """The handed-off records right after `position`; None when there is a gap to read from the log."""
        while self.handoff and self.handoff[0][0] <= position:
            self.handoff.popleft()
        if not self.handoff:
            return []
        if self.handoff[0][0] != position + 1:
            return None
        page: list[tuple[int, Envelope]] = []
        expected = position + 1
        while self.handoff and len(page) < 256 and self.handoff[0][0] == expected:
            page.append(self.handoff.popleft())
            expected += 1
        return page

    # --- queries ------------------------------------------------------------------------------

    async def _rpc(self, msg: Msg) -> None:
        try:
            request: dict[str, Any] = json.loads(msg.data or b"{}")
            action = msg.subject.removeprefix(ROUTER_RPC + ".")
            task_id = str(request.get("task_id", ""))
            records = await asyncio.to_thread(self.store.records, task_id)
            if not records:
                reply: dict[str, Any] = {"error": f"no task '{task_id}' in the router's store"}
            elif action == "task.show":
                reply = views.show(records)
            elif action == "task.history":
                reply = {"events": [r.model_dump(mode="json") for r in records]}
            else:
                reply = {"error": f"unknown router query '{action}'"}
        except Exception as exc:
            log.exception("query failed")
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        await msg.respond(json.dumps(reply, default=str).encode())
