"""The client on a nats-server that authenticates every connection by nkey and gives a tenant's credential only
its own rights: it publishes its requests under its own name (JetStream-confirmed through its inbox prefix),
asks the tenant-scoped queries, and follows its tenant's events. Another system's part of the engine is played
here by a connection with a service credential, so no engine runs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nkeys
import pytest
from nats.js.api import StreamConfig

from agent_engine.client import Client, ClientTimeout, ConnectError, Unavailable, connect
from agent_engine.contracts.credentials import Credential
from agent_engine.contracts.envelope import Envelope, caused_by
from agent_engine.contracts.events import TaskStarted, TaskSucceeded
from agent_engine.contracts.subjects import (
    ROUTER_RPC,
    STREAM,
    STREAM_SUBJECTS,
    rpc_subject,
    tenant_inbox,
    tenant_subject,
    type_subject,
)
from agent_engine.runtime.embedded import free_port, nats_binary

pytestmark = pytest.mark.integration
TENANT, USER = "acme", "billing"


def new_seed() -> str:
    return nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()


def public_key(seed: str) -> str:
    return str(nkeys.from_seed(bytearray(seed.encode())).public_key.decode())


@dataclass
class Server:
    url: str
    tenant: Credential
    service: Credential


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("nats-auth")
    tenant = Credential(kind="tenant", tenant=TENANT, user=USER, role="submitter", seed=new_seed())
    service = Credential(kind="service", user="engine", seed=new_seed())
    tenant_rights = {
        "publish": {"allow": [f"{type_subject('task.requested', TENANT)}.{USER}",
                              rpc_subject(ROUTER_RPC, ">", TENANT)]},
        "subscribe": {"allow": [tenant_subject(TENANT), f"{tenant_inbox(TENANT, USER)}.>"]},
    }
    users = [{"nkey": public_key(tenant.seed), "permissions": tenant_rights},
             {"nkey": public_key(service.seed)}]
    port = free_port()
    conf = root / "nats.conf"
    conf.write_text(json.dumps({"listen": f"127.0.0.1:{port}", "jetstream": {"store_dir": str(root / "js")},
                                "authorization": {"users": users}}))
    log = open(root / "nats.log", "ab")  # closed when the server stops
    proc = subprocess.Popen([nats_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield Server(f"nats://127.0.0.1:{port}", tenant, service)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
async def engine_side(server: Server) -> AsyncIterator[Any]:
    """The engine's part: the stream, a router that answers task.show, and guardrails+router answering each
    request with task.started."""
    nc = await nats.connect(server.url, nkeys_seed_str=server.service.seed, inbox_prefix=server.service.inbox,
                            connect_timeout=5)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=STREAM, subjects=STREAM_SUBJECTS))

    async def start(msg: Any) -> None:  # ... and, as the workflow is a quick one, finish it
        request = Envelope.from_bytes(msg.data)
        started = caused_by(request, {"workflow": request.data["workflow"]}, id=f"{request.id}-started",
                            source="engine", type=TaskStarted.TYPE)
        await js.publish(type_subject("task.started", TENANT), started.to_bytes())
        done = caused_by(request, TaskSucceeded(status="succeeded", exit_node="done", reason="reached EXIT node 'done'"),
                         id=f"{request.id}-done", source="engine")
        await js.publish(type_subject("task.succeeded", TENANT), done.to_bytes())

    async def show(msg: Any) -> None:
        await msg.respond(json.dumps({"task_id": json.loads(msg.data)["task_id"], "status": "running",
                                      "asked_on": msg.subject}).encode())

    await nc.subscribe(f"{type_subject('task.requested', TENANT)}.*", cb=start)
    await nc.subscribe(rpc_subject(ROUTER_RPC, "task.show", TENANT), cb=show)
    yield nc
    await js.delete_stream(STREAM)
    await nc.close()


async def test_a_tenant_credential_submits_under_its_own_name_and_asks_about_its_tenant(
        server: Server, engine_side: Any, tmp_path: Path) -> None:
    path = tmp_path / "acme-billing.cred.json"
    path.write_text(server.tenant.model_dump_json())
    async with connect(server.url, path) as engine:
        assert (engine.tenant, engine.user) == (TENANT, USER)
        submitted = await engine.submit("research-review", {"brief": "hi"}, idempotency_key="k-1", timeout=10)
        assert submitted.status == "started" and submitted.event.type == "task.started"
        shown = await engine.show(submitted.task_id)
        assert shown["asked_on"] == f"aerpc.tenant.{TENANT}.router.task.show"


async def test_what_the_credential_may_not_publish_is_refused_by_the_server_and_named(
        server: Server, engine_side: Any) -> None:
    engine: Client = await connect(server.url, server.tenant)
    try:
        engine.user = "someone-else"  # a request in another sender's name: the server drops it
        with pytest.raises(ClientTimeout, match="the server said: nats: permissions violation for publish"):
            await engine.submit("research-review", timeout=2)
    finally:
        await engine.close()


async def test_a_credential_the_server_does_not_know_cannot_connect(server: Server) -> None:
    stranger = Credential(kind="tenant", tenant=TENANT, user=USER, role="submitter", seed=new_seed())
    with pytest.raises(ConnectError, match=r"as acme/billing within 3s: .*[Aa]uthorization"):
        await connect(server.url, stranger, connect_timeout=3)


async def test_with_no_engine_running_a_request_and_a_query_say_so(server: Server) -> None:
    async with connect(server.url, server.tenant) as engine:
        with pytest.raises(ClientTimeout, match=r"the server did not confirm the request on "
                                                r"ae\.acme\.task\.requested\.billing within 2s: is the engine running"):
            await engine.submit("research-review", timeout=2)
        with pytest.raises(Unavailable, match=r"the router service is not running \(no answer on "
                                              r"aerpc\.tenant\.acme\.router\.task\.show\)"):
            await engine.show("t-1")


async def test_a_nodejs_system_connects_with_the_same_credential_file(server: Server, engine_side: Any,
                                                                      node_example: Path, tmp_path: Path) -> None:
    path = tmp_path / "acme-billing.cred.json"
    path.write_text(server.tenant.model_dump_json())
    ran = await asyncio.to_thread(subprocess.run, [
        "node", "submit-and-follow.mjs", "--server", server.url, "--creds", str(path), "--workflow",
        "research-review", "--timeout", "20"], cwd=node_example, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = [json.loads(line) for line in ran.stdout.splitlines()]
    assert lines[0]["published"] == f"{type_subject('task.requested', TENANT)}.{USER}" and lines[0]["seq"] >= 1
    assert [line["type"] for line in lines[1:]] == ["task.requested", "task.started", "task.succeeded"]
