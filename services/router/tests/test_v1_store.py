"""A router of contract version 2 on a database a version 1 router wrote (fixtures/v1_store.json: rows as that
router stored them, loaded into a real PostgreSQL): it reads every task, answers queries in the v2 form,
replays them, and its relay publishes them on a real nats-server as CloudEvents the official SDK reads."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest
from cloudevents.core.formats.json import JSONFormat
from nats.js.api import ConsumerConfig, DeliverPolicy

from agent_engine.contracts.envelope import CONTRACT_VERSION
from agent_engine.contracts.subjects import tenant_subject
from agent_engine.router.core import INPUT_RECORD, fold
from agent_engine.router.queries import answer
from agent_engine.router.relay import Relay
from agent_engine.router.store import TaskStore
from agent_engine.router.views import replay_report
from agent_engine.runtime.bus import Bus

pytestmark = pytest.mark.integration

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "v1_store.json").read_text())
WHOLE_INPUTS = Path(__file__).parent / "fixtures" / "whole_inputs"
TASKS = {"task-1": "succeeded", "fork-1": "succeeded", "fork-2": "succeeded"}
V1_NAMES = ("task_id", "correlation_id", "causation_id", "schema_version")


@pytest.fixture
def v1_store(postgres_url: str) -> Iterator[TaskStore]:
    """A database of its own holding the fixture's rows, as the v1 router left them."""
    name = f"v1_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunparse(urlparse(postgres_url)._replace(path=f"/{name}"))
    store = TaskStore(url)  # creates the tables as any router does at start
    with psycopg.connect(url) as conn:
        for row in FIXTURE["rows"]:
            conn.execute(f"INSERT INTO {FIXTURE['table']} (originator_id, originator_version, topic, state) "
                         "VALUES (%s, %s, %s, %s)", (row["originator_id"], row["originator_version"], row["topic"],
                                                     row["state"].encode()))
    yield store
    store.close()


def stored_v1_envelopes() -> list[dict[str, Any]]:
    return [json.loads(row["state"])["envelope"] for row in FIXTURE["rows"]]


def test_the_fixture_holds_what_a_v1_router_wrote() -> None:
    envelopes = stored_v1_envelopes()
    assert len(envelopes) == 25 and all(e["schema_version"] == 1 and "task_id" in e for e in envelopes)
    assert any(e["subject"] is None for e in envelopes)  # v1 wrote absent attributes as null


def test_every_v1_task_reads_and_ends_as_it_did(v1_store: TaskStore) -> None:
    for task_id, status in TASKS.items():
        records = v1_store.records(task_id)
        assert records and all(r.schema_version == CONTRACT_VERSION for r in records)
        assert fold(records).status == status


def test_v1_records_read_as_the_same_scenario_recorded_by_v2_apart_from_the_contract_version(
        v1_store: TaskStore) -> None:
    """The golden file is the same scenario as the v2 router recorded it (before it stored each output once, so
    with every input whole: fixtures/whole_inputs): upcasting loses and invents nothing. The one difference is a
    fact, not a spelling: task.started names the contract version the task was started under."""
    golden = json.loads((WHOLE_INPUTS / "fork_recorded_and_live.json").read_text())
    for task_id in TASKS:
        read = json.dumps([r.to_wire() for r in v1_store.records(task_id)])
        now = read.replace('"contract_version": 1', f'"contract_version": {CONTRACT_VERSION}')
        assert now != read  # each holds a task.started (the forks', in their copied history)
        assert json.loads(now) == golden[task_id]


async def test_history_answers_are_v2_cloudevents(v1_store: TaskStore) -> None:
    for task_id in TASKS:
        reply = await answer(v1_store.records, "task.history", json.dumps({"task_id": task_id}).encode())
        for event in reply["events"]:
            assert not set(V1_NAMES) & set(event) and None not in event.values()
            parsed = JSONFormat().read(None, json.dumps(event).encode())
            assert parsed.get_extension("taskid") == task_id


def test_replay_of_a_v1_task_differs_only_in_the_contract_version_it_started_under(v1_store: TaskStore) -> None:
    """As after an engine upgrade (engine_version): today's router would record contract version 2."""
    differing = {}
    for task_id in TASKS:
        report = replay_report(v1_store.records(task_id))
        assert report["stored"] == report["replayed"]
        differing[task_id] = len(report["differences"])
        for difference in report["differences"]:
            stored, replayed = difference["stored"], difference["replayed"]
            assert stored["type"] == replayed["type"] == "task.started"
            assert {**stored["data"], "contract_version": CONTRACT_VERSION} == replayed["data"]
    assert differing == {"task-1": 1, "fork-1": 0, "fork-2": 0}  # a fork starts with task.forked, not task.started


async def test_the_relay_publishes_v1_records_as_v2_cloudevents(v1_store: TaskStore, nats_url: str) -> None:
    bus = await Bus.open(nats_url, "router-v1-test")
    try:
        started = datetime.now(UTC)
        stop = asyncio.Event()
        relay = asyncio.create_task(Relay(bus, v1_store, name="relay-v1-test").run(stop))
        expected = {e["id"] for e in stored_v1_envelopes() if e["type"] != INPUT_RECORD}
        sub = await bus.js.subscribe(tenant_subject("acme"), ordered_consumer=True, config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=started.isoformat()))
        seen: dict[str, bytes] = {}
        try:
            async with asyncio.timeout(20):
                while not expected <= set(seen):
                    msg = await sub.next_msg(timeout=10)
                    seen[json.loads(msg.data)["id"]] = msg.data
        finally:
            stop.set()
            await relay
            await sub.unsubscribe()
        for event_id in expected:
            body = json.loads(seen[event_id])
            assert body["schemaversion"] == CONTRACT_VERSION and not set(V1_NAMES) & set(body)
            assert JSONFormat().read(None, seen[event_id]).get_id() == event_id
        assert v1_store.relay_position("relay-v1-test") == len(FIXTURE["rows"])
    finally:
        await bus.close()
