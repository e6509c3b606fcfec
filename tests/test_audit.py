"""The audit chain against a real PostgreSQL and NATS: tasks written through the router's TaskStore, then
tampered with directly in SQL as someone with write access to the database would (a payload edited, a
record deleted, two records swapped, the whole chain table rewritten to match), and `agentctl audit verify`
names each; an exported bundle verifies with the standalone script under a bare Python, which also catches
an edited bundle. Each test gets a database of its own, so its tampering touches no other test."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg
import pytest

from agent_engine.cli.main import main as agentctl
from agent_engine.contracts.envelope import Envelope, command
from agent_engine.contracts.events import NodeDispatched, NodeSucceeded
from agent_engine.router.audit import AuditedRecorder, Checkpointer
from agent_engine.router.store import TaskStore
from agent_engine.runtime import audit
from agent_engine.runtime.bus import Bus

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "verify_audit_bundle.py"


@pytest.fixture
def db(postgres_url: str) -> Iterator[str]:
    """A fresh database on the session's PostgreSQL."""
    name = f"audit_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield urlparse(postgres_url)._replace(path=f"/{name}").geturl()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def store(db: str, nats_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TaskStore]:
    monkeypatch.setenv("AE_POSTGRES_URL", db)
    monkeypatch.setenv("AE_NATS_URL", nats_url)
    opened = TaskStore(db)
    yield opened
    opened.close()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    opened = await Bus.open(nats_url, "audit-test")
    yield opened
    await opened.close()


def records_of(task_id: str, count: int, start: int = 0) -> list[Envelope]:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    out: list[Envelope] = []
    for i in range(start, start + count):
        dispatch = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{task_id}/{i // 2}"))
        data: NodeDispatched | NodeSucceeded = (
            NodeDispatched(dispatch_id=dispatch, node=f"n{i}", kind="agent", attempt=1, deadline=now)
            if i % 2 == 0 else NodeSucceeded(dispatch_id=dispatch, node=f"n{i}", attempt=1, output={"text": f"out {i}"}))
        out.append(command(data, id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{task_id}#{i}")), source="audit-test",
                           tenant="acme", task_id=task_id))
    return out


def write_tasks(store: TaskStore, tasks: int = 6, records: int = 5) -> list[str]:
    """Tasks written in several transactions, each holding records of several tasks, and a second round that
    extends every task, so links run across transactions."""
    ids = [str(uuid.uuid4()) for _ in range(tasks)]
    half = records // 2
    for chunk in range(0, tasks, 4):
        store.save({t: (0, records_of(t, half)) for t in ids[chunk:chunk + 4]})
    store.save({t: (half, records_of(t, records - half, half)) for t in ids})
    return ids


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = agentctl(list(args))
    return code, out.getvalue().strip()


async def checkpoint(store: TaskStore, bus: Bus) -> audit.Checkpoint:
    recorder = store.app.recorder
    assert isinstance(recorder, AuditedRecorder)
    from agent_engine.router.audit import ensure_stream
    await ensure_stream(bus.js)
    published = await Checkpointer(bus.js, recorder, "test").publish()
    assert published is not None
    return published


FLIP = "UPDATE router_events SET state = set_byte(state, 40, get_byte(state, 40) # 1) "
"""Edit a stored payload: one bit of its (sealed) bytes."""


def sql(url: str, statement: str, *params: Any) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


def nid(url: str, task_id: str, version: int) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT notification_id FROM router_events WHERE originator_id = %s "
                           "AND originator_version = %s", (uuid.UUID(task_id), version)).fetchone()
    assert row is not None
    return int(row[0])


async def test_an_untouched_store_verifies_up_to_its_checkpoint(store: TaskStore, bus: Bus) -> None:
    ids = write_tasks(store)
    cp = await checkpoint(store, bus)
    store.save({ids[0]: (5, records_of(ids[0], 2, 5))})  # after the checkpoint

    code, out = await asyncio.to_thread(run, "audit", "verify", "--all")
    assert code == 0, out
    assert out == f"ok: 32 records of 6 tasks verified up to checkpoint {cp.position} (2 later records not yet " \
                  "checkpointed)"
    code, out = await asyncio.to_thread(run, "audit", "verify", "--task", ids[1])
    assert (code, out) == (0, f"ok: task {ids[1]}: 5 records verified up to checkpoint {cp.position}")


