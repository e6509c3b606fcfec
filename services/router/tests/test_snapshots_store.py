"""Snapshots in a real PostgreSQL: a task of thousands of records is rebuilt from its snapshot and the records
after it, equal to the fold of them all; a snapshot that is missing, older, newer than the history, on another
history, unreadable or from other code only costs a full fold; erasure leaves no readable snapshot; and replay,
history and the audit still read every record."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from router_testkit import Run, accepted, completed, linear_workflow

from agent_engine.contracts.envelope import Envelope, command, derive_id
from agent_engine.contracts.events import NodeCompleted, NodeDispatched, NodeSucceeded
from agent_engine.router import snapshots, views
from agent_engine.router.core import fold
from agent_engine.router.datakeys import KeyDestroyed
from agent_engine.router.erasure import forget
from agent_engine.router.records import RouterInput
from agent_engine.router.snapshots import Snapshot
from agent_engine.router.store import TaskStore, aggregate_uuid

pytestmark = pytest.mark.integration
EVERY = 200


@pytest.fixture
def store(postgres_url: str) -> Iterator[TaskStore]:
    opened = TaskStore(postgres_url, snapshot_every=EVERY)
    yield opened
    opened.close()


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def long_history(tenant: str, length: int) -> list[Envelope]:
    """A task the router started (its manifest, nodes, applied inputs), then `length` more records: applied
    results and the decisions they made, as the store holds them."""
    task_id = str(uuid.uuid4())
    run = Run()
    run.feed(accepted(linear_workflow(), {"topic": "long"}, id=f"accept-{task_id}", task_id=task_id, tenant=tenant))
    run.feed(result(run, "start", tenant))
    records = list(run.records)
    assert records[-1].type == "node.dispatched" and records[-1].data["node"] == "middle"
    first = records[-1]
    for i in range(length):
        dispatch_id, attempt = derive_id(task_id, i // 3), 2 + i // 3
        data: Any = (NodeDispatched(dispatch_id=dispatch_id, node="middle", kind="agent", attempt=attempt,
                                    deadline=first.time + timedelta(seconds=i))
                     if i % 3 == 1 else NodeSucceeded(dispatch_id=dispatch_id, node="middle", attempt=attempt,
                                                      output={"i": i}) if i % 3 == 2 else None)
        if data is None:  # the applied input the two decisions after it follow
            event = command(NodeCompleted(dispatch_id=dispatch_id, node="middle", attempt=attempt, output={"i": i}),
                            id=derive_id(task_id, "in", i), source="test", tenant=tenant, task_id=task_id)
            records.append(first.model_copy(update={"id": derive_id(task_id, "input", i), "type": "router.input",
                                                    "data": {"input": event.to_wire(), "workflow": None}}))
            continue
        records.append(command(data, id=derive_id(task_id, "rec", i), source="test", tenant=tenant,
                               task_id=task_id))
    return records


def result(run: Run, node: str, tenant: str) -> RouterInput:
    """The runner's answer to the node's open dispatch, from the task's tenant."""
    inp = completed(run.dispatch(node), id=f"done-{run.state.task_id}-{node}")
    return replace(inp, event=inp.event.model_copy(update={"tenant": tenant}))


def save_as_the_router(store: TaskStore, records: list[Envelope], batch: int = 7) -> None:
    """Commit in batches with the state after each, as the router's shell does."""
    task_id = records[0].task_id
    state = fold([])
    for start in range(0, len(records), batch):
        chunk = records[start:start + batch]
        state = fold(chunk, state)
        store.save({task_id: (start, chunk)}, {task_id: state})


def row(postgres_url: str, task_id: str) -> dict[str, Any] | None:
    return snapshots.stored(postgres_url, aggregate_uuid(task_id))


