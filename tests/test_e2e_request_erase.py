"""A raw request on the stream's disk, after guardrails answered it (docs/data-lifecycle.md): a request holding
something its task.accepted does not carry on (a redacted e-mail address, a session id) is overwritten in
NATS's file store; one its answer carries whole is only deleted, and what it said is on disk in task.accepted.
Read from the server's own files, on a stack of its own."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent_engine.contracts.envelope import command
from agent_engine.contracts.events import TaskRequested
from agent_engine.contracts.subjects import STREAM, consume_subjects

pytestmark = pytest.mark.e2e


def on_disk(store: Path, text: str) -> bool:
    return any(text.encode() in f.read_bytes() for f in store.rglob("*") if f.is_file())


def test_a_request_is_overwritten_on_disk_unless_its_answer_carries_all_of_it(own_stack: Any) -> None:
    engine = own_stack()
    store = engine.home.parent / "nats"  # own_stack's NATS keeps its files here
    tenant = f"t{uuid.uuid4().hex[:10]}"
    email, plain, session = (f"jane.{uuid.uuid4().hex[:8]}@example.com", f"plain-{uuid.uuid4().hex}",
                             f"chat-{uuid.uuid4().hex}")

    async def run() -> None:
        nc = await engine.connect()
        try:
            js = nc.jetstream()
            workflow = await engine.push(nc, tenant)
            ids = [await engine.submit(nc, tenant, workflow, {"brief": f"Write to {email} today."}),
                   await engine.submit(nc, tenant, workflow, {"brief": plain})]
            with_session = command(TaskRequested(workflow=workflow, input={"brief": "b"}, session=session),
                                   tenant=tenant, task_id=str(uuid.uuid4()), source="test")
            await engine.publish(nc, with_session)
            ids.append(with_session.task_id)
            ended = await engine.wait_terminal(nc, ids)
            assert set(ended.values()) == {"succeeded"}, ended
            for subject in consume_subjects("task.requested", tenant):  # every request answered and deleted
                info = await js.stream_info(STREAM, subjects_filter=subject)
                assert not info.state.subjects, subject
        finally:
            await nc.close()

    asyncio.run(run())
    deadline = time.monotonic() + 30
    while not on_disk(store, plain) and time.monotonic() < deadline:  # the server writes its blocks behind
        time.sleep(0.2)
    assert on_disk(store, plain)  # in task.accepted (and the request's own bytes, only deleted): the files are read
    assert not on_disk(store, email)  # task.accepted holds the redacted text; the request was overwritten
    assert not on_disk(store, session)  # task.accepted carries no session; the request was overwritten