async def test_an_edited_payload_is_named(store: TaskStore, db: str, bus: Bus) -> None:
    ids = write_tasks(store)
    await checkpoint(store, bus)
    sql(db, FLIP + "WHERE originator_id = %s AND originator_version = 4", uuid.UUID(ids[2]))

    expected = f"broken: task {ids[2]} record 4 (notification {nid(db, ids[2], 4)}): payload does not match its hash"
    assert await asyncio.to_thread(run, "audit", "verify", "--all") == (2, expected)
    assert await asyncio.to_thread(run, "audit", "verify", "--task", ids[2]) == (2, expected)
    assert (await asyncio.to_thread(run, "audit", "verify", "--task", ids[3]))[0] == 0  # another task still proves


async def test_a_deleted_record_is_named(store: TaskStore, db: str, bus: Bus) -> None:
    ids = write_tasks(store)
    await checkpoint(store, bus)
    gone = nid(db, ids[1], 2)
    sql(db, "DELETE FROM router_events WHERE originator_id = %s AND originator_version = 2", uuid.UUID(ids[1]))

    code, out = await asyncio.to_thread(run, "audit", "verify", "--all")
    assert (code, out) == (2, f"broken: task {ids[1]} record 2 (notification {gone}) is missing: it was deleted "
                              "from the store (its link is still in the chain)")
    code, out = await asyncio.to_thread(run, "audit", "verify", "--task", ids[1])
    assert code == 2 and f"task {ids[1]} record 2 is missing" in out, out


async def test_a_record_deleted_with_its_link_is_named(store: TaskStore, db: str, bus: Bus) -> None:
    ids = write_tasks(store)
    await checkpoint(store, bus)
    gone = nid(db, ids[0], 1)
    sql(db, "DELETE FROM router_events WHERE notification_id = %s", gone)
    sql(db, "DELETE FROM router_audit_chain WHERE notification_id = %s", gone)

    code, out = await asyncio.to_thread(run, "audit", "verify", "--all")
    assert (code, out) == (2, f"broken: task {ids[0]} record 1 is missing (before record 2, notification "
                              f"{nid(db, ids[0], 2)}): deleted from the store")


async def test_two_swapped_records_are_named(store: TaskStore, db: str, bus: Bus) -> None:
    ids = write_tasks(store)
    await checkpoint(store, bus)
    a, b = nid(db, ids[4], 3), nid(db, ids[4], 4)
    sql(db, "UPDATE router_events SET notification_id = -1 WHERE notification_id = %s", a)
    sql(db, "UPDATE router_events SET notification_id = %s WHERE notification_id = %s", a, b)
    sql(db, "UPDATE router_events SET notification_id = %s WHERE notification_id = -1", b)

    code, out = await asyncio.to_thread(run, "audit", "verify", "--all")
    assert (code, out) == (2, f"broken: notification {a} holds task {ids[4]} record 4, but the chain has task "
                              f"{ids[4]} record 3 there: records were reordered")
    code, out = await asyncio.to_thread(run, "audit", "verify", "--task", ids[4])
    assert (code, out) == (2, f"broken: task {ids[4]} record 3 (notification {b}) was linked at notification {a}: "
                              "records were reordered")


async def test_swapped_payloads_name_the_record_each_came_from(store: TaskStore, db: str, bus: Bus) -> None:
    ids = write_tasks(store)
    await checkpoint(store, bus)
    task = uuid.UUID(ids[5])
    sql(db, "UPDATE router_events e SET state = o.state, topic = o.topic FROM router_events o "
            "WHERE e.originator_id = %s AND o.originator_id = e.originator_id "
            "AND ((e.originator_version = 1 AND o.originator_version = 2) "
            "OR (e.originator_version = 2 AND o.originator_version = 1))", task)

    code, out = await asyncio.to_thread(run, "audit", "verify", "--all")
    assert (code, out) == (2, f"broken: task {task} record 1 (notification {nid(db, ids[5], 1)}) holds what was "
                              "stored as record 2: records were reordered")


def rewrite_chain(url: str, from_position: int) -> None:
    """What someone who knows the algorithm and can write to PostgreSQL would do after editing a record: compute
    every link again from there on, so the chain table agrees with the records."""
    with psycopg.connect(url, autocommit=True) as conn:
        head = audit.ZERO
        tasks: dict[uuid.UUID, bytes] = {}
        rows = conn.execute("SELECT c.position, c.notification_id, e.originator_id, e.originator_version, e.topic, "
                            "e.state, c.global_link FROM router_audit_chain c JOIN router_events e "
                            "USING (notification_id) ORDER BY c.position").fetchall()
        for position, notification, originator, version, topic, state, stored in rows:
            content = audit.record_hash(topic, bytes(state))
            linked = audit.task_link(tasks.get(originator, audit.ZERO), originator, version, notification, content)
            tasks[originator] = linked
            head = audit.global_link(head, position, notification, originator, linked)
            if position >= from_position:
                conn.execute("UPDATE router_audit_chain SET record_hash = %s, task_link = %s, global_link = %s "
                             "WHERE position = %s", (content, linked, head, position))
            else:
                assert head == bytes(stored)


