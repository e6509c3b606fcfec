"""Issue 10's reproductions, each against the running stack as another system on the bus would send them:
every hostile message is answered (task.rejected, node.errored, a query error) or dead-lettered at once
with its reason, and no tenant ever reads another's records."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope, derive_id
from agent_engine.contracts.subjects import ROUTER_RPC, TELEMETRY_RPC, partition_subject

pytestmark = pytest.mark.e2e


def forged(tenant: str, type_: str, data: dict[str, Any], task_id: str | None = None) -> Envelope:
    return Envelope(id=str(uuid.uuid4()), source="intruder", type=type_, time=datetime.now(UTC), tenant=tenant,
                    task_id=task_id or str(uuid.uuid4()), correlation_id="c", data=data)


async def publish(nc: Any, subject: str, body: bytes, **headers: str) -> None:
    await nc.jetstream().publish(subject, body, headers={"Nats-Msg-Id": str(uuid.uuid4()), **headers})


async def next_for(sub: Any, match: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        msg = await sub.next_msg(timeout=max(0.1, deadline - time.monotonic()))
        if match(msg):
            return msg


def test_a_fork_of_another_tenants_task_copies_nothing_of_it(engine, tenant) -> None:
    victim, intruder = tenant, tenant + "x"

    async def attack() -> tuple[Envelope, list[Envelope], dict[str, Any], dict[str, Any]]:
        nc = await engine.connect()
        try:
            workflow = await engine.push(nc, victim)
            secret = await engine.submit(nc, victim, workflow, {"brief": "the victim's own brief"})
            assert (await engine.wait_terminal(nc, [secret]))[secret] == "succeeded"
            fork = forged(intruder, "task.fork_requested", {"source_task_id": secret, "at": 3})
            await publish(nc, f"ae.{intruder}.task.fork_requested", fork.to_bytes())
            await engine.wait_terminal(nc, [fork.task_id])
            history = await engine.history(nc, fork.task_id)
            scoped = await engine.query(nc, "task.history", fork.task_id)
            asked = await nc.request(f"{ROUTER_RPC}.task.show",
                                     json.dumps({"task_id": secret, "tenant": intruder}).encode(), timeout=10)
            return fork, history, scoped, json.loads(asked.data)
        finally:
            await nc.close()

    fork, history, _, shown = asyncio.run(attack())
    assert [e.type for e in history] == ["router.input", "task.rejected"]
    assert history[1].data["reason"].endswith("no such task")
    assert history[0].data["source"] == []
    assert all(e.tenant == intruder for e in history)
    assert "the victim's own brief" not in json.dumps([e.model_dump(mode="json") for e in history])
    assert shown == {"error": f"no task '{fork.data['source_task_id']}' in the router's store for tenant "
                              f"'{intruder}'"}
    listed = engine.agentctl("task", "history", fork.task_id, "--json")
    assert listed.returncode == 0 and "the victim's own brief" not in listed.stdout


def test_unreadable_requests_are_rejected_not_dead_lettered(engine, tenant) -> None:
    async def send() -> tuple[dict[str, Any], dict[str, Any]]:
        nc = await engine.connect()
        try:
            rejected = await nc.subscribe(f"ae.{tenant}.task.rejected")
            await publish(nc, f"ae.{tenant}.task.requested", b"[" * 50_000 + b"]" * 50_000, **{"Ae-Task-Id": "deep"})
            deep = await next_for(rejected, lambda m: json.loads(m.data)["taskid"] == "deep")
            ack = await nc.jetstream().publish(f"ae.{tenant}.task.requested", b"not json",
                                               headers={"Ae-Task-Id": "h" * 300})
            derived = derive_id("request", ack.seq)
            long = await next_for(rejected, lambda m: json.loads(m.data)["taskid"] == derived)
            return json.loads(deep.data), json.loads(long.data)
        finally:
            await nc.close()

    deep, long = asyncio.run(send())
    assert "nests JSON too deeply" in deep["data"]["reason"]
    assert "Ae-Task-Id header is 300 characters" in long["data"]["reason"]


def test_forged_router_inputs_are_dead_lettered_at_once_with_the_reason(engine, tenant) -> None:
    async def send() -> list[tuple[str, float]]:
        nc = await engine.connect()
        try:
            dlq = await nc.subscribe("aedlq.router.>")
            workflow = await engine.push(nc, tenant)
            real = await engine.submit(nc, tenant, workflow, {"brief": "for a split"})
            assert (await engine.wait_terminal(nc, [real]))[real] == "succeeded"
            started = next(e for e in await engine.history(nc, real) if e.type == "task.started")
            lineage = {"kind": "subtask", "parent_id": real, "root_id": real, "cause": "forged",
                       "parent_node": "no_such_node", "index": 0}
            subtask = forged(tenant, "subtask.requested", {
                "lineage": lineage, "merge": "review", "count": 1, "workflow": workflow, "revision": "r",
                "workflow_manifest": started.data["workflow_manifest"], "input": {}})
            invalid = forged(tenant, "node.completed", {"dispatch_id": 7, "node": None}, task_id=real)
            nothing = forged(tenant, "node.completed", {"dispatch_id": "d", "node": "n", "attempt": 1, "output": {}})
            answers = []
            for event in (subtask, invalid, nothing):
                sent = time.monotonic()
                await publish(nc, f"ae.{tenant}.{event.type}", event.to_bytes())
                dead = await next_for(dlq, lambda m, e=event: json.loads(m.data)["id"] == e.id)
                answers.append((dead.headers["Ae-Error"], time.monotonic() - sent))
            return answers
        finally:
            await nc.close()

    (subtask, t1), (invalid, t2), (nothing, t3) = asyncio.run(send())
    assert "names node 'no_such_node' as its SPLIT" in subtask or "has no such subtask" in subtask
    assert invalid.startswith("not a valid node.completed payload: dispatch_id: Input should be a valid string")
    assert nothing.startswith("no task ") and f"of tenant '{tenant}'" in nothing
    for error, took in ((subtask, t1), (invalid, t2), (nothing, t3)):
        assert "deliveries" not in error and took < 5, (error, took)  # at once, not after 5 tries


def test_queries_answer_what_they_cannot_read(engine) -> None:
    async def ask() -> list[dict[str, Any]]:
        nc = await engine.connect()
        try:
            replies = []
            for subject, body in ((f"{TELEMETRY_RPC}.ledger", b"\xff\xfe"), (f"{TELEMETRY_RPC}.ledger", b"[1, 2]"),
                                  (f"{ROUTER_RPC}.task.show", b"\xff"), (f"{ROUTER_RPC}.task.show", b'{"task_id": 3}'),
                                  (f"{ROUTER_RPC}.no.such", b'{"task_id": "x"}')):
                replies.append(json.loads((await nc.request(subject, body, timeout=5)).data))
            return replies
        finally:
            await nc.close()

    replies = asyncio.run(ask())
    assert [sorted(r) for r in replies] == [["error"]] * 5
    assert "JSON object in UTF-8" in replies[0]["error"] and "not JSON list" in replies[1]["error"]
    assert "unknown router query 'no.such'" in replies[4]["error"]


def test_a_dispatch_the_mock_cannot_satisfy_is_answered_with_the_nodes_error(engine, tenant) -> None:
    async def send() -> dict[str, Any]:
        nc = await engine.connect()
        try:
            errored = await nc.subscribe(partition_subject("node.errored", tenant))
            dispatch = forged(tenant, "node.dispatched", {
                "dispatch_id": "d-1", "node": "n", "kind": "agent", "attempt": 1,
                "deadline": (datetime.now(UTC) + timedelta(seconds=30)).isoformat(),
                "agent": {"name": "a", "provider": "mock", "output_schema_json":
                          {"type": "object", "required": ["a"], "properties": {"a": 5}}}})
            await publish(nc, f"ae.{tenant}.node.dispatched.agent", dispatch.to_bytes())
            answer = await next_for(errored, lambda m: json.loads(m.data)["causationid"] == dispatch.id)
            return dict(json.loads(answer.data)["data"])
        finally:
            await nc.close()

    answer = asyncio.run(send())
    assert answer["retryable"] is False and "not a valid JSON Schema at properties/a" in answer["error"]


def test_an_event_passed_off_on_another_types_subject_never_gets_past_its_gate(engine, tenant) -> None:
    """A task.accepted (which only guardrails may publish) sent on a subject the tenant may use: the
    router dead-letters it instead of starting a task that no guardrail checked."""
    async def send() -> tuple[str, dict[str, Any]]:
        nc = await engine.connect()
        try:
            dlq = await nc.subscribe("aedlq.router.>")
            workflow = await engine.push(nc, tenant)
            bypass = forged(tenant, "task.accepted", {"workflow": workflow, "input": {"brief": "unchecked"}})
            await publish(nc, f"ae.{tenant}.node.completed", bypass.to_bytes())
            dead = await next_for(dlq, lambda m: json.loads(m.data)["id"] == bypass.id)
            return dead.headers["Ae-Error"], await engine.query(nc, "task.show", bypass.task_id)
        finally:
            await nc.close()

    error, shown = asyncio.run(send())
    assert error.startswith(f"a task.accepted event arrived on subject ae.{tenant}.node.completed; it is "
                            f"published on ae.{tenant}.task.accepted")
    assert "no task" in shown["error"]


def test_telemetry_counts_no_call_passed_off_as_another_tenants(engine, tenant) -> None:
    """Found in review: telemetry read the tenant from the envelope, so one tenant could bill another's task."""
    victim, intruder = tenant, tenant + "x"

    async def send() -> tuple[dict[str, Any], dict[str, Any]]:
        nc = await engine.connect()
        try:
            workflow = await engine.push(nc, victim)
            task_id = await engine.submit(nc, victim, workflow, {"brief": "billed honestly"})
            assert (await engine.wait_terminal(nc, [task_id]))[task_id] == "succeeded"

            async def ledger() -> dict[str, Any]:
                msg = await nc.request(f"{TELEMETRY_RPC}.ledger", json.dumps(
                    {"task_id": task_id, "tenant": victim}).encode(), timeout=5)
                return dict(json.loads(msg.data))

            await asyncio.sleep(1)  # telemetry has folded the task's own calls
            before = await ledger()
            bill = forged(victim, "llm.called", {"dispatch_id": "d", "node": "review", "provider": "anthropic",
                                                 "model": "claude-sonnet-4-5", "cost_usd": "999",
                                                 "usage": {"input_tokens": 1, "output_tokens": 1}}, task_id=task_id)
            await publish(nc, f"ae.{intruder}.llm.called", bill.to_bytes())
            await asyncio.sleep(1)
            return before, await ledger()
        finally:
            await nc.close()

    before, after = asyncio.run(send())
    assert before["calls"] > 0 and after == before
