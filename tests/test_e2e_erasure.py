"""Erasure through the whole stack (its own NATS and PostgreSQL, so every byte looked at is this test's):
tasks of a tenant run, leave a memory note and dead letters; `agentctl tenant forget` destroys the keys and
purges the streams; then none of the tenant's known input strings is found in the raw bytes of the
PostgreSQL tables (rows and relation files), the streams, the DLQ or the service logs; the services stay
up, other tenants' tasks still run, and a query about an erased task answers "erased". The per-person
variant erases one data subject's task and leaves the same tenant's other person's task readable. The stack
snapshots task states every 2 records, so the search covers snapshots too, and forget deletes them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from nats.aio.client import Client
from nats.js.api import DeliverPolicy

pytestmark = pytest.mark.e2e
MEMO = Path(__file__).parent / "workflows" / "memo"
SIDE_EFFECTS = Path(__file__).parent / "workflows" / "side-effects"


@pytest.fixture(scope="module")
def stack(own_stack: Any) -> Any:
    return own_stack(AE_SNAPSHOT_EVERY="2")


def snapshot_versions(engine: Any, task_id: str) -> list[int]:
    """The version of the task's snapshot row, if it has one (sealed; what is in it is searched with the rest)."""
    from agent_engine.runtime.audit import task_aggregate_id

    with psycopg.connect(engine.env["AE_POSTGRES_URL"], autocommit=True) as conn:
        return [int(r[0]) for r in conn.execute("SELECT version FROM router_task_snapshots WHERE aggregate = %s",
                                                (task_aggregate_id(task_id),)).fetchall()]


def secret(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex}"


async def run_memo(engine: Any, nc: Client, tenant: str, note: str, person: str | None = None) -> str:
    workflow = await engine.push(nc, tenant, MEMO)
    task_id = await engine.submit(nc, tenant, workflow, {"key": f"k{uuid.uuid4().hex[:6]}", "note": note,
                                                         "find": "nothing"}, data_subject=person)
    assert (await engine.wait_terminal(nc, [task_id]))[task_id] == "succeeded"
    return str(task_id)


async def run_side_effects(engine: Any, nc: Client, tenant: str, line: str) -> str:
    """Two side-effecting tool calls: each leaves an entry in the tool-call log (KV ae_tool_calls)."""
    workflow = await engine.push(nc, tenant, SIDE_EFFECTS)
    job = {"line": line, "abs_file": str(engine.workspace / "side-effects" / tenant / "x.log"), "sleep_s": 0}
    task_id = await engine.submit(nc, tenant, workflow, {"file": f"side-effects/{tenant}/x.log", "line": line,
                                                         "job": job})
    assert (await engine.wait_terminal(nc, [task_id]))[task_id] == "succeeded"
    return str(task_id)


async def stream_bytes(nc: Client) -> bytes:
    """Every message (subject, headers, body) of every stream: events, dead letters, KV buckets."""
    js = nc.jetstream()
    found = []
    for info in await js.streams_info():
        if not info.state.messages:
            continue
        queue: asyncio.Queue[Any] = asyncio.Queue()
        sub = await js.subscribe(">", stream=info.config.name, ordered_consumer=True, cb=queue.put,
                                 deliver_policy=DeliverPolicy.ALL)
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(queue.get(), timeout=2.0)
                except TimeoutError:
                    break
                found.append(msg.subject.encode() + json.dumps(msg.headers or {}).encode() + (msg.data or b""))
                if msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
    return b"\n".join(found)


def postgres_bytes(url: str) -> bytes:
    """Every row of every table, bytea as its bytes; plus the tables' files where this process may read them."""
    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        tables = conn.execute("SELECT c.oid::regclass::text, pg_relation_filepath(c.oid) FROM pg_class c "
                              "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                              "AND c.relkind IN ('r', 't', 'i')").fetchall()
        data_dir = Path(str(conn.execute("SHOW data_directory").fetchone()[0]))  # type: ignore[index]
        for name, _ in tables:
            if conn.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (name,)).fetchone()[0] != "r":  # type: ignore[index]
                continue
            for row in conn.execute(f"SELECT * FROM {name}").fetchall():
                out += [bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for v in row]
        toast = conn.execute("SELECT pg_relation_filepath(c.reltoastrelid) FROM pg_class c JOIN pg_namespace n "
                             "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.reltoastrelid <> 0").fetchall()
    for path in [p for _, p in tables] + [p for (p,) in toast]:
        if path is None:
            continue
        for segment in data_dir.glob(f"{path}*"):
            if os.access(segment, os.R_OK):
                out.append(segment.read_bytes())
    return b"\n".join(out)


def log_bytes(engine: Any) -> bytes:
    return b"\n".join(p.read_bytes() for p in (engine.home / "logs").glob("*.log"))


async def dead_letter(engine: Any, nc: Client, tenant: str, text: str) -> None:
    """A result naming no task of the tenant: the router dead-letters it at once (aedlq.router.<tenant>), and
    one kept the way dead letters were before they carried a tenant (aedlq.router)."""
    body = {"id": str(uuid.uuid4()), "source": "test", "type": "node.completed", "time": "2026-12-01T10:00:00Z",
            "tenant": tenant, "task_id": str(uuid.uuid4()), "correlation_id": "c",
            "data": {"dispatch_id": "d", "node": "n", "attempt": 1, "output": {"said": text}}}
    dlq = await nc.subscribe(f"aedlq.router.{tenant}")
    await nc.jetstream().publish(f"ae.{tenant}.node.completed", json.dumps(body).encode())
    await dlq.next_msg(timeout=15)
    await dlq.unsubscribe()
    await nc.jetstream().publish("aedlq.router", json.dumps({**body, "id": str(uuid.uuid4())}).encode(),
                                 headers={"Ae-Original-Subject": f"ae.{tenant}.node.completed", "Ae-Error": "old"})


