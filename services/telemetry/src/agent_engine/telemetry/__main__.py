"""`python -m agent_engine.telemetry`: folds every event subject into the ledger; answers ledger queries.

The ledger is rebuilt from the stream at every start (an ordered consumer from the first message).
"""

from __future__ import annotations

import asyncio
import json
import logging

from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from agent_engine.contracts.subjects import STREAM_SUBJECTS, TELEMETRY_RPC, TENANT_FORGOTTEN, rpc_listen, rpc_scope
from agent_engine.runtime import health, service
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.inbox import describe, read
from agent_engine.runtime.queries import answer_query, read_query
from agent_engine.runtime.settings import Settings
from agent_engine.telemetry.ledger import Ledger

log = logging.getLogger("telemetry")


async def main(stop: asyncio.Event) -> None:
    settings = Settings()
    bus = await Bus.open(settings.nats_url, "telemetry")
    ledger = Ledger()

    async def on_event(msg: Msg) -> None:
        ledger.count(msg.subject)
        if not msg.subject.endswith(".llm.called"):
            return  # only usage is parsed: the ledger needs nothing else, and parsing all costs CPU
        try:
            ledger.observe(read(msg))  # an event on another tenant's (or type's) subject is refused too
        except Exception as exc:  # noqa: BLE001  a projection skips what it cannot read; the stream keeps it
            log.warning("skipped an llm.called on %s: %s", msg.subject, describe(exc)[:300])

    async def on_query(msg: Msg) -> None:
        query, problem = read_query(msg.data, task_required=False)
        scope, action = rpc_scope(TELEMETRY_RPC, msg.subject)  # a tenant's credential may ask only in its scope
        if action != "ledger":
            problem = f"unknown telemetry query '{action}'; known: ledger"
        reply = {"error": problem} if problem else ledger.query(query.get("task_id"), scope or query.get("tenant"))
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
        dropped = ledger.forget(tenant, [str(t) for t in task_ids] if isinstance(task_ids, list) else None)
        log.info("tenant '%s' forgotten: dropped the ledger lines of %d task(s)", tenant, dropped)

    try:
        await bus.nc.subscribe(TENANT_FORGOTTEN, cb=on_forgotten)
        await bus.js.subscribe(STREAM_SUBJECTS[0], cb=on_event, ordered_consumer=True,
                               deliver_policy=DeliverPolicy.ALL)
        for subject in rpc_listen(TELEMETRY_RPC):
            await bus.nc.subscribe(subject, cb=on_query)
        health.PROCESS.serving = True
        await stop.wait()
    finally:
        await bus.close()


if __name__ == "__main__":
    service.run("telemetry", main)
