"""Contract v2 on the running stack: every message of a task on the JetStream stream is a CloudEvent the
official SDK reads, naming a payload schema it satisfies; and clients still on contract v1 are served."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cloudevents.core.bindings.http import to_binary
from cloudevents.core.formats.json import JSONFormat
from nats.js.api import ConsumerConfig, DeliverPolicy

from agent_engine.contracts.envelope import CONTRACT_VERSION, Envelope
from agent_engine.contracts.subjects import partition_subject, subject_for, tenant_subject
from agent_engine.testkit.client import task_request

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parent.parent
SCHEMAS = {s["$id"]: s for s in (json.loads(p.read_text()) for p in (ROOT / "contracts" / "schemas").glob("*.json"))
           if "$id" in s}
V1_GOLDEN = ROOT / "contracts" / "tests" / "golden" / "v1"
EXTENSIONS = {"tenant", "taskid", "correlationid", "causationid", "schemaversion"}


async def stream_of(engine: Any, tenant: str) -> list[tuple[str, bytes]]:
    """Every message the stream holds for `tenant` (each test has a tenant of its own), in stream order."""
    nc = await engine.connect()
    try:
        sub = await nc.jetstream().subscribe(tenant_subject(tenant), ordered_consumer=True,
                                             config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
        out = []
        while True:
            msg = await sub.next_msg(timeout=10)
            out.append((msg.subject, msg.data))
            if msg.metadata.num_pending == 0:
                return out
    finally:
        await nc.close()


def test_every_message_of_a_task_is_a_cloudevent_the_sdk_reads(engine, tenant) -> None:
    status, history = asyncio.run(engine.run_to_end(tenant, {"brief": "Compare event stores."}))
    assert status == "succeeded"
    task_id = history[0].task_id
    messages = asyncio.run(stream_of(engine, tenant))
    types = [json.loads(body)["type"] for _, body in messages]
    # the raw request is deleted from the stream once guardrails answered it (docs/data-lifecycle.md)
    assert types[0] == "task.accepted" and {"node.dispatched", "llm.called", "task.succeeded"} <= set(types)
    assert len(messages) >= 30
    for subject, body in messages:
        event = JSONFormat().read(None, body)
        wire = json.loads(body)
        assert event.get_extension("taskid") == task_id and event.get_extension("tenant") == tenant, subject
        assert event.get_extension("schemaversion") == CONTRACT_VERSION
        assert set(wire) - {"specversion", "id", "source", "type", "time", "datacontenttype", "dataschema",
                            "data"} <= EXTENSIONS
        assert None not in wire.values(), f"{subject}: a null attribute"
        jsonschema.validate(event.get_data(), SCHEMAS[event.get_dataschema()])  # the schema it names


def v1_request(tenant: str, workflow: str) -> dict[str, Any]:
    """A task.requested exactly as the v1 docs taught another system to build it by hand."""
    task_id = str(uuid.uuid4())
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "billing-system", "type": "task.requested",
            "time": datetime.now(UTC).isoformat(), "subject": None, "tenant": tenant, "task_id": task_id,
            "correlation_id": task_id, "causation_id": None, "schema_version": 1,
            "data": {"workflow": workflow, "input": {"brief": "Compare event stores."},
                     "requested_by": "billing-system"}}


def test_a_v1_client_request_on_the_bare_subject_runs_to_the_end(engine, tenant) -> None:
    async def run() -> tuple[str, list[Envelope]]:
        nc = await engine.connect()
        try:
            workflow = await engine.push(nc, tenant)
            body = v1_request(tenant, workflow)
            await nc.jetstream().publish(f"ae.{tenant}.task.requested", json.dumps(body).encode(),
                                         headers={"Nats-Msg-Id": body["id"], "Ae-Task-Id": body["task_id"]})
            done = await engine.wait_terminal(nc, [body["task_id"]])
            return done[body["task_id"]], await engine.history(nc, body["task_id"])
        finally:
            await nc.close()

    status, history = asyncio.run(run())
    assert status == "succeeded"
    accepted = history[0].data["input"]
    assert accepted["type"] == "task.accepted" and accepted["schemaversion"] == CONTRACT_VERSION


def test_a_v1_dispatch_is_run_by_the_agent_runner_and_answered_in_v2(engine, tenant) -> None:
    """As if a v1 router had published it just before the upgrade and it waited in the stream."""
    dispatch = json.loads((V1_GOLDEN / "node.dispatched.json").read_text())
    dispatch.update(id=str(uuid.uuid4()), tenant=tenant, task_id=str(uuid.uuid4()), time=datetime.now(UTC).isoformat())
    dispatch["data"]["deadline"] = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()

    async def send() -> bytes:
        nc = await engine.connect()
        try:
            completed = await nc.subscribe(partition_subject("node.completed", tenant))
            await nc.jetstream().publish(f"ae.{tenant}.node.dispatched.agent", json.dumps(dispatch).encode(),
                                         headers={"Nats-Msg-Id": dispatch["id"]})
            while True:
                msg = await completed.next_msg(timeout=30)
                if json.loads(msg.data).get("causationid") == dispatch["id"]:
                    return bytes(msg.data)
        finally:
            await nc.close()

    answer = JSONFormat().read(None, asyncio.run(send()))
    assert answer.get_extension("taskid") == dispatch["task_id"]
    assert answer.get_data()["output"] == {"verdict": "approve"}


def test_a_request_in_binary_content_mode_runs_to_the_end(engine, tenant) -> None:
    """Attributes as `ce-` headers and the body only the data, encoded by the official SDK (its HTTP binding's
    binary mode, the header mapping the NATS binding shares)."""
    async def run() -> tuple[str, list[Envelope]]:
        nc = await engine.connect()
        try:
            workflow = await engine.push(nc, tenant)
            request = task_request(tenant, workflow, {"brief": "Compare event stores."})
            message = to_binary(JSONFormat().read(None, request.to_bytes()), JSONFormat())
            await nc.jetstream().publish(subject_for(request), message.body,
                                         headers={**message.headers, "Nats-Msg-Id": request.id})
            done = await engine.wait_terminal(nc, [request.task_id])
            return done[request.task_id], await engine.history(nc, request.task_id)
        finally:
            await nc.close()

    status, history = asyncio.run(run())
    assert status == "succeeded"
    assert history[0].data["input"]["data"]["requested_by"] == "agent-engine-testkit"
