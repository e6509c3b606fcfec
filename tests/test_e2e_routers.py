"""Two router processes consuming together (R3 item 10): 100 tasks, a kill -9 of one router in the
middle; every task succeeds, no task is corrupted, and no dispatch is doubled."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.e2e

TASKS = 100
WORKING_NODES = {"gather_context", "interpretation", "decomposition", "planning", "execution", "review"}


async def _two_routers(engine: Any, tenant: str) -> tuple[int, dict[str, str], list[Any]]:
    nc = await engine.connect()
    try:
        ids, succeeded = await engine.start_tasks(nc, tenant, TASKS)
        await asyncio.wait_for(succeeded.reached.wait(), 60)
        engine.kill("router")  # the second router carries on alone
        at_kill = succeeded.count
        status = await engine.wait_terminal(nc, ids, timeout=120)
        return at_kill, status, [await engine.history(nc, t) for t in ids]
    finally:
        await nc.close()


def test_two_routers_with_a_kill_9_never_corrupt_a_task_or_double_a_dispatch(engine, tenant, tmp_path):
    log = (tmp_path / "router-2.log").open("w")
    second = subprocess.Popen([sys.executable, "-m", "agent_engine.router"], stdout=log, stderr=subprocess.STDOUT,
                              env={**engine.env, "AE_ROUTER_NAME": "router-2"})
    try:
        at_kill, status, histories = asyncio.run(_two_routers(engine, tenant))
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
