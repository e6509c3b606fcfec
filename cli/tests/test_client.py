"""agentctl's one client, without a running stack: requests come from the contracts' envelope factory on the
contracts' subjects, queries go to `aerpc.<service>.<action>`, and `task fork` prints the router's plan."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from agent_engine.cli.client import CliError, Engine
from agent_engine.cli.commands import tasks
from agent_engine.cli.main import main
from agent_engine.contracts.credentials import Credential
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import TaskCancelRequested
from agent_engine.contracts.subjects import ROUTER_RPC
from agent_engine.runtime.bus import MSG_ID, TASK_ID_HEADER


class FakeNats:
    """Records what is published and asked; answers every query with `answer`."""

    max_payload = 1048576

    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.answer = answer or {}
        self.published: list[tuple[str, bytes, dict[str, str]]] = []
        self.asked: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        self.published.append((subject, body, headers))

    async def request(self, subject: str, body: bytes, timeout: float) -> Any:
        self.asked.append((subject, json.loads(body)))
        return SimpleNamespace(data=json.dumps(self.answer).encode())


def engine(fake: FakeNats) -> Engine:
    return Engine(fake, fake)  # type: ignore[arg-type]


async def test_a_request_is_built_by_the_factory_and_published_on_its_subject() -> None:
    fake = FakeNats()
    sent = await engine(fake).send(TaskCancelRequested(reason="enough", requested_by="agentctl"), tenant="acme",
                                   task_id="task-1")
    [(subject, body, headers)] = fake.published
    assert subject == "ae.acme.task.cancel_requested.agentctl"  # the sender is the last token
    assert headers == {MSG_ID: sent.id, TASK_ID_HEADER: "task-1"}
    envelope = Envelope.from_bytes(body)
    assert (envelope.source, envelope.type, envelope.correlation_id) == ("agentctl", "task.cancel_requested", "task-1")
    assert envelope.data == {"reason": "enough", "requested_by": "agentctl"}  # no null fields


async def test_a_request_over_the_servers_message_limit_is_refused_before_publishing() -> None:
    fake = FakeNats()
    with pytest.raises(CliError, match=r"^request is 1\.2 MiB, over this NATS server's 1\.0 MiB message limit$"):
        await engine(fake).send(TaskCancelRequested(requested_by="y" * 1_250_000), tenant="acme", task_id="task-1")
    assert fake.published == []


async def test_a_query_goes_to_the_services_rpc_subject_and_an_error_answer_raises() -> None:
    fake = FakeNats({"error": "no task 'nope' in the router's store"})
    with pytest.raises(CliError, match=r"^no task 'nope' in the router's store$"):
        await engine(fake).query(ROUTER_RPC, "task.show", {"task_id": "nope"})
    assert fake.asked == [("aerpc.router.task.show", {"task_id": "nope"})]


ACME_BILLING = Credential(kind="tenant", tenant="acme", user="billing", role="viewer", seed="SU" + "A" * 56)


async def test_a_tenant_credential_asks_on_its_tenants_scoped_subject_and_acts_for_that_tenant_only() -> None:
    fake = FakeNats({"status": "running"})
    scoped = Engine(fake, fake, ACME_BILLING)  # type: ignore[arg-type]
    await scoped.query(ROUTER_RPC, "task.show", {"task_id": "t1"})
    assert fake.asked == [("aerpc.tenant.acme.router.task.show", {"task_id": "t1"})]
    assert scoped.sender == "billing" and scoped.tenant(None) == "acme" and scoped.tenant("acme") == "acme"
    with pytest.raises(CliError, match=r"^credential acme/billing may act for tenant 'acme' only, not 'other'$"):
        scoped.tenant("other")


def fork_with(monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any]) -> FakeNats:
    fake = FakeNats(answer)

    @asynccontextmanager
    async def connect() -> AsyncIterator[Engine]:
        yield engine(fake)

    monkeypatch.setattr(tasks, "connect", connect)
    return fake


def test_fork_prints_the_routers_plan(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake = fork_with(monkeypatch, {"task_id": "src", "tenant": "acme", "cut": 10, "risky": []})
    assert main(["task", "fork", "src", "--at", "8", "--dry-run"]) == 0
    assert fake.asked == [("aerpc.router.task.fork_plan", {"task_id": "src", "at": 8, "live": False})]
    assert capsys.readouterr().err == ("fork of src: copies records 1-10 (to the end of the decision record 8 "
                                       "belongs to); agent steps reuse the outputs the task recorded\n")
    assert fake.published == []


def test_fork_with_side_effecting_steps_needs_yes(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    fake = fork_with(monkeypatch, {"task_id": "src", "tenant": "acme", "cut": 3,
                                   "risky": ["file", "scribe (its model may call journal)"]})
    assert main(["task", "fork", "src", "--at", "3", "--live"]) == 1
    assert fake.asked[0][1]["live"] is True
    assert capsys.readouterr().err.splitlines() == [
        "fork of src: copies records 1-3; agent steps call the model again (--live)",
        "tool steps with side effects that may run again: file, scribe (its model may call journal)",
        "nothing was forked; pass --yes to run them"]
    assert fake.published == []


def test_fork_the_router_refuses_exits_1_with_its_reason(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    fake = fork_with(monkeypatch, {"error": "cannot fork task src: it is a fork; fork the original task orig instead"})
    assert main(["task", "fork", "src", "--at", "2"]) == 1
    assert capsys.readouterr().err == "agentctl: cannot fork task src: it is a fork; fork the original task orig instead\n"
    assert fake.published == []


def test_a_malformed_cluster_url_list_is_named_before_connecting(monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AE_HOME", str(tmp_path))
    monkeypatch.setenv("AE_NATS_URL", "nats://n1:4222,,nats://n3:4222")
    assert main(["task", "show", "some-task"]) == 1
    assert capsys.readouterr().err == ("agentctl: AE_NATS_URL='nats://n1:4222,,nats://n3:4222' has an empty item "
                                       "(number 2): separate URLs with single commas, with no comma at either end\n")
