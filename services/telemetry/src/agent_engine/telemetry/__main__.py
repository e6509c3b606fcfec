"""`python -m agent_engine.telemetry`: folds every event subject into the ledger; answers ledger queries.

The ledger is rebuilt from the stream at every start (an ordered consumer from the first message).
"""

from __future__ import annotations

import asyncio
import json
import logging

from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from pydantic import ValidationError

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.subjects import STREAM_SUBJECTS, TELEMETRY_RPC, rpc_subject
from agent_engine.runtime import service
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.inbox import validation_summary
from agent_engine.runtime.queries import read_query
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
            ledger.observe(Envelope.from_bytes(msg.data))
        except Exception as exc:  # noqa: BLE001  a projection skips what it cannot read; the stream keeps it
            log.warning("skipped an unreadable llm.called on %s: %s", msg.subject,
                        validation_summary(exc) if isinstance(exc, ValidationError) else f"{type(exc).__name__}")

    async def on_query(msg: Msg) -> None:
        query, problem = read_query(msg.data, task_required=False)
        reply = {"error": problem} if problem else ledger.query(query.get("task_id"), query.get("tenant"))
        if msg.reply:
            await msg.respond(json.dumps(reply).encode())

    try:
        await bus.js.subscribe(STREAM_SUBJECTS[0], cb=on_event, ordered_consumer=True,
                               deliver_policy=DeliverPolicy.ALL)
        await bus.nc.subscribe(rpc_subject(TELEMETRY_RPC, "ledger"), cb=on_query)
        await stop.wait()
    finally:
        await bus.close()


if __name__ == "__main__":
    service.run("telemetry", main)
