"""The call log: side-effecting tool calls remembered in a NATS KV bucket, so none runs twice.

One key per (tenant, task, node), not per dispatch: the router re-dispatches a node whose deadline
passed with a new attempt number and a new dispatch id, and that retry is the same call as far as
the outside world is concerned. A call an agent's model asked for has its own key per call
(`<tenant>.<task>.<node>.<call id>`, the call id naming its turn and position, which the router
records once). Before running, the tool-runner *creates* the key with a claim
(creation fails if the key exists, so two runners cannot both claim); after running it stores the
result event in the same key, so a crash before the publish loses neither the result nor the
at-most-once; once the stream has acknowledged the publish, it replaces the result with a marker
(`published`: the event's id, type, SHA-256 and size), so the bucket keeps no content of a result.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import socket
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from agent_engine.contracts.envelope import Envelope, derive_id
from agent_engine.contracts.events import NodeDispatched
from agent_engine.contracts.subjects import TOOL_CALLS_BUCKET

log = logging.getLogger("tool-runner")
KEY_TOKEN = re.compile(r"^[-_=a-zA-Z0-9]{1,200}$")


class CallLogUnavailable(ConnectionError):
    """NATS did not answer for the call log: an outage, so the dispatch is redelivered rather than answered
    (a ConnectionError, which the runtime's consume rule counts as transient)."""


def call_key(tenant: str, task_id: str, node: str, call_id: str | None = None, resumed: int | None = None) -> str:
    """`<tenant>.<task>.<node>`, plus `.<call id>` for a call an agent node's model asked for (its tool turn and
    position), or `.r<attempt>` for a tool node a person resumed after failures (a new call); a task id with
    characters a KV key cannot hold is replaced by a hash of it."""
    task = task_id if KEY_TOKEN.match(task_id) else "h" + derive_id("task", task_id).replace("-", "")
    key = f"{tenant}.{task}.{node}" + (f".r{resumed}" if resumed else "")
    if call_id is None:
        return key
    return f"{key}.{call_id if KEY_TOKEN.match(call_id) else 'h' + derive_id('call', call_id).replace('-', '')}"


def this_runner() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


@dataclass(frozen=True)
class CallRecord:
    state: Literal["claimed", "done", "published"]
    dispatch_id: str
    attempt: int
    runner: str
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    event: dict[str, Any] | None = None
    """The result event (node.completed or node.errored) as published, once the tool has run."""
    claim: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Tells this claim from any other, so a claim whose reply was lost can be recognised as ours."""
    published: dict[str, Any] | None = None
    """Once the result event is in the stream (state `published`, `event` gone): its `id`, `type`, `sha256` and
    `bytes` (of the event as the tool-runner answered it) and when (`at`); never its content."""

    def to_bytes(self) -> bytes:
        record = asdict(self)
        if self.published is None:  # claims and results are written as before this field existed
            del record["published"]
        return json.dumps(record).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> CallRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(raw).items() if k in known})

    def result(self) -> Envelope | None:
        return Envelope.model_validate(self.event) if self.event is not None else None

    def marked_published(self, event: Envelope) -> CallRecord:
        """This record once `event`, its result, is in the stream: the marker that replaces the result."""
        raw = event.to_bytes()
        return CallRecord("published", self.dispatch_id, self.attempt, self.runner, self.at, None, self.claim, {
            "id": event.id, "type": event.type, "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw),
            "at": datetime.now(UTC).isoformat(timespec="milliseconds")})


class CallLog:
    def __init__(self, kv: KeyValue, runner: str | None = None, *, retry_delay_s: float = 0.5,
                 tries: int = 8) -> None:
        self.kv = kv
        self.runner = runner or this_runner()
        self.retry_delay_s = retry_delay_s
        self.tries = tries
        self.unsaved: dict[str, CallRecord] = {}
        """Results this process could not store (NATS unreachable); stored, and answered, on redelivery."""
        self.unreleased: dict[str, str] = {}
        """Claims this process could not withdraw (NATS unreachable), by key: the dispatch id; withdrawn on
        redelivery."""

    @classmethod
    async def open(cls, js: JetStreamContext) -> CallLog:
        """The bucket is created by the router at start (`ensure_streams`, runtime.bus); Bus.open waits for it."""
        return cls(await js.key_value(TOOL_CALLS_BUCKET))

    async def get(self, key: str) -> CallRecord | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        return CallRecord.from_bytes(entry.value) if entry.value else None

    async def recorded(self, key: str) -> CallRecord | None:
        """What is known of the call: a result this process still has to store (stored now), else the entry."""
        if key in self.unsaved:
            done = self.unsaved[key]
            await self._store(key, done)
            return done
        if key in self.unreleased:
            await self._release(key, self.unreleased[key])
        return await self.get(key)

    async def claim(self, key: str, dispatch: NodeDispatched) -> CallRecord | None:
        """Claim the call for this dispatch: None when claimed now (run it), else the record already there."""
        record = CallRecord("claimed", dispatch.dispatch_id, dispatch.attempt, self.runner)
        for attempt in range(self.tries):
            try:
                await self.kv.create(key, record.to_bytes())
                return None
            except KeyWrongLastSequenceError:
                pass
            except Exception as exc:  # noqa: BLE001  NATS unreachable, or the reply lost: look before trying again
                log.warning("claiming %s failed (%s); checking the key", key, exc)
                await asyncio.sleep(self.retry_delay_s * (attempt + 1))
            try:
                found = await self.get(key)
            except Exception as exc:  # noqa: BLE001  still unreachable: try again
                log.warning("reading %s failed (%s)", key, exc)
                continue
            if found is not None:
                return None if found.claim == record.claim else found
        raise CallLogUnavailable(f"could not claim tool call {key} after {self.tries} tries; the tool was not run")

    async def release(self, key: str, dispatch: NodeDispatched) -> None:
        """Withdraw this runner's claim of a call that never reached its tool (mcp.NotReached), so the next
        attempt is a fresh call. Only a claim still ours and without a result goes: the entry is deleted with a
        compare-and-set on its revision. Raises CallLogUnavailable when NATS stays unreachable (the claim is
        withdrawn on the redelivery, before anything else)."""
        self.unreleased[key] = dispatch.dispatch_id
        await self._release(key, dispatch.dispatch_id)

    async def _release(self, key: str, dispatch_id: str) -> None:
        for attempt in range(self.tries):
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                entry = None
            except Exception as exc:  # noqa: BLE001  NATS restarting: keep trying for a while
                log.warning("reading %s to withdraw its claim failed (%s)", key, exc)
                await asyncio.sleep(self.retry_delay_s * (attempt + 1))
                continue
            record = CallRecord.from_bytes(entry.value) if entry is not None and entry.value else None
            if entry is None or record is None or (record.state, record.dispatch_id, record.runner) != (
                    "claimed", dispatch_id, self.runner):
                self.unreleased.pop(key, None)  # gone, or not our claim: nothing of ours to withdraw
                return
            try:
                await self.kv.delete(key, last=entry.revision)
                self.unreleased.pop(key, None)
                return
            except KeyWrongLastSequenceError:
                continue  # written meanwhile: look again
            except Exception as exc:  # noqa: BLE001
                log.warning("withdrawing the claim of %s failed (%s)", key, exc)
                await asyncio.sleep(self.retry_delay_s * (attempt + 1))
        raise CallLogUnavailable(f"could not withdraw the claim of tool call {key}, which never reached its tool; "
                                 "withdrawn on the redelivery")

    async def finish(self, key: str, dispatch: NodeDispatched, event: Envelope) -> CallRecord:
        """Store the result (the record stored); if NATS stays unreachable, keep it for the redelivery and raise."""
        record = CallRecord("done", dispatch.dispatch_id, dispatch.attempt, self.runner,
                            event=event.to_wire())
        self.unsaved[key] = record
        await self._store(key, record)
        return record

    async def mark_published(self, key: str, record: CallRecord, event: Envelope) -> None:
        """Replace the stored result `event` with the marker, now that the stream holds the event. Raises
        CallLogUnavailable when NATS stays unreachable: the dispatch is redelivered, answered from the result
        still stored (a duplicate the stream drops) and marked then."""
        await self._store(key, record.marked_published(event))

    async def _store(self, key: str, record: CallRecord) -> None:
        for attempt in range(self.tries):
            try:
                await self.kv.put(key, record.to_bytes())
                self.unsaved.pop(key, None)
                return
            except Exception as exc:  # noqa: BLE001  NATS restarting: keep trying for a while
                log.warning("storing the result of %s failed (%s)", key, exc)
                await asyncio.sleep(self.retry_delay_s * (attempt + 1))
        if record.state == "published":
            raise CallLogUnavailable(f"could not mark tool call {key} published; its result stays stored until the "
                                     "redelivery marks it")
        raise CallLogUnavailable(f"could not store the result of tool call {key}; kept in memory for the redelivery")
