"""A dead router's tail, against a real PostgreSQL and NATS: records a router committed and never published go out
from another router once the dead one's member lock is gone, and not while it is alive (relay.py, follower.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from nats.aio.msg import Msg

from agent_engine.contracts.envelope import Envelope, command
from agent_engine.contracts.events import TaskAccepted
from agent_engine.contracts.subjects import subject_for
from agent_engine.router.core import input_record
from agent_engine.router.follower import Follower
from agent_engine.router.partitions import MEMBER_LOCK
from agent_engine.router.records import RouterInput
from agent_engine.router.relay import Relay
from agent_engine.router.store import TaskStore
from agent_engine.runtime.bus import MSG_ID, Bus

pytestmark = pytest.mark.integration


def records(tenant: str) -> list[Envelope]:
    accepted = command(TaskAccepted(workflow="w", input={"brief": "b"}), tenant=tenant, task_id=str(uuid.uuid4()),
                       source="test")
    started = accepted.model_copy(update={"id": str(uuid.uuid4()), "type": "task.started", "data": {}})
    return [input_record(RouterInput(accepted)), started]


async def test_a_dead_routers_committed_records_are_published_by_a_survivor(store: TaskStore, bus: Bus,
                                                                          postgres_url: str) -> None:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    dead, alive = f"relay:dead-{uuid.uuid4().hex[:6]}", f"relay:alive-{uuid.uuid4().hex[:6]}"
    follower = Follower(store, Relay(bus, store, alive), observe=lambda _: None)
    await follower.adopt()  # tails other tests' routers left: not this test's
    member = psycopg.connect(postgres_url, autocommit=True)  # the dead router's partition connection, for now alive
    member.execute("SELECT pg_advisory_lock(%s, pg_backend_pid())", (MEMBER_LOCK,))
    pid = member.info.backend_pid
    store.set_relay_position(dead, store.log_end(), pid)  # all it had published
    stored = records(tenant)
    committed = store.save({stored[0].task_id: (0, stored)})  # committed, then the router died before publishing
    got: list[str] = []

    async def seen(msg: Msg) -> None:
        got.append((msg.headers or {}).get(MSG_ID, ""))

    sub = await bus.nc.subscribe(subject_for(stored[1]), cb=seen)
    try:
        await follower.adopt()
        await asyncio.sleep(0.3)
        assert got == []  # alive: its tail is its own to publish
        member.close()  # the router is gone, and its session with it
        for _ in range(50):
            await follower.adopt()
            if got:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        assert got == [stored[1].id]  # the input record is stored, never published
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute("SELECT position, member FROM router_relay_position WHERE name = %s",
                               (dead,)).fetchone()
        assert row is not None and row[0] >= committed[-1][0] and row[1] is None  # drained: not read again
        await follower.adopt()
        await asyncio.sleep(0.3)
        assert got == [stored[1].id]
    finally:
        await sub.unsubscribe()
        member.close()


def test_the_follower_reads_other_routers_records_and_not_its_own(store: TaskStore) -> None:
    """`others`: this router's own ids are passed over (not even fetched); the last id read is the page's end."""
    tenant = f"t{uuid.uuid4().hex[:10]}"
    start = store.log_end()
    mine, theirs = records(tenant), records(tenant)
    own = store.save({mine[0].task_id: (0, mine)})
    their = store.save({theirs[0].task_id: (0, theirs)})
    through, found = store.others(start, 100, [n for n, _ in own])
    assert [r.id for r in found if r.tenant == tenant] == [r.id for _, r in their]
    assert through == their[-1][0] == store.log_end()
    assert store.others(start, 1, [n for n, _ in own]) == (own[0][0], [])  # a page of one of ours: nothing to read


def test_the_log_end_is_read_once_no_insert_is_in_flight(store: TaskStore, postgres_url: str) -> None:
    """A save whose outcome is unknown (it failed, or its router died mid-commit) holds the events table's lock until
    it ends: `settled_end` waits for it, so what is read after it includes that save's records if they commit."""
    with psycopg.connect(postgres_url) as inserting:  # an insert in flight, as the store makes it
        inserting.execute("LOCK TABLE router_events IN EXCLUSIVE MODE")
        waiting = ThreadPoolExecutor(1).submit(store.settled_end)
        time.sleep(0.5)
        assert not waiting.done()  # still in flight: the end is not known yet
        stored = records(f"t{uuid.uuid4().hex[:10]}")
        inserting.commit()  # the lock goes with the transaction (the test's insert is made by the store below)
        assert waiting.result(timeout=10) >= 0
    committed = store.save({stored[0].task_id: (0, stored)})
    assert store.settled_end() == committed[-1][0] == store.log_end()
