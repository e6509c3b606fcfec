"""`python -m agent_engine.telemetry`: folds every event subject into the ledger; answers ledger queries.

With AE_POSTGRES_URL (or AE_POSTGRES_URL_FILE) the ledger is a projection in PostgreSQL (projection.py): an
ordered consumer starts after the stream sequence the ledger has reached, and each batch is written with its new
sequence in one transaction. Without it the ledger is kept in memory and rebuilt from the first message at every
start, with a warning: enough for `python -m agent_engine.telemetry` on a laptop, not for a deployment.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from psycopg_pool import PoolTimeout

from agent_engine.contracts.subjects import (
    STREAM,
    STREAM_SUBJECTS,
    TELEMETRY_RPC,
    TENANT_FORGOTTEN,
    rpc_listen,
    rpc_scope,
)
from agent_engine.runtime import health, metrics, service
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.inbox import describe, read
from agent_engine.runtime.queries import answer_query, read_query
from agent_engine.runtime.settings import Settings, env_int
from agent_engine.telemetry import budgets, scores, taskindex, taskmetrics, tenantcost
from agent_engine.telemetry.ledger import Ledger, Message, call_of
from agent_engine.telemetry.projection import PgLedger
from agent_engine.telemetry.rebuild import Rebuild

log = logging.getLogger("telemetry")

BATCH = 500
"""Messages folded per transaction at most (AE_LEDGER_BATCH)."""
RETRY_S = 1.0


def message_of(msg: Msg) -> Message:
    """What the ledger keeps of a stream message: only llm.called, budget records, the scores' call attempts and
    the task index's lifecycle events are parsed (parsing every event costs CPU);
    one that cannot be read is counted by subject and skipped, as the stream keeps it."""
    sequence = msg.metadata.sequence.stream
    if (not msg.subject.endswith((".llm.called", *budgets.SUBJECT_SUFFIXES, *scores.SUBJECT_SUFFIXES))
            and not taskindex.is_lifecycle(msg.subject)):
        return Message(sequence, msg.subject)
    try:
        event = read(msg)  # an event on another tenant's (or type's) subject is refused too
        budgets.row_of(event)  # a budget record that cannot be folded is skipped here, never retried for ever
        scores.attempt_of(event)  # so is a call attempt the scores cannot read
        return Message(sequence, msg.subject, event, call_of(event))
    except Exception as exc:  # noqa: BLE001  a projection skips what it cannot read; the stream keeps it
        log.warning("skipped an event on %s: %s", msg.subject, describe(exc)[:300])
        return Message(sequence, msg.subject)


async def main(stop: asyncio.Event) -> None:
    settings = Settings()
    bus = await Bus.open(settings.nats_url, "telemetry")
    ledger: Ledger | PgLedger
    if settings.postgres_url:
        ledger = PgLedger(settings.postgres_url)
        health.PROCESS.add("postgres", health.postgres(settings.postgres_url))
    else:
        log.warning("AE_POSTGRES_URL is not set: the ledger is kept in memory, read from the whole stream at every "
                    "start and lost at exit; set AE_POSTGRES_URL (or AE_POSTGRES_URL_FILE) to keep it in PostgreSQL")
        ledger = Ledger()
    call = caller(ledger)
    metrics.SAMPLERS.add("tasks", taskmetrics.sampler(lambda: call(ledger.task_counts)))
    rebuild = Rebuild()

    async def answer(action: str, raw: bytes, scope: str | None) -> dict[str, Any]:
        if action == "tasks.list":  # the task index (taskindex.py); a tenant's credential sees only its tenant
            body, problem = read_query(raw, task_required=False)
            if problem:
                return {"error": problem}
            wanted, problem = taskindex.read_filter(body, scope)
            if problem:
                return {"error": problem}
            tasks: dict[str, Any] = await call(ledger.list_tasks, wanted)
            return tasks
        if action == "ledger.rebuild":
            return await rebuild_asked(raw, scope)
        query, problem = read_query(raw, task_required=False)
        if action not in ("ledger", "agents"):
            problem = f"unknown telemetry query '{action}'; known: ledger, agents, ledger.rebuild, tasks.list"
        if problem:
            return {"error": problem}
        if action == "agents":  # agent scores (scores.py)
            try:
                wanted_agents = scores.read_filter(query, scope)
            except ValueError as exc:  # a bad filter
                return {"error": str(exc)}
            return {"agents": await call(ledger.agents, wanted_agents)}
        try:  # cost by model and day of some tenants (tenantcost.py); a tenant's credential gets its own only
            tenants = tenantcost.read_tenants(query, scope)
        except ValueError as exc:
            return {"error": str(exc)}
        if tenants is not None:
            if query.get("task_id") or query.get("tenant"):
                return {"error": "ask either tenants (their sums) or a task_id or tenant (its line), not both"}
            summary: dict[str, Any] = await call(ledger.tenants_summary, tenants)
            return summary
        result: dict[str, Any] = await call(ledger.query, query.get("task_id"), scope or query.get("tenant"))
        return result

    async def rebuild_asked(raw: bytes, scope: str | None) -> dict[str, Any]:
        """The platform's `agentctl cost rebuild`: refused to a tenant's credential (the ledger is everyone's),
        and, unless forced, when the stream no longer holds its first messages (they would be lost)."""
        if scope is not None:
            return {"error": "only the platform administrator may rebuild the ledger, not a tenant's credential"}
        body, problem = read_query(raw, task_required=False)
        if problem:
            return {"error": problem}
        info = await bus.js.stream_info(STREAM)
        if info.state.first_seq > 1 and body.get("force") is not True:
            return {"error": f"the stream holds sequences {info.state.first_seq} to {info.state.last_seq} only "
                             f"(its retention removed 1 to {info.state.first_seq - 1}): a rebuild would lose the "
                             "calls they counted; ask again with force to rebuild from what is left"}
        log.warning("ledger rebuild asked: emptying the ledger and folding the stream again from its first message")
        return await rebuild.ask(info.state.last_seq)

    rebuild_askers: set[asyncio.Task[None]] = set()

    async def on_query(msg: Msg) -> None:
        scope, action = rpc_scope(TELEMETRY_RPC, msg.subject)  # a tenant's credential may ask only in its scope
        if action == "ledger.rebuild":
            # answered once the refold caught up, which may take minutes: awaited here, it would hold every other
            # query behind it (nats-py runs one subscription's callbacks one at a time)
            task = asyncio.create_task(respond(msg, scope, action))
            rebuild_askers.add(task)
            task.add_done_callback(rebuild_askers.discard)
            return
        await respond(msg, scope, action)

    async def respond(msg: Msg, scope: str | None, action: str) -> None:
        try:
            reply = await answer(action, msg.data, scope)
        except Exception as exc:  # noqa: BLE001  PostgreSQL away: the asker hears it
            reply = {"error": f"the ledger cannot be read now: {describe(exc)[:200]}"}
        try:
            await answer_query(msg, reply, bus.nc.max_payload, scope)
        except Exception as exc:  # noqa: BLE001  the asker has gone, or the bus: nothing to do
            log.warning("could not answer the query on %s: %s", msg.subject, exc)

    async def on_forgotten(msg: Msg) -> None:
        try:
            note = json.loads(msg.data)
            tenant, task_ids = str(note["tenant"]), note.get("task_ids")
        except (ValueError, KeyError, TypeError, RecursionError):
            log.warning("ignored a malformed note on %s", msg.subject)
            return
        ids = [str(t) for t in task_ids] if isinstance(task_ids, list) else None
        while True:
            try:
                dropped = await call(ledger.forget, tenant, ids)
                break
            except (psycopg.OperationalError, PoolTimeout) as exc:  # PostgreSQL away: the rows must still go
                log.warning("cannot drop tenant '%s' from the ledger yet (%s); retrying", tenant, describe(exc)[:200])
                await asyncio.sleep(RETRY_S)
            except Exception as exc:  # noqa: BLE001  a note PostgreSQL refuses: retrying cannot help
                log.error("cannot drop tenant '%s' from the ledger: %s", tenant, describe(exc)[:200])
                return
        log.info("tenant '%s' forgotten: dropped the ledger lines of %d task(s)", tenant, dropped)

    try:
        await bus.nc.subscribe(TENANT_FORGOTTEN, cb=on_forgotten)
        listening = False
        while not stop.is_set():  # once, unless a rebuild restarts the fold from the first message
            position = await resume(bus, ledger, call, stop)
            if stop.is_set():
                return
            if position:
                log.info("resuming from stream sequence %d", position + 1)
                start = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=position + 1)
            else:
                log.info("reading the stream from its first message")
                start = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
            sub = await bus.js.subscribe(STREAM_SUBJECTS[0], stream=STREAM, config=start, ordered_consumer=True)
            if not listening:
                for subject in rpc_listen(TELEMETRY_RPC):
                    await bus.nc.subscribe(subject, cb=on_query)
                health.PROCESS.serving = listening = True
            await fold(sub, ledger, call, stop, env_int("AE_LEDGER_BATCH", BATCH), rebuild)
            if stop.is_set():
                return
            await sub.unsubscribe()  # a rebuild was asked: a new consumer reads from the first message
            await reset(ledger, call, rebuild)
    finally:
        await bus.close()
        await asyncio.to_thread(ledger.close)


Call = Callable[..., Awaitable[Any]]


def caller(ledger: Ledger | PgLedger) -> Call:
    """How to call the ledger: the in-memory one on the event loop, PostgreSQL in a thread (it blocks)."""

    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        if isinstance(ledger, Ledger):
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    return call


async def resume(bus: Bus, ledger: Ledger | PgLedger, call: Call, stop: asyncio.Event) -> int:
    """The sequence the ledger has reached on this stream (0: none), retried while PostgreSQL is away."""
    while not stop.is_set():
        try:
            info = await bus.js.stream_info(STREAM)
            stream = f"{STREAM} created {info.created.isoformat() if info.created else '?'}"
            position: int = await call(ledger.resume, stream, info.state.last_seq)
            if position and info.state.first_seq > position + 1:
                log.warning("stream sequences %d to %d left the stream (its retention) before the ledger folded "
                            "them: their calls are not counted", position + 1, info.state.first_seq - 1)
            return position
        except Exception as exc:  # noqa: BLE001  PostgreSQL or JetStream not ready yet
            log.warning("cannot read the ledger's position yet (%s); retrying", describe(exc)[:200])
            await asyncio.sleep(RETRY_S)
    return 0


async def reset(ledger: Ledger | PgLedger, call: Call, rebuild: Rebuild) -> None:
    """Empty the ledger for a rebuild (the caller then folds from the first message); a reset that fails leaves
    the ledger as it was and tells the askers."""
    try:
        await call(ledger.reset)
    except Exception as exc:  # noqa: BLE001  PostgreSQL away: the fold resumes where it was
        log.error("the ledger was not rebuilt: %s", describe(exc)[:200])
        rebuild.failed(describe(exc)[:200])
        return
    rebuild.started()


async def delivered_all(sub: JetStreamContext.PushSubscription) -> bool:
    """Has the consumer nothing more to deliver? A second without a message is not enough under load; the
    server's count of pending messages is (what was delivered and not yet folded waits in no buffer: the
    caller's wait for a message just ran out)."""
    try:
        return int((await sub.consumer_info()).num_pending or 0) == 0
    except Exception as exc:  # noqa: BLE001  JetStream busy: ask again at the next idle second
        log.warning("cannot read the ledger consumer's pending count yet: %s", describe(exc)[:200])
        return False


async def fold(sub: JetStreamContext.PushSubscription, ledger: Ledger | PgLedger, call: Call, stop: asyncio.Event,
               batch_size: int, rebuild: Rebuild | None = None) -> None:
    """Take what the consumer delivers in batches and fold each in one transaction, retrying one that fails
    (PostgreSQL away) until it is written: nothing is skipped, and flow control holds the server back meanwhile.
    Returns at stop, or when a rebuild is asked (after the batch in hand is written)."""
    read_since_start, caught_up = 0, False
    while not stop.is_set() and not (rebuild and rebuild.asked.is_set()):
        batch: list[Message] = []
        try:
            batch.append(message_of(await sub.next_msg(timeout=1.0)))
            while len(batch) < batch_size:
                batch.append(message_of(await sub.next_msg(timeout=0.05)))
        except (TimeoutError, NatsTimeoutError):
            pass
        if not batch:
            if not caught_up:
                caught_up = True
                log.info("caught up: %d message(s) read since start", read_since_start)
            if rebuild and rebuild.running and await delivered_all(sub):
                rebuild.progress(0, None)
            continue
        read_since_start += len(batch)
        while True:
            try:
                folded = await call(ledger.apply, batch)
                if rebuild:
                    rebuild.progress(folded, batch[-1].sequence)
                break
            except Exception as exc:  # noqa: BLE001  PostgreSQL away: keep the batch and try again
                log.warning("cannot write %d message(s) to the ledger (%s); retrying", len(batch), describe(exc)[:200])
                await asyncio.sleep(RETRY_S)
                if stop.is_set():
                    return


if __name__ == "__main__":
    service.run("telemetry", main)
