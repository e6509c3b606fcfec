"""Rate limits kept in a real NATS KV bucket: replicas admitting at once share one limit (compare-and-set), a
redelivered request counts once, a refusal writes nothing, and each request's answer is recorded, so a redelivery
gets the answer the request got first, whenever it comes (a refusal never turns into an acceptance)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import nats
import nats.aio.msg
import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import TaskRequested
from agent_engine.guardrails.policy import PolicyFile
from agent_engine.guardrails.ratelimit import Counted, Limit, RateLimits
from agent_engine.guardrails.ratestore import RateStore
from agent_engine.runtime.bus import auth_options
from agent_engine.runtime.keyring import Keyring, credential_from_env

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


def _request(tenant: str, requested_by: str = "jane") -> tuple[Envelope, TaskRequested]:
    task_id = f"task-{uuid.uuid4().hex[:8]}"
    envelope = Envelope(id=f"req-{uuid.uuid4().hex}", source="test", type="task.requested", tenant=tenant,
                        time="2026-12-04T00:00:00Z", task_id=task_id, correlation_id=task_id,
                        data={"workflow": "wf", "input": {}, "requested_by": requested_by})
    return envelope, TaskRequested.model_validate(envelope.data)


def _limits(rate: int, per_s: float, burst: int | None = None) -> RateLimits:
    user = {"rate": rate, "per_s": per_s, **({"burst": burst} if burst else {})}
    return RateLimits.from_policy(PolicyFile.parse({"defaults": {"rate_limits": {"user": user}}}))


async def test_a_refusal_stays_the_answer_when_the_request_comes_back_after_the_duplicate_window(
        nats_url: str) -> None:
    """Refused, then guardrails dies before its ack: the request comes back long after its retry-after, and after
    the stream's two-minute duplicate window (which no longer drops a second, different answer). It gets the same
    refusal, never an acceptance; a new request is checked afresh."""
    from agent_engine.guardrails.checks import Verdict
    from agent_engine.guardrails.service import answers, rate_limited

    conns, [store] = await _stores(nats_url, 1)
    try:
        tenant = f"t{uuid.uuid4().hex[:10]}"
        limits = _limits(rate=1, per_s=60)
        subject = f"ae.{tenant}.task.requested"
        t0 = 1_000_000.0
        first, first_asked = _request(tenant)
        assert (await rate_limited(store, limits, tenant, Verdict(first, first_asked), now=t0)).accepted
        second, asked = _request(tenant)
        refused = await rate_limited(store, limits, tenant, Verdict(second, asked), now=t0 + 1)
        assert not refused.accepted and refused.retry_after_s == 59.0
        published = answers(subject, tenant, refused, {}, 1)[-1]
        assert published.type == "task.rejected"

        # the crash: no ack, so the same request is delivered again, ten minutes on (the user's limit has room)
        again = await rate_limited(store, limits, tenant, Verdict(second, asked), now=t0 + 600)
        republished = answers(subject, tenant, again, {}, 1)[-1]
        assert republished.type == "task.rejected" and republished.id == published.id
        assert republished.data == published.data  # the same reason, the same retry-after, the same rule
        assert [r.rule for r in again.rules] == ["rate.user"]

        third, third_asked = _request(tenant)  # a new request has room now
        assert (await rate_limited(store, limits, tenant, Verdict(third, third_asked), now=t0 + 600)).accepted
    finally:
        await conns[0].close()


async def test_an_accepted_request_stays_accepted_however_many_requests_came_since(nats_url: str) -> None:
    """A request let through and redelivered after more requests than a key remembers the ids of: still let
    through (the recorded answer), not refused by a limit the others filled."""
    from agent_engine.guardrails.checks import Verdict
    from agent_engine.guardrails.ratestore import RECENT
    from agent_engine.guardrails.service import rate_limited

    conns, [store] = await _stores(nats_url, 1)
    try:
        tenant = f"t{uuid.uuid4().hex[:10]}"
        limits = _limits(rate=1, per_s=60, burst=RECENT + 2)
        t0 = 2_000_000.0
        kept, asked = _request(tenant)
        assert (await rate_limited(store, limits, tenant, Verdict(kept, asked), now=t0)).accepted
        for _ in range(RECENT + 1):  # the limit fills, and the key forgets the first request's id
            other, other_asked = _request(tenant)
            assert (await rate_limited(store, limits, tenant, Verdict(other, other_asked), now=t0)).accepted
        late, late_asked = _request(tenant)
        assert not (await rate_limited(store, limits, tenant, Verdict(late, late_asked), now=t0)).accepted
        assert (await rate_limited(store, limits, tenant, Verdict(kept, asked), now=t0)).accepted
    finally:
        await conns[0].close()


async def test_two_replicas_recording_one_requests_answer_keep_the_first(nats_url: str) -> None:
    """The same request handled by two replicas at once (its ack wait ran out): the answer recorded first
    stands, and the other replica answers with it. The record names no one and holds nothing of the request."""
    from agent_engine.guardrails.ratestore import answer_key

    conns, stores = await _stores(nats_url, 2)
    try:
        tenant = f"t{uuid.uuid4().hex[:10]}"
        refused = {"allowed": False, "reason": "rate limited", "retry_after_s": 5.0, "rule": "rate.user"}
        assert await stores[0].record(tenant, "req-1", refused) == refused
        assert await stores[1].record(tenant, "req-1", {"allowed": True}) == refused
        assert await stores[1].recorded(tenant, "req-1") == refused
        assert await stores[1].recorded(tenant, "req-2") is None
        key = answer_key(tenant, "req-1")
        assert key.startswith(f"{tenant}.answer.") and "req-1" not in key
    finally:
        for nc in conns:
            await nc.close()


async def test_guardrails_crashing_before_its_ack_answers_the_redelivered_request_with_the_same_refusal(
        tmp_path: Path, keyring: Keyring, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service itself, on a NATS of its own: a request over the user's limit is refused, then guardrails hangs
    after publishing the refusal, before deleting the request and acking it, and is stopped (the crash). A new
    replica starts once the limit has room again; the server redelivers the request when its ack wait runs out,
    and the answer is the same refusal, never an acceptance. Every answer published is seen on a core
    subscription, also one the stream drops as a duplicate: what a sender would see once the duplicate window has
    passed."""
    from agent_engine.guardrails import service
    from agent_engine.runtime import embedded
    from agent_engine.runtime.bus import Bus
    from agent_engine.runtime.settings import Settings

    server = embedded.start_nats(tmp_path / "nats", keyring=keyring)
    watcher = await nats.connect(server.url, **auth_options(credential_from_env()))
    try:
        tenant = f"t{uuid.uuid4().hex[:10]}"
        seen: list[Envelope] = []

        async def saw(msg: nats.aio.msg.Msg) -> None:
            seen.append(Envelope.model_validate_json(msg.data))

        await watcher.subscribe(f"ae.{tenant}.task.>", cb=saw)
        settings = Settings(nats_url=server.url, postgres_url="postgresql://unused", ack_wait_s=1.5, batch_size=4)
        policy = service.policy_from_env(PolicyFile())
        limits = _limits(rate=1, per_s=2)
        real_delete = service.delete_answered
        dying = {"seq": -1}

        async def delete(bus: Bus, seq: int, overwrite: bool = True) -> None:
            if seq == dying["seq"]:
                await asyncio.Event().wait()  # hangs: the replica "dies" here, its answer published, no ack
            await real_delete(bus, seq, overwrite)

        monkeypatch.setattr(service, "delete_answered", delete)

        async def replica() -> tuple[Bus, asyncio.Event, asyncio.Task[None]]:
            bus, stop = await Bus.open(server.url, "guardrails"), asyncio.Event()
            return bus, stop, asyncio.create_task(service.serve(bus, policy, settings, stop, limits))

        async def answers_to(request: Envelope, n: int) -> list[Envelope]:
            for _ in range(200):
                found = [e for e in seen if e.causation_id == request.id and e.type.startswith("task.")]
                if len(found) >= n:
                    return found
                await asyncio.sleep(0.05)
            raise AssertionError(f"{n} answers to {request.id} never came: {[e.type for e in seen]}")

        first_bus, _, first = await replica()
        js = watcher.jetstream()
        admitted, _ = _request(tenant)
        await js.publish(f"ae.{tenant}.task.requested", admitted.to_bytes())
        assert [a.type for a in await answers_to(admitted, 1)] == ["task.accepted"]
        refused, _ = _request(tenant)
        dying["seq"] = (await js.publish(f"ae.{tenant}.task.requested", refused.to_bytes())).seq
        [answer] = await answers_to(refused, 1)
        assert answer.type == "task.rejected" and answer.data["retry_after_s"] > 1

        await first_bus.nc.close()  # the crash: the refusal is out, the request neither deleted nor acked
        first.cancel()
        with contextlib.suppress(BaseException):
            await first
        dying["seq"] = -1
        await asyncio.sleep(2.5)  # past the retry-after: the user's limit has room now

        second_bus, second_stop, second = await replica()
        try:
            again = (await answers_to(refused, 2))[1]  # the redelivery, answered by the new replica
            assert again.type == "task.rejected" and again.id == answer.id and again.data == answer.data
            await asyncio.sleep(0.5)
            assert [e.type for e in seen if e.causation_id == refused.id and e.type.startswith("task.")] == [
                "task.rejected", "task.rejected"]  # never an acceptance
        finally:
            second_stop.set()
            await asyncio.wait_for(second, 10)
            await second_bus.close()
    finally:
        await watcher.close()
        server.stop()
