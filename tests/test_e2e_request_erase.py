"""A raw request on the stream's disk, after guardrails answered it (docs/data-lifecycle.md): a request holding
something its task.accepted does not carry on (a redacted e-mail address, a session id) is overwritten in
NATS's file store; one its answer carries whole is only deleted (its bytes stay in the block until the block
goes), and what it said is on disk in task.accepted anyway. Read from the server's own files, on a stack of its
own; each request sent with a `time` of its own, which only the request itself holds."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope, command
from agent_engine.contracts.events import TaskRequested
from agent_engine.contracts.subjects import STREAM, consume_subjects
from agent_engine.testkit.client import task_request

pytestmark = pytest.mark.e2e


def on_disk(store: Path, text: str) -> bool:
    return any(text.encode() in f.read_bytes() for f in store.rglob("*") if f.is_file())


def dated(envelope: Envelope, day: int) -> tuple[Envelope, str]:
    """The request sent with a `time` of its own: text that is in the request alone (no answer repeats it)."""
    dated = envelope.model_copy(update={"time": datetime(2001, 2, day, 4, 5, 6, 789012, tzinfo=UTC)})
    return dated, json.loads(dated.to_bytes())["time"]


def test_a_request_is_overwritten_on_disk_unless_its_answer_carries_all_of_it(own_stack: Any) -> None:
    engine = own_stack()
    store = engine.home.parent / "nats"  # own_stack's NATS keeps its files here
    tenant = f"t{uuid.uuid4().hex[:10]}"
    email, plain, session = (f"jane.{uuid.uuid4().hex[:8]}@example.com", f"plain-{uuid.uuid4().hex}",
                             f"chat-{uuid.uuid4().hex}")
    requests = [dated(task_request(tenant, "research-review", {"brief": f"Write to {email} today."}), 3),
                dated(task_request(tenant, "research-review", {"brief": plain}), 4),
                dated(command(TaskRequested(workflow="research-review", input={"brief": "b"}, session=session),
                              tenant=tenant, task_id=str(uuid.uuid4()), source="test"), 5)]

    async def run() -> None:
        nc = await engine.connect()
        try:
            js = nc.jetstream()
            await engine.push(nc, tenant)
            for request, _ in requests:
                await engine.publish(nc, request)
            ended = await engine.wait_terminal(nc, [r.task_id for r, _ in requests])
            assert set(ended.values()) == {"succeeded"}, ended
            for subject in consume_subjects("task.requested", tenant):  # every request answered and deleted
                info = await js.stream_info(STREAM, subjects_filter=subject)
                assert not info.state.subjects, subject
        finally:
            await nc.close()

    asyncio.run(run())
    (_, email_time), (_, plain_time), (_, session_time) = requests
    deadline = time.monotonic() + 30
    while not on_disk(store, plain_time) and time.monotonic() < deadline:  # the server writes its blocks behind
        time.sleep(0.2)
    assert on_disk(store, plain_time)  # the plain request was only deleted: its bytes are still in the block
    assert on_disk(store, plain)  # (its input is in task.accepted as well)
    assert not on_disk(store, email) and not on_disk(store, email_time)  # overwritten: a redaction
    assert not on_disk(store, session) and not on_disk(store, session_time)  # overwritten: task.accepted has no session
