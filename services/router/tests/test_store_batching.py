"""The store's per-batch shortcuts, in a real PostgreSQL: a batch's new tasks are found with one query and
start from nothing, while a task with records is still loaded from the store; the keys that seal a batch's
tasks are looked up together; a record's envelope is encoded once and stored as the library would store it; a pooled connection is pinged only when it has not been for a while, and a
broken one is still found out; records stored by the router's own insert read back and chain as before."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError
from router_testkit import Run, accepted, completed, linear_workflow

from agent_engine.contracts.envelope import Envelope
from agent_engine.router.core import fold
from agent_engine.router.crypto import EncodedRecord
from agent_engine.router.deadlines import DeadlineIndex
from agent_engine.router.store import TASK_RECORD_TOPIC, IdlePing, TaskRecord, TaskStore, aggregate_uuid
from agent_engine.router.tasks import TaskCache
from agent_engine.runtime.audit import record_hash

pytestmark = pytest.mark.integration


@pytest.fixture
def store(postgres_url: str) -> Iterator[TaskStore]:
    opened = TaskStore(postgres_url, snapshot_every=0)
    yield opened
    opened.close()


def started_task(tenant: str) -> tuple[str, Run]:
    task_id = str(uuid.uuid4())
    run = Run()
    run.feed(accepted(linear_workflow(), {"topic": "t"}, id=f"accept-{task_id}", task_id=task_id, tenant=tenant))
    return task_id, run


def test_only_tasks_without_records_are_unrecorded(store: TaskStore) -> None:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    saved, run = started_task(tenant)
    store.save({saved: (0, run.records)})
    new = str(uuid.uuid4())
    assert store.unrecorded([saved, new]) == {new}
    assert store.unrecorded([]) == set()
    assert store.load(new) == fold([])


async def test_prefetch_caches_new_tasks_and_leaves_recorded_ones_to_a_load(store: TaskStore) -> None:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    saved, run = started_task(tenant)
    store.save({saved: (0, run.records)})
    cache = TaskCache(store, DeadlineIndex(), limit=100)
    new = str(uuid.uuid4())
    await cache.prefetch([saved, new])
    assert cache.cached(new) == fold([])
    assert cache.cached(saved) is None  # loaded (from its records) when it is asked for
    assert await cache.get(saved) == run.state


async def test_prefetch_keeps_a_state_cached_meanwhile(store: TaskStore) -> None:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    task_id, run = started_task(tenant)
    cache = TaskCache(store, DeadlineIndex(), limit=100)
    cache.saved(task_id, run.state)
    await cache.prefetch([task_id])
    assert cache.cached(task_id) == run.state


def test_a_batch_of_new_tasks_is_sealed_under_their_keys(store: TaskStore) -> None:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    runs = dict(started_task(tenant) for _ in range(5))
    store.save({task_id: (0, run.records) for task_id, run in runs.items()})
    keys = store.keyring.keys_of(aggregate_uuid(t) for t in runs)
    assert set(keys) == {aggregate_uuid(t) for t in runs}
    assert len(set(keys.values())) == 1  # the tenant's key
    for task_id, run in runs.items():
        assert store.records(task_id) == run.records
    # the next records of one of them follow on, under the same key
    task_id, run = next(iter(runs.items()))
    before = len(run.records)
    run.feed(completed(run.dispatch(), {"text": "done"}))
    store.save({task_id: (before, run.records[before:])})
    assert store.load(task_id) == run.state


def test_records_read_back_and_chain(store: TaskStore, postgres_url: str) -> None:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    runs = dict(started_task(tenant) for _ in range(3))
    committed = store.save({task_id: (0, run.records) for task_id, run in runs.items()})
    assert [r for _, r in committed] == [r for run in runs.values() for r in run.records]
    ids = [n for n, _ in committed]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [(n, r) for n, r in store.notifications(ids[0] - 1, len(ids)) if n in ids] == committed
    recorder = store.app.recorder
    with psycopg.connect(postgres_url) as conn:  # each record is in the chain, hashed as it is stored
        rows = conn.execute(f"SELECT e.notification_id, e.topic, e.state, c.record_hash "
                            f"FROM {recorder.events_table_name} e "  # type: ignore[attr-defined]
                            f"LEFT JOIN {recorder.tables.chain} c USING (notification_id) "  # type: ignore[attr-defined]
                            "WHERE e.notification_id = ANY(%s) ORDER BY 1", (ids,)).fetchall()
    assert [r[0] for r in rows] == ids
    assert all(bytes(r[3]) == record_hash(r[1], bytes(r[2])) for r in rows)


def test_idle_ping_skips_a_connection_pinged_just_now(postgres_url: str) -> None:
    ping = IdlePing(after_s=3600)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        ping(conn)
        conn.close()
        ping(conn)  # passed a ping within the hour: not pinged again, so the broken connection is not noticed
    assert ping.passed


def test_idle_ping_finds_a_broken_connection_once_due(postgres_url: str) -> None:
    ping = IdlePing(after_s=0)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        ping(conn)
        conn.close()
        with pytest.raises(psycopg.OperationalError):
            ping(conn)


def test_a_record_encoded_once_is_stored_as_the_library_would_store_it(store: TaskStore) -> None:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    task_id, run = started_task(tenant)
    record = run.records[0]
    aggregate = aggregate_uuid(task_id)
    store.save({task_id: (0, run.records)})  # chooses the task's key
    mapper = store.app.mapper
    by_library = mapper.to_stored_event(TaskRecord(  # type: ignore[call-arg]
        originator_id=aggregate, originator_version=1, timestamp=record.time, envelope=record.to_wire()))
    encoded = mapper.to_stored_event(EncodedRecord(aggregate, 1, TASK_RECORD_TOPIC, record.time, record.to_bytes()))
    assert encoded.topic == by_library.topic
    read = [mapper.to_domain_event(e) for e in (by_library, encoded)]
    assert all(isinstance(e, TaskRecord) for e in read)
    assert read[0].__dict__ == read[1].__dict__
    assert Envelope.model_validate(read[1].envelope) == record  # type: ignore[attr-defined]


def test_a_task_saved_again_after_a_failed_first_save_is_sealed_under_its_key(store: TaskStore) -> None:
    """A new task's key is chosen without a lookup; one chosen by a save that then failed is simply chosen again."""
    tenant = f"t{uuid.uuid4().hex[:10]}"
    task_id, run = started_task(tenant)
    store.save({task_id: (0, run.records[:1])})
    with pytest.raises(IntegrityError):  # another writer stored version 1 first: nothing of this save is kept
        store.save({task_id: (0, run.records)})
    other, again = started_task(tenant)
    store.keyring.assign([(aggregate_uuid(other), store.keyring.live_key(tenant).key_id, tenant, other)])
    store.save({other: (0, again.records)})  # its key was chosen already (by a save that failed): chosen again
    assert store.records(other) == again.records
    assert store.records(task_id) == run.records[:1]
