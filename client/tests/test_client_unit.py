"""The client without a server: who a connection acts as, how a task's stored history reads as its events, and
how following merges stored and live events (each once, in order, ending after the last)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent_engine.client import (
    ClientError,
    ClientTimeout,
    ConnectError,
    Outcome,
    RequestRejected,
    TaskEvents,
    connect,
    identity,
    published,
)
from agent_engine.client.connection import _submitted
from agent_engine.contracts.credentials import Credential
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.subjects import subject_for

SEED = "SUAK5RZ5ARH54DUDHECCLIEV3AWJKP7AC6BXASINKNV7IP4OJIRXKCEV4M"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def event(type_: str, seconds: int = 0, task_id: str = "task-1", **data: Any) -> Envelope:
    return Envelope(id=f"{type_}-{task_id}-{seconds}", source="test", type=type_, time=T0 + timedelta(seconds=seconds),
                    tenant="acme", task_id=task_id, correlation_id=task_id, data=data)


def credential(**kw: Any) -> Credential:
    return Credential(**{"kind": "tenant", "tenant": "acme", "user": "billing", "role": "submitter", "seed": SEED, **kw})


# --- who a connection acts as -------------------------------------------------------------------

def test_a_tenant_credential_names_the_tenant_and_the_sender() -> None:
    assert identity(credential(), None, None) == ("acme", "billing")
    assert identity(credential(), "acme", "ignored") == ("acme", "billing")  # the credential's user, always


def test_without_a_credential_the_tenant_must_be_named() -> None:
    assert identity(None, "acme", None) == ("acme", "client")
    assert identity(None, "acme", "billing") == ("acme", "billing")
    with pytest.raises(ClientError, match="name the tenant"):
        identity(None, None, None)


def test_a_credential_of_another_tenant_or_bad_names_are_refused_with_the_reason() -> None:
    with pytest.raises(ClientError, match="the credential is tenant 'acme's, not tenant 'beta's"):
        identity(credential(), "beta", None)
    with pytest.raises(ClientError, match="not a tenant name"):
        identity(None, "a.b", None)
    with pytest.raises(ClientError, match="is not a sender name"):
        identity(None, "acme", "two words")


def test_a_platform_credential_acts_for_the_tenant_it_names() -> None:
    platform = Credential(kind="platform", user="ops", seed=SEED)
    assert identity(platform, "acme", None) == ("acme", "ops")


async def test_an_unreadable_credential_file_is_named_without_connecting(tmp_path: Path) -> None:
    with pytest.raises(ConnectError, match="cannot read credential file"):
        await connect("nats://127.0.0.1:1", tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "tenant", "user": "billing", "seed": "not a seed"}))
    with pytest.raises(ConnectError, match=r"is not an Agent Engine credential \(check: seed\)"):
        await connect("nats://127.0.0.1:1", bad)


async def test_no_server_reads_as_a_connect_error_naming_the_url_and_who() -> None:
    with pytest.raises(ConnectError, match=r"cannot connect to NATS at nats://127.0.0.1:1 as acme/client within "
                                           r"1s: .*Connect call failed"):
        await connect("nats://127.0.0.1:1", tenant="acme", connect_timeout=1)


async def test_a_cluster_is_given_as_a_list_or_with_commas_and_a_malformed_list_is_named() -> None:
    assert connect(" nats://127.0.0.1:1 , nats://127.0.0.1:2", tenant="acme").servers == [
        "nats://127.0.0.1:1", "nats://127.0.0.1:2"]
    assert connect(["nats://127.0.0.1:1", "nats://127.0.0.1:2"], tenant="acme").url == (
        "nats://127.0.0.1:1,nats://127.0.0.1:2")
    with pytest.raises(ClientError, match=r"url='nats://127.0.0.1:1,' has an empty item \(number 2\)"):
        connect("nats://127.0.0.1:1,", tenant="acme")
    with pytest.raises(ConnectError, match=r"cannot connect to NATS at nats://127.0.0.1:1,nats://127.0.0.1:2 as "
                                           r"acme/client within 1s"):
        await connect("nats://127.0.0.1:1,nats://127.0.0.1:2", tenant="acme", connect_timeout=1)


# --- answers and outcomes ------------------------------------------------------------------------

def test_the_engines_first_answer_says_how_a_request_began() -> None:
    assert _submitted("task-1", event("task.accepted")) is None
    started = _submitted("task-1", event("task.started"))
    assert started is not None and (started.task_id, started.status, started.deduplicated) == ("task-1", "started",
                                                                                                 False)
    queued = _submitted("task-1", event("task.queued", reason="queued at position 2 of 3"))
    assert queued is not None and queued.status == "queued" and queued.reason == "queued at position 2 of 3"
    repeat = _submitted("task-2", event("task.deduplicated", task_id="task-2", original_task_id="task-1",
                                        idempotency_key="k"))
    assert repeat is not None and (repeat.task_id, repeat.request_task_id, repeat.deduplicated) == (
        "task-1", "task-2", True)
    with pytest.raises(RequestRejected, match="task task-1 rejected by router: unknown workflow 'x'") as refused:
        _submitted("task-1", event("task.rejected", stage="router", reason="unknown workflow 'x'"))
    assert (refused.value.stage, refused.value.reason) == ("router", "unknown workflow 'x'")


def test_an_outcome_reads_the_last_event() -> None:
    done = Outcome.of(event("task.succeeded", status="succeeded", exit_node="approved", reason="reached EXIT"))
    assert (done.status, done.succeeded, done.exit_node, done.reason) == ("succeeded", True, "approved", "reached EXIT")
    assert Outcome.of(event("task.cancelled", reason="stop")).status == "cancelled"


def test_stored_records_read_as_the_events_that_were_published() -> None:
    accepted = event("task.accepted", 1, workflow="wf")
    records = [
        event("router.input", 1, input=accepted.model_dump(mode="json")),
        event("task.started", 1),
        event("subtask.requested", 2, task_id="sub-1"),  # addressed to another task
        event("router.input", 3, input=event("node.deadline_expired", 3).model_dump(mode="json")),  # internal
        event("node.dispatched", 3),
    ]
    assert [(e.type, e.id) for e in published("task-1", records)] == [
        ("task.accepted", accepted.id), ("task.started", "task.started-task-1-1"),
        ("node.dispatched", "node.dispatched-task-1-3")]


# --- following -------------------------------------------------------------------------------------

class FakeNats:
    """Just enough of a NATS connection for TaskEvents: one subscription whose callback a test drives."""

    def __init__(self) -> None:
        self.subjects: list[str] = []
        self.deliver: Callable[[Any], Awaitable[None]] | None = None

    async def subscribe(self, subject: str, cb: Callable[[Any], Awaitable[None]]) -> Any:
        self.subjects.append(subject)
        self.deliver = cb
        fake = self

        class Sub:
            async def unsubscribe(self) -> None:
                fake.deliver = None

        return Sub()

    async def send(self, envelope: Envelope, subject: str | None = None) -> None:
        assert self.deliver is not None

        class Msg:
            data = envelope.to_bytes()

        Msg.subject = subject or subject_for(envelope)  # type: ignore[attr-defined]
        await self.deliver(Msg)


async def test_following_yields_stored_then_live_events_once_each_and_ends_after_the_last() -> None:
    nc = FakeNats()
    stored = [event("task.started", 1), event("node.dispatched", 2, node="a", kind="agent")]

    async def history(task_id: str) -> list[Envelope]:
        assert nc.deliver is not None, "the subscription must come before the history is read"
        await nc.send(stored[1])  # published while the history was being read: in both
        return stored

    async with TaskEvents(nc, "acme", "task-1", history) as events:  # type: ignore[arg-type]
        assert nc.subjects == ["ae.acme.>"]
        await nc.send(event("node.completed", 3, task_id="task-other"))  # another task
        await nc.send(event("tenant.key_claimed", 3, idempotency_key="k"))  # the router's own bookkeeping
        await nc.send(event("task.succeeded", 4, status="succeeded"), subject="ae.acme.task.requested.mallory")
        await nc.send(event("node.completed", 3))
        await nc.send(event("task.succeeded", 4, status="succeeded"))
        seen = [e.type async for e in events]
    assert seen == ["task.started", "node.dispatched", "node.completed", "task.succeeded"]
    assert nc.deliver is None  # unsubscribed


async def test_following_with_an_idle_timeout_names_the_task() -> None:
    async with TaskEvents(FakeNats(), "acme", "task-9", None, idle_timeout=0.05) as events:  # type: ignore[arg-type]
        with pytest.raises(ClientTimeout, match="no news of task task-9 for 0.05s"):
            await anext(events)


async def test_a_deduplicated_request_id_ends_its_own_events() -> None:
    nc = FakeNats()
    async with TaskEvents(nc, "acme", "task-2", None) as events:  # type: ignore[arg-type]
        await nc.send(event("task.accepted", 1, task_id="task-2", workflow="wf"))
        await nc.send(event("task.deduplicated", 2, task_id="task-2", original_task_id="task-1",
                            idempotency_key="k"))
        seen = [e.type async for e in events]
        await asyncio.sleep(0)
    assert seen == ["task.accepted", "task.deduplicated"]