async def test_a_consistently_rewritten_chain_is_caught_by_its_checkpoint(store: TaskStore, db: str,
                                                                          bus: Bus) -> None:
    ids = write_tasks(store)
    early = await checkpoint(store, bus)
    store.save({ids[3]: (5, records_of(ids[3], 3, 5))})
    late = await checkpoint(store, bus)
    target = nid(db, ids[3], 6)
    sql(db, FLIP + "WHERE notification_id = %s", target)
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT position FROM router_audit_chain WHERE notification_id = %s", (target,)).fetchone()
    assert row is not None
    rewrite_chain(db, row[0])

    code, out = await asyncio.to_thread(run, "audit", "verify", "--all")
    assert code == 2, out
    assert out.startswith(f"broken: the chain at position {late.position} differs from checkpoint {late.position} ")
    assert f"stream sequence {late.stream_sequence}" in out
    assert f"the rewritten records are since checkpoint {early.position} (which still matches)" in out
    code, out = await asyncio.to_thread(run, "audit", "verify", "--task", ids[3])
    assert code == 2 and f"differs from checkpoint {late.position}" in out, out


async def test_records_removed_from_the_end_are_caught_by_the_checkpoint(store: TaskStore, db: str,
                                                                          bus: Bus) -> None:
    write_tasks(store)
    cp = await checkpoint(store, bus)
    sql(db, "DELETE FROM router_events WHERE notification_id = %s", cp.notification_id)
    sql(db, "DELETE FROM router_audit_chain WHERE position = %s", cp.position)

    code, out = await asyncio.to_thread(run, "audit", "verify", "--all")
    assert (code, out[:60]) == (2, f"broken: checkpoint {cp.position} (published {cp.time}) is past the end"[:60])


async def test_without_a_checkpoint_the_chain_is_reported_unanchored(store: TaskStore) -> None:
    write_tasks(store, tasks=2)
    code, out = await asyncio.to_thread(run, "audit", "verify")
    assert code == 3 and out.startswith("unanchored: 10 records of 2 tasks verified; no checkpoint covers them yet"), out


async def test_records_from_before_the_chain_are_reported_not_covered(store: TaskStore, db: str, bus: Bus) -> None:
    ids = write_tasks(store, tasks=2)
    # as if written by an earlier version: the chain table did not exist; then the router is upgraded
    sql(db, "DELETE FROM router_audit_chain")
    store.close()
    store = TaskStore(db)
    store.save({ids[0]: (5, records_of(ids[0], 2, 5))})
    cp = await checkpoint(store, bus)
    store.close()
    code, out = await asyncio.to_thread(run, "audit", "verify", "--all")
    assert (code, out) == (0, f"ok: 2 records of 1 task verified up to checkpoint {cp.position}; 10 records stored "
                              "before the audit chain began are not covered")
    assert cp.position == 2
    code, out = await asyncio.to_thread(run, "audit", "verify", "--task", ids[0])
    assert code == 0 and "5 records stored before the audit chain began are not covered" in out, out


def bare_python(*args: str) -> subprocess.CompletedProcess[str]:
    """The standalone script under an isolated interpreter with no site-packages: the standard library only."""
    return subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=60, cwd="/")


