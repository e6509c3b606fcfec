"""Rate limits kept in a real NATS KV bucket: replicas admitting at once share one limit (compare-and-set), a
redelivered request counts once, and a refusal writes nothing."""

from __future__ import annotations

import asyncio
import uuid

import nats
import pytest

from agent_engine.guardrails.ratelimit import Counted, Limit
from agent_engine.guardrails.ratestore import RateStore
from agent_engine.runtime.bus import auth_options
from agent_engine.runtime.keyring import credential_from_env

pytestmark = pytest.mark.integration


async def _stores(nats_url: str, n: int) -> tuple[list[nats.NATS], list[RateStore]]:
    conns = [await nats.connect(nats_url, **auth_options(credential_from_env())) for _ in range(n)]
    return conns, [await RateStore.open(nc.jetstream()) for nc in conns]


async def test_two_replicas_admitting_at_once_share_one_limit(nats_url: str) -> None:
    conns, stores = await _stores(nats_url, 2)
    try:
        key = [Counted("tenant", f"t{uuid.uuid4().hex[:10]}.tenant", Limit(rate=1, per_s=3600, burst=5))]
        now = 1_000_000.0  # one instant for every request: only the compare-and-set keeps them apart
        results = await asyncio.gather(*(stores[i % 2].admit(key, f"req-{i}", now) for i in range(20)))
        admitted = [r for r in results if r is None]
        assert len(admitted) == 5
        assert all(r is not None and r.retry_after_s >= 3600 * 0.99 for r in results if r is not None)
    finally:
        for nc in conns:
            await nc.close()


async def test_a_redelivered_request_counts_once_and_a_refusal_writes_nothing(nats_url: str) -> None:
    conns, [store] = await _stores(nats_url, 1)
    try:
        tenant = f"t{uuid.uuid4().hex[:10]}"
        keys = [Counted("tenant", f"{tenant}.tenant", Limit(rate=1, per_s=60, burst=2)),
                Counted("user", f"{tenant}.user.abc", Limit(rate=1, per_s=60, burst=1))]
        assert await store.admit(keys, "req-1", 100.0) is None
        assert await store.admit(keys, "req-1", 100.0) is None  # the same request again: no second count
        refused = await store.admit(keys, "req-2", 100.0)
        assert refused is not None and refused.counted.scope == "user" and refused.retry_after_s == 60.0
        # the user's refusal did not use the tenant's second slot
        assert await store.admit(keys[:1], "req-3", 100.0) is None
        assert await store.admit(keys[:1], "req-4", 100.0) is not None
    finally:
        await conns[0].close()


async def test_an_unreachable_bucket_refuses_the_request_with_a_retry_after(nats_url: str) -> None:
    """Fail closed: a request whose limits cannot be checked does not run; the sender is told when to retry."""
    from agent_engine.contracts.envelope import command
    from agent_engine.contracts.events import TaskRequested
    from agent_engine.guardrails.checks import Verdict
    from agent_engine.guardrails.policy import PolicyFile
    from agent_engine.guardrails.ratelimit import RateLimits
    from agent_engine.guardrails.service import rate_limited

    conns, [store] = await _stores(nats_url, 1)
    await conns[0].close()  # the bucket's server is gone for this replica
    store.retry_delay_s = 0.0
    request = TaskRequested(workflow="w", requested_by="jane")
    envelope = command(request, tenant="acme", task_id="t-1", source="test")
    limits = RateLimits.from_policy(PolicyFile.parse({"defaults": {"rate_limits": {"user": {"rate": 5, "per_s": 1}}}}))
    verdict = await rate_limited(store, limits, "acme", Verdict(envelope, request))
    assert not verdict.accepted and verdict.retry_after_s == 5.0
    assert verdict.reason is not None and verdict.reason.startswith("rate limits cannot be checked now")
    assert [r.rule for r in verdict.rules] == ["rate.unavailable"]


async def test_a_request_answered_twice_differently_keeps_only_its_first_answer(nats_url: str) -> None:
    """A request refused by a rate limit, then redelivered (guardrails stopped before its ack) once the limit has
    room again, is answered with the same event id both times: the stream keeps the first answer, so the sender
    never sees its refused request run after all."""
    from agent_engine.contracts.envelope import Envelope
    from agent_engine.contracts.events import TaskRequested
    from agent_engine.contracts.subjects import STREAM
    from agent_engine.guardrails.checks import Verdict
    from agent_engine.guardrails.service import answers
    from agent_engine.runtime.bus import Bus

    tenant = f"t{uuid.uuid4().hex[:10]}"
    task_id = f"task-{uuid.uuid4().hex[:8]}"
    request = Envelope(id=f"req-{uuid.uuid4().hex}", source="test", type="task.requested", tenant=tenant,
                       time="2026-12-04T00:00:00Z", task_id=task_id, correlation_id=task_id,
                       data={"workflow": "wf", "input": {}})
    subject = f"ae.{tenant}.task.requested"
    asked = TaskRequested.model_validate(request.data)
    accepted = answers(subject, tenant, Verdict(request, asked), {}, 1)[-1]
    refused = answers(subject, tenant, Verdict(request, asked, reason="rate limit", retry_after_s=60), {}, 1)[-1]
    assert (accepted.type, refused.type) == ("task.accepted", "task.rejected") and accepted.id == refused.id
    bus = await Bus.open(nats_url, "guardrails")
    try:
        await bus.publish(refused)
        await bus.publish(accepted)
        info = await bus.js.stream_info(STREAM, subjects_filter=f"ae.{tenant}.>")
        [(kept, count)] = (info.state.subjects or {}).items()  # one message: the first answer
        assert kept == f"ae.{tenant}.task.rejected" and count == 1
    finally:
        await bus.close()
