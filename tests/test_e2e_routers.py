"""Two router processes consuming together (R3 item 10): 100 tasks, a kill -9 of one router in the
middle; every task succeeds, no task is corrupted, and no dispatch is doubled. With router partitions
(docs/scaling.md): the second router takes half the partitions when it joins, the two never write the same
task (no write conflict), and the survivor takes the dead router's partitions and publishes its relay's tail."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from agent_engine.contracts.subjects import PARTITIONS
from agent_engine.router.partitions import holders

pytestmark = pytest.mark.e2e

TASKS = 100
ADOPTED = "published the tail of router relay relay (dead)"
WORKING_NODES = {"gather_context", "interpretation", "decomposition", "planning", "execution", "review"}


def owners(url: str) -> Counter[int]:
    """Partitions held, by PostgreSQL backend (one per router)."""
    return Counter({pid: len(parts) for pid, parts in holders(url).items()})


async def wait_owners(url: str, shares: list[int], timeout: float = 60) -> float:
    """Seconds until the partitions are held in exactly these shares (one per router, largest first)."""
    began = time.monotonic()
    while sorted(owners(url).values(), reverse=True) != shares:
        assert time.monotonic() - began < timeout, f"partitions never split as {shares}: {owners(url)}"
        await asyncio.sleep(0.1)
    return time.monotonic() - began


async def _two_routers(engine: Any, tenant: str) -> tuple[int, dict[str, str], list[Any], float]:
    url = engine.env["AE_POSTGRES_URL"]
    await wait_owners(url, [PARTITIONS // 2, PARTITIONS // 2])  # the second router got its half on joining
    nc = await engine.connect()
    try:
        ids, succeeded = await engine.start_tasks(nc, tenant, TASKS)
        await asyncio.wait_for(succeeded.reached.wait(), 60)
        engine.kill("router")  # the second router carries on alone
        at_kill = succeeded.count
        takeover = await wait_owners(url, [PARTITIONS])
        status = await engine.wait_terminal(nc, ids, timeout=120)
        return at_kill, status, [await engine.history(nc, t) for t in ids], takeover
    finally:
        await nc.close()


def test_two_routers_with_a_kill_9_never_corrupt_a_task_or_double_a_dispatch(engine, tenant, tmp_path):
    first_log_path = engine.home / "logs" / "router.log"
    before = first_log_path.stat().st_size  # the stack's router log holds earlier tests' lines too
    log = (tmp_path / "router-2.log").open("w")
    second = subprocess.Popen([sys.executable, "-m", "agent_engine.router"], stdout=log, stderr=subprocess.STDOUT,
                              env={**engine.env, "AE_ROUTER_NAME": "router-2"})
    try:
        at_kill, status, histories, takeover = asyncio.run(_two_routers(engine, tenant))
        first_log = first_log_path.read_bytes()[before:].decode(errors="replace")
        for _ in range(100):  # the survivor looks for dead routers' relays every 2 s
            if ADOPTED in (tmp_path / "router-2.log").read_text():
                break
            time.sleep(0.1)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
        log.close()
        engine.up()  # bring the killed router back for the tests after this one
    assert at_kill < TASKS * len(WORKING_NODES), "the kill came after all work was done; test proves nothing"
    assert set(status.values()) == {"succeeded"}, Counter(status.values())
    for history in histories:
        completed = Counter(e.data["node"] for e in history if e.type == "node.succeeded")
        assert completed == Counter(dict.fromkeys(WORKING_NODES, 1)), completed
        # one dispatch per step: (node, attempt) for most nodes; the executor's turns and tool call each have theirs
        dispatches = [e.data["dispatch_id"] for e in history if e.type == "node.dispatched"]
        assert len(dispatches) == len(set(dispatches)), Counter(dispatches).most_common(2)
        assert len(dispatches) == len(WORKING_NODES) + 2
        assert len({e.id for e in history}) == len(history)
    with psycopg.connect(engine.env["AE_POSTGRES_URL"]) as conn:
        positions = dict(conn.execute("SELECT name, position FROM router_relay_position").fetchall())
    assert positions.get("relay", 0) > 0 and positions.get("relay:router-2", 0) > 0, positions  # both relayed
    second_log = (tmp_path / "router-2.log").read_text()
    assert "Traceback" not in second_log
    applied = int(second_log.split("router router-2 stopping: applied ")[1].split()[0])
    assert applied > 0, "the second router never consumed: the test proves nothing"
    # each task's inputs went to its partition's owner only: the two never raced to write one task
    for log_text in (first_log, second_log):
        assert "retrying one by one" not in log_text, "a write conflict between the routers"
    assert "took partitions" in second_log
    # the killed router's relay left its position with a member no longer alive: the survivor published its tail
    assert ADOPTED in second_log
    print(f"the survivor held every partition {takeover:.1f} s after the kill")
