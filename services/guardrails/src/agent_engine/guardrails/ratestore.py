"""The rate limits' state in the NATS KV bucket `ae_rate_limits`, shared by every guardrails replica.

Each key holds its TAT and the ids of the last requests it let through. A write is a compare-and-set on the
revision read, so two replicas admitting at once cannot both use the same slot: the loser reads again and
decides again. The request ids make a retry (after a lost CAS, or a redelivered request) count a request once.

The bucket also keeps the answer each request got (`<tenant>.answer.<sha256 of the request id>`: let through, or
refused with its reason and retry-after), written before the answer is published, so a request redelivered at any
time the bucket remembers it (a day) gets the same answer, not a fresh check.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from agent_engine.contracts.subjects import RATE_LIMITS_BUCKET
from agent_engine.guardrails.ratelimit import BUCKET_TTL_S, Counted, gcra
from agent_engine.runtime.streams import ensure_bucket

BUCKET = RATE_LIMITS_BUCKET
RECENT = 32
"""Request ids kept per key: enough to recognise a redelivery, which comes within the ack wait."""
log = logging.getLogger("guardrails.ratelimit")


class RateStoreUnavailable(Exception):
    """The bucket could not be read or written (NATS or the bucket's stream unavailable)."""


@dataclass(frozen=True)
class Refusal:
    counted: Counted
    retry_after_s: float


@dataclass(frozen=True)
class _Read:
    tat: float | None
    recent: tuple[str, ...]
    revision: int | None


class RateStore:
    def __init__(self, kv: KeyValue, tries: int = 20, retry_delay_s: float = 0.05) -> None:
        self.kv = kv
        self.tries = tries
        self.retry_delay_s = retry_delay_s

    @classmethod
    async def open(cls, js: JetStreamContext) -> RateStore:
        kv = await ensure_bucket(js, KeyValueConfig(bucket=BUCKET, history=1, ttl=BUCKET_TTL_S,
                                                    storage=StorageType.FILE))
        return cls(kv)

    async def admit(self, keys: list[Counted], request_id: str, now: float) -> Refusal | None:
        """Count the request against every key, or refuse it naming the limit with the longest wait (nothing is
        written then). Raises RateStoreUnavailable when the bucket cannot be used."""
        failures = 0
        for _ in range(self.tries):
            try:
                reads = [await self._read(c.key) for c in keys]
                refused = []
                for c, r in zip(keys, reads, strict=True):
                    decision = gcra(c.limit, r.tat, now)
                    if request_id not in r.recent and not decision.allowed:
                        refused.append(Refusal(c, decision.retry_after_s))
                if refused:
                    return max(refused, key=lambda f: f.retry_after_s)
                for c, r in zip(keys, reads, strict=True):
                    if request_id not in r.recent:
                        await self._write(c, r, request_id, now)
                return None
            except KeyWrongLastSequenceError:  # another replica wrote the key since we read it: decide again
                await asyncio.sleep(0)
            except Exception as exc:  # noqa: BLE001  the bucket failed: counted, and the third raises
                failures = await self._failed(failures, exc)
        raise RateStoreUnavailable(f"{self.tries} conflicting writes in a row")

    async def recorded(self, tenant: str, request_id: str) -> dict[str, Any] | None:
        """The answer recorded for this request (None: none yet). Raises RateStoreUnavailable."""
        try:
            entry = await self._retried(self.kv.get, answer_key(tenant, request_id))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        body: dict[str, Any] = json.loads(entry.value)
        return body

    async def record(self, tenant: str, request_id: str, answer: dict[str, Any]) -> dict[str, Any]:
        """Record this request's answer unless one is recorded already; returns the one that stands (another
        replica's, when it recorded first). Raises RateStoreUnavailable."""
        key = answer_key(tenant, request_id)
        try:
            await self._retried(self.kv.create, key, json.dumps(answer, sort_keys=True).encode())
        except KeyWrongLastSequenceError as exc:
            first = await self.recorded(tenant, request_id)  # recorded since we looked: the first answer stands
            if first is None:
                raise RateStoreUnavailable("the recorded answer vanished") from exc
            return first
        return answer

    async def _retried(self, call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """`call(*args)`, tried three times while the bucket fails. A missing key, or a create that finds the key,
        is an answer, not a failure: raised as it is."""
        failures = 0
        while True:
            try:
                return await call(*args)
            except (KeyNotFoundError, KeyWrongLastSequenceError):
                raise
            except Exception as exc:  # noqa: BLE001  the bucket failed: counted, and the third raises
                failures = await self._failed(failures, exc)

    async def _failed(self, failures: int, exc: Exception) -> int:
        """One more failure of the bucket: logged, then a pause before the next try; the third raises."""
        failures += 1
        log.warning("rate-limit bucket unavailable (%s)", type(exc).__name__)
        if failures >= 3:
            raise RateStoreUnavailable(str(type(exc).__name__)) from exc
        await asyncio.sleep(self.retry_delay_s * failures)
        return failures

    async def _read(self, key: str) -> _Read:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return _Read(None, (), None)
        if not entry.value:
            return _Read(None, (), entry.revision)
        body = json.loads(entry.value)
        return _Read(float(body["tat"]), tuple(body.get("recent", ())), entry.revision)

    async def _write(self, counted: Counted, read: _Read, request_id: str, now: float) -> None:
        decision = gcra(counted.limit, read.tat, now)
        value = json.dumps({"tat": decision.tat, "recent": [*read.recent, request_id][-RECENT:]}).encode()
        if read.revision is None:
            await self.kv.create(counted.key, value)
        else:
            await self.kv.update(counted.key, value, last=read.revision)


def answer_key(tenant: str, request_id: str) -> str:
    """Where a request's answer is recorded: its id hashed (KV keys allow few characters)."""
    return f"{tenant}.answer.{hashlib.sha256(request_id.encode()).hexdigest()[:32]}"
