"""Stored records are sealed under per-tenant (or per data subject) keys in a real PostgreSQL: a SELECT of
the store shows no plaintext; destroying a key erases exactly the records it sealed, without editing a row,
and the router answers about an erased task instead of failing."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import psycopg
import pytest

from agent_engine.contracts.envelope import Envelope, command
from agent_engine.contracts.events import TaskAccepted
from agent_engine.router import queries
from agent_engine.router.admission import TENANT_KEY
from agent_engine.router.core import input_record
from agent_engine.router.crypto import BrokenSeal
from agent_engine.router.datakeys import KeyDestroyed, MasterKeyError, read_master_key
from agent_engine.router.erasure import read_request
from agent_engine.router.records import RouterInput
from agent_engine.router.store import TaskStore

pytestmark = pytest.mark.integration
SECRET = "Ada Lovelace, 12 Analytical Row"


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def started(store: TaskStore, tenant: str, person: str | None = None, text: str = SECRET) -> str:
    """A task whose first stored record is the accepted request (as the router stores it)."""
    event = command(TaskAccepted(workflow="w", input={"brief": text}, data_subject=person), tenant=tenant,
                    task_id=str(uuid.uuid4()), source="test")
    store.save({event.task_id: (0, [input_record(RouterInput(event)), _note(event, "task.started")])})
    return event.task_id


def _note(cause: Envelope, kind: str) -> Envelope:
    return cause.model_copy(update={"id": str(uuid.uuid4()), "type": kind, "data": {"said": cause.data["input"]}})


def stored_rows(postgres_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(postgres_url) as conn:
        return conn.execute("SELECT originator_id, originator_version, state FROM router_events "
                            "ORDER BY originator_id, originator_version").fetchall()


def test_stored_payloads_are_ciphertext(store: TaskStore, tenant: str, postgres_url: str) -> None:
    marker = f"{SECRET} {uuid.uuid4()}"
    task_id = started(store, tenant, text=marker)
    assert store.records(task_id)[0].data["input"]["data"]["input"]["brief"] == marker
    blob = b"".join(bytes(row[2]) for row in stored_rows(postgres_url))
    assert marker.encode() not in blob and tenant.encode() not in blob
    with psycopg.connect(postgres_url) as conn:  # not in any column of any table, as PostgreSQL prints it
        for (table,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall():
            dump = "".join(str(r) for r in conn.execute(f'SELECT * FROM "{table}"').fetchall())
            assert marker not in dump, table


def test_forgetting_a_tenant_erases_its_records_without_editing_a_row(store: TaskStore, tenant: str,
                                                                       postgres_url: str) -> None:
    other = f"o{tenant}"
    mine, theirs = started(store, tenant), started(store, other)
    before = stored_rows(postgres_url)
    destroyed = store.keyring.destroy(tenant)
    assert destroyed.keys == 1 and destroyed.task_ids == [mine]
    assert stored_rows(postgres_url) == before  # erasure destroys a key; the records stay as they were
    with pytest.raises(KeyDestroyed) as erased:
        store.records(mine)
    assert erased.value.tenant == tenant
    assert store.records(theirs)[0].tenant == other
    fresh = TaskStore(postgres_url)  # another process, with nothing cached, cannot read them either
    try:
        with pytest.raises(KeyDestroyed):
            fresh.load(mine)
        erased_ids = {n for n, r in fresh.notifications(0, 1_000_000) if r is None}
        assert len(erased_ids) >= 2
        assert all(r.tenant != tenant for r in fresh.all_records())
    finally:
        fresh.close()
    assert store.keyring.destroy(tenant).keys == 0  # again: nothing left to destroy
    later = started(store, tenant, text="after")  # the tenant goes on, under a new key
    assert store.records(later)[0].tenant == tenant


def test_forgetting_one_person_leaves_the_tenants_other_tasks(store: TaskStore, tenant: str) -> None:
    ada, bob, plain = started(store, tenant, "ada"), started(store, tenant, "bob"), started(store, tenant)
    destroyed = store.keyring.destroy(tenant, "ada")
    assert (destroyed.keys, destroyed.task_ids) == (1, [ada])
    with pytest.raises(KeyDestroyed):
        store.records(ada)
    assert store.records(bob) and store.records(plain)


def test_a_subtask_or_fork_keeps_the_key_of_the_task_it_came_from(store: TaskStore, tenant: str) -> None:
    parent = started(store, tenant, "ada")
    child = command(TaskAccepted(workflow="w"), tenant=tenant, task_id=str(uuid.uuid4()), source="test")
    child = child.model_copy(update={"type": "subtask.requested",
                                     "data": {"lineage": {"kind": "subtask", "parent_id": parent, "root_id": parent}}})
    store.save({child.task_id: (0, [input_record(RouterInput(child))])})
    assert sorted(store.keyring.destroy(tenant, "ada").task_ids) == sorted([parent, child.task_id])
    with pytest.raises(KeyDestroyed):
        store.records(child.task_id)


def test_a_record_moved_to_another_task_does_not_open(store: TaskStore, tenant: str, postgres_url: str) -> None:
    first, second = started(store, tenant), started(store, tenant)
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE router_events SET state = (SELECT state FROM router_events WHERE originator_id = %s "
                     "AND originator_version = 1) WHERE originator_id = %s AND originator_version = 1",
                     (uuid.UUID(first), uuid.UUID(second)))
    with pytest.raises(BrokenSeal, match="moved from another task"):
        store.records(second)


def test_an_erased_admission_log_goes_on_from_its_last_version(store: TaskStore, tenant: str) -> None:
    event = command(TaskAccepted(workflow="w"), tenant=tenant, task_id=str(uuid.uuid4()), source="test")
    note = event.model_copy(update={"type": "task.admitted", "data": {}})
    store.save({TENANT_KEY + tenant: (0, [note, note.model_copy(update={"id": str(uuid.uuid4())})])})
    store.keyring.destroy(tenant)
    assert store.load_tenant(tenant).version == 2
    store.save({TENANT_KEY + tenant: (2, [note.model_copy(update={"id": str(uuid.uuid4())})])})
    assert store.load_tenant(tenant).version == 3


async def test_a_query_about_an_erased_task_answers_erased(store: TaskStore, tenant: str) -> None:
    task_id = started(store, tenant)
    store.keyring.destroy(tenant)
    answer = await queries.answer(store.records, "task.show", f'{{"task_id": "{task_id}"}}'.encode())
    assert answer["erased"] is True and "was erased" in answer["error"]
    scoped = await queries.answer(store.records, "task.show",
                                  f'{{"task_id": "{task_id}", "tenant": "someone-else"}}'.encode())
    assert "erased" not in scoped and scoped["error"].startswith("no task")


def test_a_wrong_or_missing_master_key_is_named(tmp_path: Any, postgres_url: str, tenant: str) -> None:
    bad = tmp_path / "master.key"
    bad.write_text("not a key")
    with pytest.raises(MasterKeyError, match="64 hex digits or base64"):
        read_master_key(bad)
    with pytest.raises(MasterKeyError, match="cannot read"):
        read_master_key(tmp_path / "missing")
    with TaskStoreFor(postgres_url) as ours:
        started(ours, tenant)
    other = TaskStore(postgres_url, hashlib.sha256(b"another key").digest())
    try:
        with pytest.raises(MasterKeyError, match="does not open with this master key"):
            other.keyring.live_key(tenant)
    finally:
        other.close()


class TaskStoreFor:
    def __init__(self, url: str) -> None:
        self.store = TaskStore(url)

    def __enter__(self) -> TaskStore:
        return self.store

    def __exit__(self, *_: object) -> None:
        self.store.close()


def test_a_forget_request_must_be_confirmed_and_well_formed() -> None:
    assert read_request(b'{"tenant": "acme", "confirm": true}') == ("acme", None, "")
    assert read_request(b'{"tenant": "acme", "person": "p-1", "confirm": true}') == ("acme", "p-1", "")
    assert "confirm" in read_request(b'{"tenant": "acme"}')[2]
    assert "'tenant'" in read_request(b'{"tenant": "a b", "confirm": true}')[2]
    assert "'person'" in read_request(b'{"tenant": "acme", "person": "", "confirm": true}')[2]
    assert "JSON object" in read_request(b"[1]")[2]


async def test_the_relay_passes_erased_records_over_without_retrying(store: TaskStore, tenant: str,
                                                                     nats_url: str) -> None:
    from agent_engine.router.relay import Relay
    from agent_engine.runtime.bus import Bus

    event = command(TaskAccepted(workflow="w", input={"brief": SECRET}), tenant=tenant, task_id=str(uuid.uuid4()),
                    source="test")
    committed = store.save({event.task_id: (0, [input_record(RouterInput(event)), _note(event, "task.started")])})
    store.keyring.destroy(tenant)
    bus = await Bus.open(nats_url, "relay-erasure-test")
    published: list[Envelope] = []

    async def spy(envelope: Envelope) -> None:
        published.append(envelope)

    bus.publish = spy  # type: ignore[method-assign]
    try:
        relay = Relay(bus, store, f"relay:{uuid.uuid4().hex[:6]}")
        relay.position = committed[0][0] - 1
        await relay.step()
        assert relay.position >= committed[-1][0]  # moved past them: never read again
        assert not [e for e in published if e.tenant == tenant]
    finally:
        await bus.close()


def test_forget_counts_tasks_not_the_admission_log_and_deletes_the_memory_notes(store: TaskStore, tenant: str,
                                                                                postgres_url: str) -> None:
    from agent_engine.memory.store import MemoryScope, MemoryStore
    from agent_engine.router.erasure import forget

    task_id = started(store, tenant)
    event = command(TaskAccepted(workflow="w"), tenant=tenant, task_id=task_id, source="test")
    store.save({TENANT_KEY + tenant: (0, [event.model_copy(update={"type": "task.admitted", "data": {}})])})
    memory = MemoryStore(postgres_url)
    try:
        memory.save(tenant, MemoryScope("global", ""), "who", SECRET, task_id=task_id)
        memory.save(f"o{tenant}", MemoryScope("global", ""), "who", "another tenant's")
        answer = forget(store.keyring, postgres_url, tenant, None)
        assert (answer["keys_destroyed"], answer["tasks_erased"], answer["memory_notes_deleted"]) == (1, 1, 1)
        assert memory.count(f"o{tenant}", [MemoryScope("global", "")]) == 1
    finally:
        memory.close()


async def test_a_tenant_scoped_forget_is_only_an_error_answer(store: TaskStore, tenant: str) -> None:
    task_id = started(store, tenant)
    body = f'{{"tenant": "{tenant}", "confirm": true}}'.encode()
    assert "error" in await queries.answer(store.records, "tenant.forget", body, tenant)
    assert store.records(task_id)  # nothing was erased
