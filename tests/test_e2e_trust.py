"""The bus is a trust boundary, end to end on the real stack: every connection authenticates, the server
refuses what a credential may not do, and a tenant's credential sees and changes only its own tenant."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from agent_engine.contracts.credentials import Credential, load_credential
from agent_engine.contracts.envelope import command
from agent_engine.contracts.events import NodeCompleted, TaskAccepted, TaskRequested
from agent_engine.contracts.subjects import ROUTER_RPC, TELEMETRY_RPC, rpc_subject, subject_for, type_subject
from agent_engine.runtime.auth import new_seed
from agent_engine.runtime.bus import auth_options
from agent_engine.runtime.keyring import KEYRING_ENV, Keyring

pytestmark = pytest.mark.e2e
WORKFLOW = "tests/workflows/approval"


class Session:
    """A raw nats-py connection with a credential, recording what the server refuses."""

    def __init__(self, url: str, credential: Credential | None) -> None:
        self.url, self.credential = url, credential
        self.errors: list[str] = []

    async def __aenter__(self) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = await nats.connect(self.url, error_cb=on_error, allow_reconnect=False,
                                     **auth_options(self.credential))
        return self.nc

    async def __aexit__(self, *exc: object) -> None:
        if not self.nc.is_closed:
            await self.nc.close()


def keyring(engine: Any) -> Keyring:
    return Keyring(Path(engine.env[KEYRING_ENV]))


async def refused_publish(session: Session, nc: Client, subject: str, body: bytes = b"{}") -> bool:
    """A JetStream publish the server refuses: no ack comes, and the server says why."""
    try:
        await nc.jetstream().publish(subject, body, timeout=1.5)
        return False
    except Exception:  # noqa: BLE001  nats' timeout: the message never reached the stream
        await asyncio.sleep(0.1)
        return any(f'publish to "{subject}"'.lower() in e.lower() for e in session.errors)


def test_each_service_may_publish_only_its_own_events_and_read_only_its_own_consumer(engine: Any, tenant: str) -> None:
    ring = keyring(engine)
    task = str(uuid.uuid4())
    accepted = command(TaskAccepted(workflow="approval"), tenant=tenant, task_id=task, source="forger")
    completed = command(NodeCompleted(dispatch_id="d", node="n", attempt=1, output={}), tenant=tenant, task_id=task, source="forger")

    async def go() -> None:
        for service, forged in (("tool-runner", accepted), ("telemetry", completed), ("router", completed),
                                ("guardrails", completed)):
            session = Session(engine.nats_url, load_credential(ring.service(service)))
            async with session as nc:
                assert await refused_publish(session, nc, subject_for(forged), forged.to_bytes()), service
        # a runner cannot take the other runner's dispatches: creating (or reading) its consumer is refused
        session = Session(engine.nats_url, load_credential(ring.service("tool-runner")))
        async with session as nc:
            with pytest.raises(Exception):  # noqa: B017  nats' timeout: the API request never arrived
                await nc.request("$JS.API.CONSUMER.MSG.NEXT.AE_EVENTS.agent-runner", b"1", timeout=1.5)
            await asyncio.sleep(0.1)
            assert any("$JS.API.CONSUMER.MSG.NEXT.AE_EVENTS.agent-runner".lower() in e for e in session.errors)

    asyncio.run(go())
    shown = json.loads(engine.agentctl("task", "show", task, "--json").stdout or "{}")
    assert shown.get("status") is None  # no forged event made a task


def test_a_tenant_credential_submits_follows_and_asks_about_its_own_tasks_only(engine: Any, tenant: str) -> None:
    assert engine.agentctl("workflow", "push", "examples/research-review", "--tenant", tenant).returncode == 0
    billing = engine.credential(tenant, "billing", "submitter")
    sub = engine.agentctl("--credential", billing, "submit", "research-review", "--input", '{"brief": "who may do what"}')
    assert sub.returncode == 0, sub.stderr
    task_id = sub.stdout.strip()
    engine.wait_for_status(task_id, "succeeded")
    shown = json.loads(engine.agentctl("--credential", billing, "task", "show", task_id, "--json").stdout)
    assert shown["status"] == "succeeded"
    history = json.loads(engine.agentctl("--credential", billing, "task", "history", task_id, "--json").stdout)
    assert '"requested_by": "billing"' in json.dumps(history)  # the accepted request, as the router recorded it
    tail = engine.agentctl("--credential", billing, "tail", "--all", "--no-follow", "--json")
    assert tail.returncode == 0, tail.stderr
    tenants = {json.loads(line)["tenant"] for line in tail.stdout.splitlines()}
    assert tenants == {tenant}

    # the same task, asked about by another tenant's credential: not there
    other = engine.credential(f"{tenant}x", "peeker", "viewer")
    peek = engine.agentctl("--credential", other, "task", "show", task_id)
    assert peek.returncode == 1 and f"no task '{task_id}'" in peek.stderr and f"for tenant '{tenant}x'" in peek.stderr
    cost = engine.agentctl("--credential", other, "cost", "--task", task_id, "--json")
    ledger = json.loads(cost.stdout)
    assert cost.returncode == 0 and ledger["calls"] == 0 and ledger["call_log"] == []  # the owner's has calls
    own = json.loads(engine.agentctl("--credential", billing, "cost", "--task", task_id, "--json").stdout)
    assert own["calls"] > 0
    refused = engine.agentctl("--credential", other, "submit", "research-review", "--tenant", tenant)
    assert refused.returncode == 1 and "may act for tenant" in refused.stderr


def test_a_tenant_credential_cannot_reach_another_tenants_subjects_or_the_unscoped_queries(engine: Any,
                                                                                           tenant: str) -> None:
    credential = load_credential(engine.credential(tenant, "mallory", "operator"))
    victim = f"{tenant}v"
    forged = command(TaskRequested(workflow="approval", requested_by="mallory"), tenant=victim,
                     task_id=str(uuid.uuid4()), source="mallory")
    impersonated = command(TaskRequested(workflow="approval", requested_by="alice"), tenant=tenant,
                           task_id=str(uuid.uuid4()), source="mallory")

    async def go() -> None:
        session = Session(engine.nats_url, credential)
        async with session as nc:
            assert await refused_publish(session, nc, subject_for(forged), forged.to_bytes())
            assert await refused_publish(session, nc, subject_for(impersonated), impersonated.to_bytes())
            assert await refused_publish(session, nc, f"ae.{tenant}.task.accepted")
            await nc.subscribe(f"ae.{victim}.>")
            await nc.subscribe("_INBOX_SVC.router.>")
            for subject in (rpc_subject(ROUTER_RPC, "task.show"), rpc_subject(ROUTER_RPC, "task.show", victim),
                            rpc_subject(TELEMETRY_RPC, "ledger")):
                with pytest.raises(Exception):  # noqa: B017  refused: no answer comes
                    await nc.request(subject, b'{"task_id": "x"}', timeout=1.0)
            await asyncio.sleep(0.2)
        joined = "\n".join(session.errors)  # nats-py reports the server's errors in lower case
        for subject in (f"ae.{victim}.>", "_INBOX_SVC.router.>"):
            assert f'subscription to "{subject}"'.lower() in joined
        assert f'publish to "{rpc_subject(ROUTER_RPC, "task.show", victim)}"' in joined

    asyncio.run(go())


def test_roles_viewer_cannot_submit_submitter_cannot_cancel_operator_can(engine: Any, tenant: str) -> None:
    assert engine.agentctl("workflow", "push", WORKFLOW, "--tenant", tenant).returncode == 0
    viewer = engine.credential(tenant, "auditor", "viewer")
    denied = engine.agentctl("--credential", viewer, "submit", "approval", "--input", '{"folder": "examples"}')
    assert denied.returncode == 1 and "was not stored" in denied.stderr and "permissions violation" in denied.stderr

    submitter = engine.credential(tenant, "billing", "submitter")
    sub = engine.agentctl("--credential", submitter, "submit", "approval", "--input", '{"folder": "examples"}')
    assert sub.returncode == 0, sub.stderr
    task_id = sub.stdout.strip()
    engine.wait_for_status(task_id, "waiting")
    for attempt in (("approve", task_id, "listing"), ("task", "cancel", task_id)):
        no = engine.agentctl("--credential", submitter, *attempt)
        assert no.returncode == 1 and "was not stored" in no.stderr, attempt
    assert engine.agentctl("--credential", viewer, "task", "show", task_id).returncode == 0

    operator = engine.credential(tenant, "olga", "operator")
    yes = engine.agentctl("--credential", operator, "task", "cancel", task_id, "--reason", "enough")
    assert yes.returncode == 0, yes.stderr
    cancelled = engine.wait_for_status(task_id, "cancelled")
    history = json.loads(engine.agentctl("task", "history", task_id, "--json").stdout)
    assert next(e for e in history if e["type"] == "task.cancelled")["data"]["requested_by"] == "olga"
    assert cancelled["status"] == "cancelled"


def test_wrong_revoked_and_missing_credentials_are_refused(engine: Any, tenant: str, tmp_path: Path) -> None:
    path = engine.credential(tenant, "leaver", "viewer")
    credential = load_credential(path)

    async def revoked_while_connected() -> bool:
        session = Session(engine.nats_url, credential)
        async with session as nc:
            await nc.flush()
            await asyncio.to_thread(keyring(engine).revoke, tenant, "leaver")
            for _ in range(50):
                if nc.is_closed or not nc.is_connected:
                    return True
                await asyncio.sleep(0.1)
            return False

    assert asyncio.run(revoked_while_connected())  # the reload closed its connection
    path_copy = tmp_path / "leaver.json"
    path_copy.write_text(credential.model_dump_json())
    again = engine.agentctl("--credential", str(path_copy), "task", "show", "x")
    assert again.returncode == 1 and "refused credential" in again.stderr and "revoked" in again.stderr

    forged = tmp_path / "forged.json"
    forged.write_text(Credential(kind="tenant", tenant=tenant, user="leaver", role="admin",
                                 seed=new_seed()).model_dump_json())
    wrong = engine.agentctl("--credential", str(forged), "task", "show", "x")
    assert wrong.returncode == 1 and "refused credential" in wrong.stderr

    broken = tmp_path / "broken.json"
    broken.write_text('{"kind": "tenant"}')
    bad = engine.agentctl("--credential", str(broken), "task", "show", "x")
    assert bad.returncode == 1 and "is not an Agent Engine credential" in bad.stderr and "seed" in bad.stderr

    async def anonymous() -> str:
        try:
            await nats.connect(engine.nats_url, allow_reconnect=False, connect_timeout=2)
        except Exception as exc:  # noqa: BLE001
            return str(exc)
        return "connected"

    assert "authorization violation" in asyncio.run(anonymous()).lower()


def test_a_tenant_admin_issues_and_revokes_its_own_tenants_credentials_through_the_authority(
        engine: Any, tenant: str, tmp_path: Path) -> None:
    admin = engine.credential(tenant, "root", "admin")
    out = tmp_path / "newbie.json"
    made = engine.agentctl("--credential", admin, "tenant", "add", tenant, "--user", "newbie", "--role", "viewer",
                           "--out", str(out))
    assert made.returncode == 0, made.stderr
    newbie = load_credential(out)
    assert (newbie.tenant, newbie.user, newbie.role) == (tenant, "newbie", "viewer")
    listed = json.loads(engine.agentctl("--credential", admin, "tenant", "list", "--json").stdout)
    assert {e["user"] for e in listed} == {"root", "newbie"} and all(e["tenant"] == tenant for e in listed)
    assert not any("seed" in e for e in listed)
    asked = engine.agentctl("--credential", str(out), "task", "show", "nope")
    assert asked.returncode == 1 and "no task 'nope'" in asked.stderr  # it connects, as a viewer of its tenant

    # an admin manages its own tenant only, and a lesser role may not ask the authority at all
    elsewhere = engine.agentctl("--credential", admin, "tenant", "add", f"{tenant}z", "--user", "x",
                                "--out", str(tmp_path / "x.json"))
    assert elsewhere.returncode == 1 and "may manage tenant" in elsewhere.stderr
    operator = engine.credential(tenant, "olga", "operator")
    denied = engine.agentctl("--credential", operator, "tenant", "add", tenant, "--user", "y",
                             "--out", str(tmp_path / "y.json"))
    assert denied.returncode == 1 and "permissions violation" in denied.stderr and not (tmp_path / "y.json").exists()

    async def forge() -> list[str]:
        session = Session(engine.nats_url, load_credential(admin))
        async with session as nc:
            with pytest.raises(Exception):  # noqa: B017  refused: no answer comes
                await nc.request(f"aerpc.tenant.{tenant}z.auth.credential.add", b"{}", timeout=1.0)
            await asyncio.sleep(0.1)
        return session.errors

    assert any("permissions violation" in e for e in asyncio.run(forge()))

    revoked = engine.agentctl("--credential", admin, "tenant", "revoke", tenant, "--user", "newbie")
    assert revoked.returncode == 0, revoked.stderr
    gone = engine.agentctl("--credential", str(out), "task", "show", "nope")
    assert gone.returncode == 1 and "refused credential" in gone.stderr


def test_the_documented_way_another_system_publishes_a_request_works_as_written(engine: Any) -> None:
    """docs/events.md's nats-py example, run as printed (only the server URL and the file path replaced)."""
    text = (Path(__file__).parent.parent / "docs" / "events.md").read_text()
    section = text[text.index("## Publishing a task request from your own system"):]
    code = section[section.index("```python\n") + len("```python\n"):]
    code = code[:code.index("```")]
    assert engine.agentctl("workflow", "push", "examples/research-review", "--tenant", "default").returncode == 0
    cred = engine.credential("default", "billing-system", "submitter")
    code = code.replace('"nats://127.0.0.1:4222"', repr(engine.nats_url)).replace('open("billing.json")',
                                                                                   f"open({cred!r})")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[-1] == "outcome: task.succeeded", ran.stdout