def everywhere(engine: Any, nc_bytes: bytes) -> bytes:
    return nc_bytes + postgres_bytes(engine.env["AE_POSTGRES_URL"]) + log_bytes(engine)


def test_forgetting_a_tenant_leaves_none_of_its_data_readable(stack: Any) -> None:
    tenant, other = f"gone{uuid.uuid4().hex[:6]}", f"kept{uuid.uuid4().hex[:6]}"
    note, dead, email = secret("note"), secret("dead"), f"{uuid.uuid4().hex[:8]}@example.org"
    tool_line = secret("tool")
    kept_note = secret("kept")

    async def before() -> tuple[str, str, bytes]:
        nc = await stack.connect()
        try:
            task_id = await run_memo(stack, nc, tenant, f"{note} mail {email}")
            await run_side_effects(stack, nc, tenant, tool_line)
            kept = await run_memo(stack, nc, other, kept_note)
            await dead_letter(stack, nc, tenant, dead)
            return task_id, kept, await stream_bytes(nc)
        finally:
            await nc.close()

    task_id, kept, streams = asyncio.run(before())
    seen = everywhere(stack, streams)
    # the raw request is gone from the stream once guardrails answered; its redacted task.accepted stays
    assert email.encode() not in streams and b"[redacted:email]" in streams
    assert f"ae.{tenant}.task.accepted".encode() in streams and f"ae.{tenant}.task.requested".encode() not in streams
    assert note.encode() in seen and dead.encode() in seen  # the search below would find them
    assert note.encode() in postgres_bytes(stack.env["AE_POSTGRES_URL"])  # the memory note, in its table
    assert snapshot_versions(stack, task_id) and snapshot_versions(stack, kept)

    done = stack.agentctl("tenant", "forget", tenant, "--yes")
    assert done.returncode == 0, done.stderr
    assert f"forgot tenant '{tenant}'" in done.stdout
    counts = dict(re.findall(r"^\s+(.+?):\s+(\d+)$", done.stdout, re.M))
    assert int(counts["data keys destroyed"]) == 1 and int(counts["memory notes deleted"]) == 1
    assert int(counts["event stream messages purged"]) > 5 and int(counts["dead letters purged"]) == 2
    assert int(counts["tool-call log entries purged"]) == 2

    async def after() -> tuple[bytes, str]:
        nc = await stack.connect()
        try:
            again = await run_memo(stack, nc, other, secret("later"))  # other tenants' tasks still run
            fresh = await run_memo(stack, nc, tenant, secret("new"))  # and the tenant starts afresh
            return await stream_bytes(nc), f"{again} {fresh}"
        finally:
            await nc.close()

    streams, _ = asyncio.run(after())
    left = everywhere(stack, streams)
    for text in (note, dead, email, tool_line):  # (the workspace file the tool wrote is not the engine's to erase)
        assert text.encode() not in left, f"{text} is still readable after forget"
    assert kept_note.encode() in left  # the other tenant's data is untouched
    assert snapshot_versions(stack, task_id) == [] and snapshot_versions(stack, kept)  # deleted with the keys

    shown = stack.agentctl("task", "show", task_id)
    assert shown.returncode != 0 and f"task '{task_id}' was erased" in shown.stderr
    assert json.loads(stack.agentctl("task", "show", kept, "--json").stdout)["status"] == "succeeded"
    cost = stack.agentctl("cost", "--task", task_id, "--json")
    assert cost.returncode != 0 and "was erased" in cost.stderr
    assert all(row["status"] == "running" for row in json.loads(stack.agentctl("ps", "--json").stdout)
               if row["name"] not in ("nats", "postgres"))
    again = stack.agentctl("tenant", "forget", tenant, "--yes")  # idempotent; the new task's key goes too
    assert again.returncode == 0 and "data keys destroyed:" in again.stdout


def test_forgetting_one_person_leaves_the_tenants_other_person(stack: Any) -> None:
    tenant = f"ppl{uuid.uuid4().hex[:6]}"
    ada_note, bob_note = secret("ada"), secret("bob")

    async def run() -> tuple[str, str, str]:
        nc = await stack.connect()
        try:
            ada = await run_memo(stack, nc, tenant, ada_note, person="ada@example.org")
            bob = await run_memo(stack, nc, tenant, bob_note, person="customer-bob")
            plain = await run_memo(stack, nc, tenant, secret("plain"))
            return ada, bob, plain
        finally:
            await nc.close()

    ada, bob, plain = asyncio.run(run())
    done = stack.agentctl("tenant", "forget", tenant, "--person", "ada@example.org", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["keys_destroyed"] == 1 and report["task_ids"] == [ada] and report["memory_notes_deleted"] == 1
    assert report["stream_messages_purged"] > 5
    assert snapshot_versions(stack, ada) == [] and snapshot_versions(stack, bob) and snapshot_versions(stack, plain)

    async def streams() -> bytes:
        nc = await stack.connect()
        try:
            return await stream_bytes(nc)
        finally:
            await nc.close()

    left = everywhere(stack, asyncio.run(streams()))
    assert ada_note.encode() not in left and b"ada@example.org" not in left
    assert bob_note.encode() in left
    shown = stack.agentctl("task", "show", ada)
    assert shown.returncode != 0 and "was erased" in shown.stderr
    for task_id in (bob, plain):
        history = json.loads(stack.agentctl("task", "history", task_id, "--json").stdout)
        assert history[0]["type"] == "router.input"
    assert bob_note in stack.agentctl("task", "history", bob, "--json").stdout