def full_fold_forbidden(store: TaskStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(task_id: str) -> list[Envelope]:
        raise AssertionError("load read every record although a snapshot was there")
    monkeypatch.setattr(store, "records", refuse)


def test_a_task_of_thousands_of_records_is_rebuilt_from_its_snapshot(store: TaskStore, tenant: str,
                                                                     postgres_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    records = long_history(tenant, 3000)
    task_id = records[0].task_id
    save_as_the_router(store, records)
    whole = fold(store.records(task_id))
    assert whole.version == len(records) and len(whole.applied) > 1000
    found = row(postgres_url, task_id)
    assert found is not None and len(records) - EVERY < found["version"] <= len(records)
    assert found["version"] % EVERY < 7  # written by the save that crossed the multiple
    assert b"long" not in found["state"] and b"middle" not in found["state"]  # sealed, like the records

    fresh = TaskStore(postgres_url, snapshot_every=EVERY)  # another process: nothing cached
    try:
        full_fold_forbidden(fresh, monkeypatch)
        assert fresh.load(task_id) == whole
    finally:
        fresh.close()


@pytest.mark.parametrize("first", ["snapshot", "records"])
def test_a_state_read_from_its_snapshot_shares_the_manifest_its_records_pin(
        store: TaskStore, tenant: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch, first: str) -> None:
    from agent_engine.router import manifests

    records = long_history(tenant, 400)
    save_as_the_router(store, records)
    monkeypatch.setattr(manifests, "_kept", {})  # as in a router just started
    fresh = TaskStore(postgres_url, snapshot_every=EVERY)
    try:
        full_fold_forbidden(fresh, monkeypatch)
        if first == "records":
            pinned = fold(records[:2]).manifest  # another task that pinned the same manifest, folded first
            loaded = fresh.load(records[0].task_id)
        else:
            loaded = fresh.load(records[0].task_id)
            pinned = fold(records[:2]).manifest
    finally:
        fresh.close()
    assert loaded.manifest == linear_workflow()
    assert pinned is loaded.manifest  # one object, however the first of them was read


def test_every_state_along_the_way_loads_equal_to_the_full_fold(postgres_url: str, tenant: str) -> None:
    small = TaskStore(postgres_url, snapshot_every=5)
    try:
        records = long_history(tenant, 60)
        task_id = records[0].task_id
        state = fold([])
        for start in range(0, len(records), 3):
            chunk = records[start:start + 3]
            state = fold(chunk, state)
            small.save({task_id: (start, chunk)}, {task_id: state})
            assert small.load(task_id) == fold(small.records(task_id)) == state
    finally:
        small.close()


def test_a_snapshot_that_cannot_be_used_costs_a_full_fold_only(store: TaskStore, tenant: str,
                                                               postgres_url: str) -> None:
    records = long_history(tenant, 450)
    task_id = records[0].task_id
    save_as_the_router(store, records)
    whole = fold(records)
    aggregate = aggregate_uuid(task_id)

    def set_row(sql: str, *params: Any) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql, (*params, aggregate))

    # unreadable: its ciphertext changed
    set_row("UPDATE router_task_snapshots SET state = overlay(state placing '\\xff'::bytea from 60) "
            "WHERE aggregate = %s")
    assert store.snapshots.read(aggregate) is None
    assert store.load(task_id) == whole
    assert store.snapshots.read(aggregate) is not None  # the load replaced it: only one full fold
    # written by other code (another build of the router)
    set_row("UPDATE router_task_snapshots SET fingerprint = '\\x00'::bytea WHERE aggregate = %s")
    assert store.snapshots.read(aggregate) is None
    assert store.load(task_id) == whole  # and the load wrote a usable one again
    assert store.snapshots.read(aggregate) is not None
    # ahead of the stored history (a restored backup of the records, say), and on another history
    ahead = fold(records + records[-3:])
    set_row("DELETE FROM router_task_snapshots WHERE aggregate = %s")
    assert store.snapshots.write(aggregate, Snapshot(ahead.version, "not stored", ahead))
    assert store.load(task_id) == whole
    replaced = row(postgres_url, task_id)  # by the load, although its version is lower
    assert replaced is not None and replaced["version"] == len(records)
    wrong = fold(records[:300])
    set_row("DELETE FROM router_task_snapshots WHERE aggregate = %s")
    assert store.snapshots.write(aggregate, Snapshot(300, records[123].id, wrong))
    assert store.load(task_id) == whole
    # older than the latest: more records to fold, the same state
    set_row("DELETE FROM router_task_snapshots WHERE aggregate = %s")
    assert store.snapshots.write(aggregate, Snapshot(300, records[299].id, wrong))
    assert store.load(task_id) == whole
    # none at all
    set_row("DELETE FROM router_task_snapshots WHERE aggregate = %s")
    assert store.load(task_id) == whole
    # a newer one is never replaced by an older one
    latest = row(postgres_url, task_id)
    assert latest is not None and latest["version"] == len(records)
    assert store.snapshots.write(aggregate, Snapshot(300, records[299].id, wrong))
    assert row(postgres_url, task_id) == latest


def test_no_snapshots_when_turned_off(postgres_url: str, tenant: str) -> None:
    off = TaskStore(postgres_url, snapshot_every=0)
    try:
        records = long_history(tenant, 400)
        save_as_the_router(off, records, batch=50)
        assert off.load(records[0].task_id) == fold(records)
        assert row(postgres_url, records[0].task_id) is None
    finally:
        off.close()


def test_erasure_leaves_no_readable_snapshot(store: TaskStore, tenant: str, postgres_url: str) -> None:
    records = long_history(tenant, 400)
    task_id = records[0].task_id
    save_as_the_router(store, records)
    kept = row(postgres_url, task_id)
    assert kept is not None

    store.keyring.destroy(tenant)  # the key alone: the snapshot, like the records, no longer opens
    fresh = TaskStore(postgres_url, snapshot_every=EVERY)
    try:
        with pytest.raises(KeyDestroyed):
            fresh.snapshots.read(aggregate_uuid(task_id))
        with pytest.raises(KeyDestroyed):
            fresh.load(task_id)
    finally:
        fresh.close()

    other = f"o{tenant}"
    survivor = long_history(other, 400)
    save_as_the_router(store, survivor)
    answer = forget(store.keyring, postgres_url, tenant, None)  # what `agentctl tenant forget` asks the router
    assert answer["tasks_erased"] == 1
    assert row(postgres_url, task_id) is None  # and the row is gone
    assert row(postgres_url, survivor[0].task_id) is not None  # another tenant's stays
    assert store.load(survivor[0].task_id) == fold(survivor)


def test_replay_and_history_still_read_every_record(store: TaskStore, tenant: str, postgres_url: str) -> None:
    run = Run()
    task_id = str(uuid.uuid4())
    run.feed(accepted(linear_workflow(), id=f"accept-{task_id}", task_id=task_id, tenant=tenant))
    for node in ("start", "middle", "finish"):
        assert run.feed(result(run, node, tenant))
    small = TaskStore(postgres_url, snapshot_every=2)
    try:
        state = fold([])
        for i, record in enumerate(run.records):
            state = fold([record], state)
            small.save({task_id: (i, [record])}, {task_id: state})
        assert row(postgres_url, task_id) is not None
        stored = small.records(task_id)
        assert stored == run.records  # history: every record, not the snapshot
        report = views.replay_report(stored)  # what `agentctl task replay` asks
        assert report["identical"] is True and report["stored"] == report["replayed"] == len(run.records)
        assert small.load(task_id) == run.state
    finally:
        small.close()