def test_a_hostile_tenants_burst_on_every_subject_it_may_publish_is_answered_and_leaks_nothing(
        engine: Any, tenant: str) -> None:
    """An operator credential (the widest a tenant gets but admin) sends malformed messages on each subject it
    may publish: every request is refused (task.rejected) or dead-lettered with a reason, every query gets an
    error answer, no service stops, and another tenant's task runs as if nothing happened."""
    credential = load_credential(engine.credential(tenant, "mallory", "operator"))
    other = f"{tenant}o"
    assert engine.agentctl("workflow", "push", "examples/research-review", "--tenant", other).returncode == 0
    before = engine.pids()
    task = str(uuid.uuid4())
    envelope = command(TaskRequested(workflow="research-review", requested_by="mallory"), tenant=tenant,
                       task_id=task, source="mallory").to_wire()
    bodies = [b"", b"\xff\xfe", b"[]", b"null", b'{"specversion": "1.0"}', b"{" * 5000 + b"}" * 5000,
              *(json.dumps({**envelope, "id": str(uuid.uuid4()), **change}).encode() for change in (
                  {"tenant": other},           # another tenant's name inside
                  {"type": "task.accepted"},   # an internal type passed off as a request
                  {"data": {"workflow": 7}},
                  {"schemaversion": 99}))]
    # (each its own event id: the engine answers one request id once, however often it is sent)
    commands = [f"{type_subject(t, tenant)}.mallory" for t in
                ("task.requested", "task.cancel_requested", "task.fork_requested", "node.approval_decided")]
    queries = [rpc_subject(ROUTER_RPC, a, tenant) for a in ("task.show", "task.history", "task.replay",
                                                             "task.fork_plan", "no.such")]
    queries.append(rpc_subject(TELEMETRY_RPC, "ledger", tenant))

    async def burst() -> tuple[int, list[Any]]:
        session = Session(engine.nats_url, credential)
        async with session as nc:
            js = nc.jetstream()
            stored = 0
            for subject in commands:
                for i, body in enumerate(bodies):
                    headers = {"Nats-Msg-Id": f"{subject}-{i}-{uuid.uuid4()}"}
                    await js.publish(subject, body, headers=headers, timeout=10)
                    stored += 1
            answers = []
            for subject in queries:
                for body in (b"\xff", b"[]", b'{"task_id": 5}',
                             json.dumps({"task_id": task, "tenant": other}).encode()):
                    try:
                        answers.append(json.loads((await nc.request(subject, body, timeout=10)).data))
                    except Exception as exc:  # noqa: BLE001
                        raise AssertionError(f"no answer on {subject} to {body!r}: {exc!r}") from None
            return stored, answers

    for _ in range(100):  # a fresh stack: the router answers queries once it has read its store
        if "no task" in engine.agentctl("task", "show", task).stderr:
            break
        time.sleep(0.1)
    stored, answers = asyncio.run(burst())
    # an error, or (the ledger of a task id with no calls in the asker's scope) a line of zeros; never the other's
    assert all("error" in a or (a.get("calls") == 0 and other not in json.dumps(a)) for a in answers), answers

    admin = load_credential(keyring(engine).admin)

    async def count(stream: str, subject: str) -> int:
        """Messages on `subject` of `stream`, read by the platform credential."""
        nc = await nats.connect(engine.nats_url, **auth_options(admin))
        try:
            sub = await nc.jetstream().subscribe(subject, ordered_consumer=True, stream=stream)
            n = 0
            while True:
                try:
                    await sub.next_msg(timeout=0.5)
                except Exception:  # noqa: BLE001  nats' timeout: no more
                    return n
                n += 1
        finally:
            await nc.close()

    deadline = time.monotonic() + 60
    dead = rejected = 0
    while time.monotonic() < deadline:
        dead = asyncio.run(count("AE_DLQ", f"aedlq.*.{tenant}"))
        rejected = asyncio.run(count("AE_EVENTS", type_subject("task.rejected", tenant)))
        if dead + rejected >= stored:
            break
        time.sleep(1)
    assert dead + rejected >= stored, (dead, rejected, stored)
    assert engine.pids() == before  # no service stopped or restarted
    # nothing of the burst landed as the other tenant's: no event, no dead letter (its workflow is checked by
    # the task below, which runs on it)
    assert asyncio.run(count("AE_EVENTS", f"ae.{other}.>")) == 0
    assert asyncio.run(count("AE_DLQ", f"aedlq.*.{other}")) == 0

    sub = engine.agentctl("submit", "research-review", "--tenant", other, "--input", json.dumps({"brief": "calm"}))
    assert sub.returncode == 0, sub.stderr
    engine.wait_for_status(sub.stdout.strip(), "succeeded")


