"""MemoryStore against a real PostgreSQL: what the tools' tests do not reach (limits from the environment,
many writers at once, where a note came from)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from agent_engine.memory import MemoryLimits, MemoryRefused, MemoryScope, MemoryStore

pytestmark = pytest.mark.integration

PROJECT = MemoryScope("project", "research")


@pytest.fixture
def tenant(postgres_url: str) -> Iterator[str]:
    name = f"rt-{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DELETE FROM ae_memory WHERE tenant = %s", (name,))


@pytest.mark.parametrize(("name", "value", "message"), [
    ("AE_MEMORY_MAX_ITEMS", "0", "AE_MEMORY_MAX_ITEMS=0 must be at least 1"),
    ("AE_MEMORY_MAX_AGE_DAYS", "-1", "AE_MEMORY_MAX_AGE_DAYS=-1 must be a number of days greater than 0"),
    ("AE_MEMORY_MAX_AGE_DAYS", "inf", "AE_MEMORY_MAX_AGE_DAYS=inf must be a number of days"),
    ("AE_MEMORY_MAX_AGE_DAYS", "nan", "AE_MEMORY_MAX_AGE_DAYS=nan must be a number of days"),
])
def test_limits_out_of_range_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                               message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        MemoryLimits.from_env()


@pytest.mark.parametrize(("name", "value", "message"), [
    ("AE_MEMORY_MAX_ITEMS", "many", "AE_MEMORY_MAX_ITEMS='many' is not a number"),
    ("AE_MEMORY_MAX_ITEMS", "inf", "AE_MEMORY_MAX_ITEMS='inf' is not a whole number"),
    ("AE_MEMORY_MAX_AGE_DAYS", "30d", "AE_MEMORY_MAX_AGE_DAYS='30d' is not a number"),
])
def test_limits_that_are_not_numbers_stop_the_service(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                      message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=message):
        MemoryLimits.from_env()


def test_limits_default_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AE_MEMORY_MAX_ITEMS", raising=False)
    monkeypatch.delenv("AE_MEMORY_MAX_AGE_DAYS", raising=False)
    assert MemoryLimits.from_env() == MemoryLimits(200, 30.0)
    monkeypatch.setenv("AE_MEMORY_MAX_ITEMS", "5")
    monkeypatch.setenv("AE_MEMORY_MAX_AGE_DAYS", "0.5")
    assert MemoryLimits.from_env() == MemoryLimits(5, 0.5)


def test_a_note_remembers_who_saved_it_and_when_first(postgres_url: str, tenant: str) -> None:
    store = MemoryStore(postgres_url)
    try:
        store.save(tenant, PROJECT, "tone", "formal", task_id="task-1", node="draft")
        store.save(tenant, PROJECT, "tone", "friendly", task_id="task-2", node="review")
        [item] = store.recall(tenant, [PROJECT])
    finally:
        store.close()
    assert (item.text, item.task_id, item.node) == ("friendly", "task-2", "review")
    assert item.created_at < item.updated_at


def test_many_writers_at_once_keep_the_limit_without_errors(postgres_url: str, tenant: str) -> None:
    """Tool-runners save from many threads and processes; saves to one scope take turns, and none fails."""
    stores = [MemoryStore(postgres_url, MemoryLimits(max_items=5), max_connections=4) for _ in range(3)]
    try:
        with ThreadPoolExecutor(12) as pool:
            saves = [pool.submit(stores[n % 3].save, tenant, PROJECT, f"k{n % 20}", f"text {n}") for n in range(120)]
            for done in saves:
                done.result()
        assert stores[0].count(tenant, [PROJECT]) == 5
        assert len(stores[1].recall(tenant, [PROJECT], limit=100)) == 5
    finally:
        for store in stores:
            store.close()


def test_a_call_without_tenant_or_task_is_refused(postgres_url: str) -> None:
    store = MemoryStore(postgres_url)
    try:
        with pytest.raises(MemoryRefused, match="memory needs a tenant"):
            store.recall("", [PROJECT])
        with pytest.raises(MemoryRefused, match="memory layer 'task' needs a task id"):
            MemoryScope.of("task", task_id="", project=None)
        with pytest.raises(MemoryRefused, match="memory key must be 1 to 200 characters, got 201"):
            store.save("t", PROJECT, "k" * 201, "text")
    finally:
        store.close()
    with pytest.raises(MemoryRefused, match="memory needs AE_POSTGRES_URL"):
        MemoryStore("")


def test_forgetting_a_persons_tasks_deletes_their_notes_and_keeps_the_rest(postgres_url: str, tenant: str) -> None:
    store = MemoryStore(postgres_url)
    try:
        store.save(tenant, PROJECT, "ada-pref", "Ada likes tea", task_id="ada-1")
        store.save(tenant, MemoryScope("task", "ada-1"), "scratch", "Ada's draft", task_id="ada-1")
        store.save(tenant, PROJECT, "bob-pref", "Bob likes coffee", task_id="bob-1")
        assert store.forget(tenant, ["ada-1"]) == 2
        assert [i.key for i in store.recall(tenant, [PROJECT, MemoryScope("task", "ada-1")])] == ["bob-pref"]
        assert store.forget(tenant) == 1 and store.count(tenant, [PROJECT]) == 0
        with psycopg.connect(postgres_url) as conn:  # rewritten: the deleted notes are not in the table's file
            path = conn.execute("SELECT current_setting('data_directory') || '/' || pg_relation_filepath('ae_memory')"
                                ).fetchone()
        assert path is not None
        if os.access(path[0], os.R_OK):  # a server on this machine (not one AE_POSTGRES_URL names elsewhere)
            with open(path[0], "rb") as data:
                assert b"Ada likes tea" not in data.read()
    finally:
        store.close()
