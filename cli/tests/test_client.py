"""agentctl's one client, without a running stack: requests come from the contracts' envelope factory on the
contracts' subjects, queries go to `aerpc.<service>.<action>`."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from agent_engine.cli.client import CliError, Engine
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
    assert subject == "ae.acme.task.cancel_requested"
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
