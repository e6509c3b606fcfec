"""Partition ownership over a real PostgreSQL: routers share the partitions fairly, a router that goes
has its partitions taken by the others, a router that joins gets its share, and losing the connection
gives everything up."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from agent_engine.contracts.subjects import PARTITIONS
from agent_engine.router.partitions import MEMBER_LOCK, PARTITION_LOCK, Ownership

pytestmark = pytest.mark.integration


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    """A database of its own: advisory locks are per database, and other tests' routers use the shared one."""
    name = f"partitions_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(postgres_url, dbname=name)
    yield url
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def settle(*routers: Ownership, looks: int = 6) -> None:
    """Let each router look a few times, as their loops would (release what a look names at once)."""
    for _ in range(looks):
        for router in routers:
            change = router.look()
            if change.to_release:
                router.release(change.to_release)


def ended(database: str, pid: int) -> None:
    """Wait until the server's backend `pid` is gone: a closed connection's session ends on the server a moment
    later, and its locks with it (on a busy machine, after another router's looks)."""
    with psycopg.connect(database, autocommit=True) as conn:
        for _ in range(500):
            if conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is None:
                return
            time.sleep(0.02)
    raise AssertionError(f"backend {pid} still there 10 s after its connection closed")


def test_one_router_owns_every_partition(database: str) -> None:
    alone = Ownership(database)
    try:
        assert alone.look().taken == frozenset(range(PARTITIONS))
        assert alone.look().taken == frozenset()  # nothing more to take
        assert all(alone.owns(p) for p in range(PARTITIONS))
    finally:
        alone.lose()


@pytest.mark.parametrize("count", [2, 3, 4, 5])
def test_routers_split_the_partitions_fairly_and_never_share_one(database: str, count: int) -> None:
    routers = [Ownership(database) for _ in range(count)]
    try:
        settle(*routers)
        shares = [r.owned for r in routers]
        assert set().union(*shares) == set(range(PARTITIONS))  # every partition has an owner
        assert sum(len(s) for s in shares) == PARTITIONS  # and only one
        assert max(len(s) for s in shares) - min(len(s) for s in shares) <= 1  # as even as it divides
        with psycopg.connect(database) as conn:  # and the server agrees: each partition locked by the one it names
            held = conn.execute(
                "SELECT l.objid::int, l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.classid = %s::oid AND l.objsubid = 2", (PARTITION_LOCK,)).fetchall()
        by_pid = {r.conn.info.backend_pid: r.owned for r in routers if r.conn is not None}
        assert sorted(p for p, _ in held) == list(range(PARTITIONS))
        assert all(p in by_pid[pid] for p, pid in held)
    finally:
        for router in routers:
            router.lose()


def test_a_router_that_joins_gets_its_share_from_the_one_running(database: str) -> None:
    first, second = Ownership(database), Ownership(database)
    try:
        settle(first)
        assert len(first.owned) == PARTITIONS
        change = first.look()  # the second is not there yet: nothing changes
        assert change.to_release == frozenset()
        second.look()  # it joins; all is taken, so it gets nothing yet
        assert second.owned == set()
        change = first.look()
        assert len(change.to_release) == PARTITIONS // 2  # the first gives up the excess
        first.release(change.to_release)
        assert len(second.look().taken) == PARTITIONS // 2  # which the second takes
        assert first.owned.isdisjoint(second.owned)
    finally:
        first.lose()
        second.lose()


def test_the_partitions_of_a_router_that_goes_are_taken_by_the_others(database: str) -> None:
    routers = [Ownership(database) for _ in range(3)]
    try:
        settle(*routers)
        gone = set(routers[0].owned)
        assert gone
        # as when its process is killed: the server ends the session, and its locks go with it (waiting until the
        # backend is gone: termination is asynchronous, and on a busy machine the others' looks could come first)
        with psycopg.connect(database, autocommit=True) as conn:
            assert routers[0].conn is not None
            ended = conn.execute("SELECT pg_terminate_backend(%s, 10000)", (routers[0].conn.info.backend_pid,))
            assert ended.fetchone() == (True,)
        routers[0].owned.clear()
        routers[0].conn = None
        routers = routers[1:]
        settle(*routers)
        assert gone <= routers[0].owned | routers[1].owned
        assert sorted(len(r.owned) for r in routers) == [PARTITIONS // 2, PARTITIONS // 2]
    finally:
        for router in routers:
            router.lose()


def test_a_router_whose_connection_is_cut_learns_it_at_its_next_look(database: str) -> None:
    router = Ownership(database)
    try:
        settle(router)
        assert router.conn is not None
        with psycopg.connect(database, autocommit=True) as conn:
            ended = conn.execute("SELECT pg_terminate_backend(%s, 10000)", (router.conn.info.backend_pid,))
            assert ended.fetchone() == (True,)  # gone, not only signalled
        with pytest.raises(psycopg.Error):
            router.look()
        assert router.lose() == frozenset(range(PARTITIONS))
        assert router.owned == set()
        assert router.look().taken == frozenset(range(PARTITIONS))  # a new session takes them again
    finally:
        router.lose()


def test_a_router_gives_up_everything_when_it_stops(database: str) -> None:
    first, second = Ownership(database), Ownership(database)
    try:
        settle(first, second)
        assert first.conn is not None
        pid = first.conn.info.backend_pid
        first.lose()
        ended(database, pid)
        settle(second)
        assert second.owned == set(range(PARTITIONS))
    finally:
        second.lose()


def test_a_router_keeps_its_member_id_over_a_new_connection(database: str) -> None:
    """The id its relay saves with its position (follower.py): a backend pid would change with the connection, and
    after a PostgreSQL restart could be another router's, making a dead router's tail look alive."""
    router = Ownership(database)
    try:
        settle(router)
        member = router.member
        assert router.conn is not None
        pid = router.conn.info.backend_pid
        router.lose()  # the connection is gone (a PostgreSQL restart), and the member lock with it
        ended(database, pid)
        settle(router)
        with psycopg.connect(database) as conn:
            held = [int(r[0]) for r in conn.execute(
                "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
                "AND classid = %s::oid", (MEMBER_LOCK,)).fetchall()]
        assert router.member == member and held == [member]
    finally:
        router.lose()
