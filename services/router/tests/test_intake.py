"""The router's intake over a real NATS and PostgreSQL: the consumers of every partition a router owns and the
shared one, merged into batches; how far the router has read, over all of them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from agent_engine.contracts.envelope import Envelope, command
from agent_engine.contracts.events import NodeCompleted, TaskCancelRequested
from agent_engine.contracts.subjects import PARTITIONS, partition_of, subject_for, type_subject
from agent_engine.router.core import BUS_INPUTS
from agent_engine.router.intake import Intake
from agent_engine.router.partitions import Ownership
from agent_engine.router.timers import Progress
from agent_engine.runtime import embedded
from agent_engine.runtime.bus import MSG_ID, Bus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_progress_is_caught_up_only_when_every_consumer_is() -> None:
    progress = Progress()
    assert progress.backlog is None and progress.read_through is None  # nothing fetched yet
    progress.saw(0, T0, "router")
    progress.saw(3, T0 + timedelta(seconds=5), "router-p1")
    assert progress.backlog == 3
    assert progress.read_through == T0  # the shared consumer has read only up to T0
    progress.saw(0, None, "router-p1")  # its next fetch found nothing more
    progress.saw(0, T0 + timedelta(seconds=9), "router")
    assert progress.backlog == 0 and progress.read_through == T0 + timedelta(seconds=5)
    progress.saw(0, None, "router-p2")  # a partition just taken: never read a message yet
    assert progress.read_through is None
    progress.forget("router-p2")  # given up again
    assert progress.read_through == T0 + timedelta(seconds=5)


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    """A database of its own: partition locks are per database."""
    name = f"intake_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield psycopg.conninfo.make_conninfo(postgres_url, dbname=name)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    """A NATS of its own: partition consumers read every tenant's inputs."""
    server = embedded.start_nats(tmp_path / "nats")
    opened = await Bus.open(server.url, "router")
    try:
        yield opened
    finally:
        await opened.close()
        server.stop()


def result(task_id: str, i: int) -> Envelope:
    return command(NodeCompleted(dispatch_id=f"d{i}", node="n", attempt=1, output={}), source="test",
                   tenant="acme", task_id=task_id)


@pytest.mark.integration
async def test_one_router_reads_every_partition_and_the_shared_consumer_in_merged_batches(
        bus: Bus, database: str) -> None:
    tasks = []  # five tasks in each partition
    while len(tasks) < 5 * PARTITIONS:
        task = str(uuid.uuid4())
        if sum(partition_of(t) == partition_of(task) for t in tasks) < 5:
            tasks.append(task)
    sent = [result(t, i) for i, t in enumerate(tasks)]
    bare = result(str(uuid.uuid4()), 99)  # as a publisher from before partitions sends it
    cancel = command(TaskCancelRequested(reason="test", requested_by="ops"), source="test", tenant="acme",
                     task_id=tasks[0])
    for env in sent:
        await bus.js.publish(subject_for(env), env.to_bytes(), headers={MSG_ID: env.id})
    await bus.js.publish(type_subject("node.completed", "acme"), bare.to_bytes(), headers={MSG_ID: bare.id})
    await bus.js.publish(subject_for(cancel), cancel.to_bytes(), headers={MSG_ID: cancel.id})
    assert {partition_of(t) for t in tasks} == set(range(PARTITIONS))

    batches: list[list[str]] = []
    handled = asyncio.Event()

    async def handle(msgs: list) -> None:  # type: ignore[type-arg]
        batches.append([msg.subject for msg in msgs])
        await asyncio.sleep(0.2)  # a transaction's time: meanwhile the other consumers' fetches queue up
        for msg in msgs:
            await msg.ack()
        if sum(len(b) for b in batches) >= len(sent) + 2:
            handled.set()

    ownership = Ownership(database)
    progress = Progress()
    stop = asyncio.Event()
    intake = Intake(bus, handle, BUS_INPUTS, batch=64, ack_wait=5, progress=progress, ownership=ownership)
    running = asyncio.create_task(intake.run(stop))
    await asyncio.wait_for(handled.wait(), 30)
    assert ownership.owned == set(range(PARTITIONS))  # alone, it owns every partition
    stop.set()
    await asyncio.wait_for(running, 30)

    subjects = [s for b in batches for s in b]
    assert sorted(subjects) == sorted([subject_for(e) for e in sent] + [type_subject("node.completed", "acme"),
                                                                          subject_for(cancel)])
    assert any(len({s.rsplit(".", 1)[1] for s in b}) > 1 for b in batches), "no batch merged two partitions"
    assert ownership.owned == set()  # it gave everything up at stop
    for _ in range(100):  # its session ends a moment after the connection closes
        with psycopg.connect(database) as conn:
            held = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
        if held == (0,):
            break
        await asyncio.sleep(0.05)
    assert held == (0,)
    assert progress.backlog == 0


async def eventually(check, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    assert check()


@pytest.mark.integration
async def test_the_intake_reads_exactly_the_partitions_owned_even_after_ownership_changed_behind_its_back(
        bus: Bus, database: str) -> None:
    async def handle(msgs: list) -> None:  # type: ignore[type-arg]
        for msg in msgs:
            await msg.ack()

    mine, other = Ownership(database), Ownership(database)
    stop = asyncio.Event()
    intake = Intake(bus, handle, BUS_INPUTS, batch=64, ack_wait=5, progress=Progress(), ownership=mine)
    running = asyncio.create_task(intake.run(stop))
    try:
        await eventually(lambda: set(intake.consumers) == set(range(PARTITIONS)))
        # as when a release fails on a lost connection: every lock is gone while its consumers still run,
        # and another router takes everything before this one looks again
        await asyncio.to_thread(mine.lose)
        assert (await asyncio.to_thread(other.look)).taken == frozenset(range(PARTITIONS))
        await eventually(lambda: not intake.consumers)  # it stops reading what it no longer owns
        change = await asyncio.to_thread(other.look)  # the other gives up the excess, which this one takes
        await asyncio.to_thread(other.release, change.to_release)
        await eventually(lambda: set(intake.consumers) == mine.owned == set(change.to_release))
        assert mine.owned.isdisjoint(other.owned)
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
        other.lose()


@pytest.mark.integration
async def test_quiet_partitions_do_not_hold_back_how_far_the_router_has_read(bus: Bus, database: str) -> None:
    """Deadlines wait until every input stored before them is read: a consumer that finds nothing to read has
    read everything, so only one partition's traffic still lets the router know how far it has read."""
    task = next(t for t in (str(uuid.uuid4()) for _ in range(1000)) if partition_of(t) == 0)
    env = result(task, 1)
    await bus.js.publish(subject_for(env), env.to_bytes(), headers={MSG_ID: env.id})

    async def handle(msgs: list) -> None:  # type: ignore[type-arg]
        for msg in msgs:
            await msg.ack()

    progress = Progress()
    stop = asyncio.Event()
    intake = Intake(bus, handle, BUS_INPUTS, batch=64, ack_wait=5, progress=progress,
                    ownership=Ownership(database))
    running = asyncio.create_task(intake.run(stop))
    try:
        await eventually(lambda: progress.read_through is not None and progress.backlog == 0)
        assert progress.read_through is not None and progress.read_through > datetime.now(UTC) - timedelta(seconds=10)
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