def test_a_reply_subject_cannot_make_a_service_write_on_another_tenants_subjects(engine: Any, tenant: str) -> None:
    """A query's reply subject is the asker's to choose; the services answer only on an inbox of the query's
    tenant, so a viewer cannot have the router overwrite another tenant's workflow or forge its events."""
    victim = f"{tenant}w"
    assert engine.agentctl("workflow", "push", "examples/research-review", "--tenant", victim).returncode == 0
    viewer = load_credential(engine.credential(tenant, "peeker", "viewer"))
    targets = [f"$KV.ae_workflows.{victim}.research-review", type_subject("task.accepted", victim),
               "aerpc.router.tenant.forgotten", "aerpc.router.tenant.forget"]
    queries = [rpc_subject(ROUTER_RPC, "task.show", tenant), rpc_subject(TELEMETRY_RPC, "ledger", tenant)]

    async def go() -> None:
        session = Session(engine.nats_url, viewer)
        async with session as nc:
            for query in queries:
                for target in targets:
                    await nc.publish(query, b'{"task_id": "x", "tenant": "' + victim.encode() + b'"}', reply=target)
            await nc.flush()
            await asyncio.sleep(1.0)

    asyncio.run(go())
    admin = load_credential(keyring(engine).admin)

    async def check() -> None:
        nc = await nats.connect(engine.nats_url, **auth_options(admin))
        try:
            kv = await nc.jetstream().key_value("ae_workflows")
            entry = await kv.get(f"{victim}.research-review")
            assert json.loads(entry.value)["manifest"]["name"] == "research-review"  # still the victim's workflow
            info = await nc.jetstream().stream_info("AE_EVENTS", subjects_filter=f"ae.{victim}.>")
            assert not info.state.subjects  # nothing was published as the victim
        finally:
            await nc.close()

    asyncio.run(check())
    # the victim's tasks still run on the untouched workflow
    sub = engine.agentctl("submit", "research-review", "--tenant", victim, "--input", json.dumps({"brief": "still"}))
    assert sub.returncode == 0, sub.stderr
    engine.wait_for_status(sub.stdout.strip(), "succeeded")