async def test_an_exported_bundle_verifies_offline_and_an_edited_one_does_not(store: TaskStore, db: str, bus: Bus,
                                                                            tmp_path: Path) -> None:
    ids = write_tasks(store)
    store.save({ids[0]: (5, records_of(ids[0], 1, 5))})
    cp = await checkpoint(store, bus)
    store.save({ids[1]: (5, records_of(ids[1], 1, 5))})  # past the checkpoint: not in the bundle's segment
    path = tmp_path / "bundle.json"

    code, out = await asyncio.to_thread(run, "audit", "export", "--task", ids[0], "-o", str(path))
    assert code == 0 and out.startswith(f"wrote {path}: 6 records of task {ids[0]}, anchored at checkpoint "
                                        f"{cp.position}"), out
    checked = bare_python(str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith(f"ok: task {ids[0]}: 6 records verified up to checkpoint {cp.position}, "
                                     f"head {cp.head}")
    bundle = json.loads(path.read_text())
    assert not any(ids[n] in path.read_text() for n in range(1, 6))  # no other task is named

    def edited(change: Any) -> subprocess.CompletedProcess[str]:
        copy = json.loads(json.dumps(bundle))
        change(copy)
        target = tmp_path / "edited.json"
        target.write_text(json.dumps(copy))
        return bare_python(str(target))

    def edit_payload(b: dict[str, Any]) -> None:
        import base64
        r = b["records"][1]
        state = bytearray(base64.b64decode(r["state"]))
        state[-1] ^= 1
        r["state"] = base64.b64encode(bytes(state)).decode()

    result = edited(edit_payload)
    assert (result.returncode, result.stdout.strip()) == (
        1, f"broken: task {ids[0]} record 2 (notification {bundle['records'][1]['notification_id']}): payload does "
           "not match its hash")
    result = edited(lambda b: (b["records"].pop(), b["links"].pop()))  # hide the task's last record
    assert result.returncode == 1 and "a record of the task is left out" in result.stdout, result.stdout

    def hide_last(b: dict[str, Any]) -> None:
        """Leave out the last record, with a true global segment from the new last link, read from the store."""
        b["records"].pop()
        b["links"].pop()
        with psycopg.connect(db) as conn:
            rows = conn.execute("SELECT position, notification_id, originator_id, task_link, global_link "
                                "FROM router_audit_chain WHERE position >= %s - 1 AND position <= %s ORDER BY position",
                                (b["links"][-1]["position"], cp.position)).fetchall()
        b["segment"] = {"before": bytes(rows[0][4]).hex(), "links": [
            {"position": p, "notification_id": n, "owner": audit.owner(o, p).hex(), "task_link": bytes(t).hex(),
             "global_link": bytes(g).hex()} for p, n, o, t, g in rows[1:]]}
    result = edited(hide_last)
    assert result.returncode == 1 and result.stdout.strip() == (
        f"broken: chain position {cp.position} holds a record of task {ids[0]} that the bundle leaves out")
    result = edited(lambda b: b["checkpoint"].update(head="00" * 32))
    assert result.returncode == 1 and "does not reach checkpoint" in result.stdout
    result = edited(lambda b: b["records"].reverse())
    assert result.returncode == 0  # order in the file does not matter; versions do
    result = edited(lambda b: (b["records"][0].update(version=2), b["records"][1].update(version=1)))
    assert result.returncode == 1 and "broken: task" in result.stdout



async def test_two_routers_writing_at_once_make_one_chain(store: TaskStore, db: str, bus: Bus) -> None:
    """Two stores (as two routers) commit concurrently: the table lock orders their transactions, so the global
    chain has no fork and no gap, and each router's checkpoint is a head of that one chain."""
    other = TaskStore(db)
    try:
        def write(s: TaskStore, n: int) -> None:
            for _ in range(n):
                task = str(uuid.uuid4())
                s.save({task: (0, records_of(task, 2))})
                s.save({task: (2, records_of(task, 2, 2))})

        await asyncio.gather(asyncio.to_thread(write, store, 25), asyncio.to_thread(write, other, 25))
        first, second = await checkpoint(store, bus), await checkpoint(other, bus)
        assert {first.position, second.position} <= set(range(1, 201)) and max(first.position, second.position) == 200
    finally:
        other.close()
    code, out = await asyncio.to_thread(run, "audit", "verify", "--all")
    assert (code, out) == (0, "ok: 200 records of 50 tasks verified up to checkpoint 200")


async def test_the_checkpointer_publishes_on_its_own_and_at_stop(store: TaskStore, bus: Bus) -> None:
    recorder = store.app.recorder
    assert isinstance(recorder, AuditedRecorder)
    stop = asyncio.Event()
    loop = asyncio.create_task(Checkpointer(bus.js, recorder, "test", every_records=10, every_s=3600).run(stop, 0.05))
    write_tasks(store, tasks=2)  # 10 records: one checkpoint due
    for _ in range(100):
        if (await asyncio.to_thread(run, "audit", "verify"))[0] == 0:
            break
        await asyncio.sleep(0.1)
    late = str(uuid.uuid4())
    store.save({late: (0, records_of(late, 1))})  # one more: not due until stop
    stop.set()
    await loop
    assert await asyncio.to_thread(run, "audit", "verify") == (0, "ok: 11 records of 3 tasks verified up to "
                                                                   "checkpoint 11")


async def test_a_forgotten_tenant_still_verifies(store: TaskStore, db: str, bus: Bus) -> None:
    """Erasure destroys the tenant's data key and edits no row: the chain covers the sealed bytes, so it still
    verifies, and proves the unreadable records are the ones stored."""
    ids = write_tasks(store, tasks=3)
    cp = await checkpoint(store, bus)
    destroyed = store.keyring.destroy("acme")
    assert set(destroyed.task_ids) == set(ids)
    assert await asyncio.to_thread(run, "audit", "verify") == (0, f"ok: 15 records of 3 tasks verified up to "
                                                                   f"checkpoint {cp.position}")
    code, out = await asyncio.to_thread(run, "audit", "verify", "--task", ids[0])
    assert code == 0, out
