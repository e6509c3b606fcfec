"""SIGTERM, as Kubernetes stops a pod, to each service in the middle of a run: it drains (stops taking work,
finishes or hands back what it holds, the router publishes what it committed) and exits cleanly within its
grace period; its replacement becomes ready and picks up; every task succeeds with each node done once.
And a service whose NATS is gone still exits within its grace period."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent_engine.cli.stack import SERVICES, readiness
from agent_engine.runtime.processes import pid_alive

pytestmark = pytest.mark.e2e

TASKS = 20
WORKING_NODES = {"gather_context", "interpretation", "decomposition", "planning", "execution", "review"}


async def _terminate_mid_run(engine: Any, tenant: str, victim: str) -> tuple[int, dict[str, str], list[Any]]:
    nc = await engine.connect()
    try:
        ids, succeeded = await engine.start_tasks(nc, tenant, TASKS)
        await asyncio.wait_for(succeeded.reached.wait(), 60)
        at_stop = succeeded.count
        stopping = asyncio.create_task(asyncio.to_thread(engine.terminate, victim))
        # more requests while it drains and while it is gone: they wait in the stream for the replacement
        workflow = await engine.push(nc, tenant)  # pushed already: the same revision
        ids += [await engine.submit(nc, tenant, workflow, {"brief": f"late task {i}"}) for i in range(TASKS // 2)]
        await stopping
        await asyncio.to_thread(engine.up)  # the replacement, as a Deployment starts one
        status = await engine.wait_terminal(nc, ids)
        return at_stop, status, [await engine.history(nc, t) for t in ids]
    finally:
        await nc.close()


def _log_since(path: Path, offset: int) -> str:
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def _ready_within(engine: Any, service: str, seconds: float) -> str:
    entry = engine.stack().state["services"][service]
    said = ""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        said = readiness(entry["health_port"])
        if said == "ready":
            break
        time.sleep(0.1)
    return said


@pytest.mark.parametrize("victim", list(SERVICES))
def test_sigterm_under_load_drains_cleanly_and_the_replacement_picks_up(engine, tenant, victim):
    logs = {name: Path(engine.stack().state["services"][name]["log"]) for name in (victim, "router")}
    offsets = {name: path.stat().st_size for name, path in logs.items()}
    at_stop, status, histories = asyncio.run(_terminate_mid_run(engine, tenant, victim))
    said = _log_since(logs[victim], offsets[victim])
    assert at_stop < TASKS * len(WORKING_NODES), "the stop came after all work was done; test proves nothing"
    assert len(histories) == TASKS + TASKS // 2
    assert "draining: no new work" in said and f"{victim} INFO stopped\n" in said, said[-2000:]
    assert "not drained within" not in said and "handed back" not in said, said[-2000:]
    assert _ready_within(engine, victim, 30) == "ready"
    assert set(status.values()) == {"succeeded"}, Counter(status.values())
    for history in histories:
        completed = Counter(e.data["node"] for e in history if e.type == "node.succeeded")
        assert completed == Counter(dict.fromkeys(WORKING_NODES, 1)), completed
    # nothing was lost and found again: no deadline had to re-dispatch, every dispatch was answered the first time
    assert "deadline passed" not in _log_since(logs["router"], offsets["router"])
    retried = [(e.task_id, e.data["node"]) for h in histories for e in h
               if e.type == "node.dispatched" and e.data["attempt"] > 1]
    assert not retried, retried


def test_every_service_exits_within_its_grace_period_when_nats_is_gone(own_stack):
    engine = own_stack(AE_SHUTDOWN_GRACE_S="3")
    for service in SERVICES:
        assert _ready_within(engine, service, 30) == "ready", service
    pids = engine.pids()
    engine.servers[0].stop()  # NATS
    for service in SERVICES:
        said = readiness(engine.stack().state["services"][service]["health_port"])
        deadline = time.monotonic() + 10
        while "NATS" not in said and time.monotonic() < deadline:  # the client notices within a ping or two
            time.sleep(0.2)
            said = readiness(engine.stack().state["services"][service]["health_port"])
        assert "NATS" in said, f"{service} still says {said!r} with NATS gone"
    took = {service: engine.terminate(service, timeout=20) for service in SERVICES}
    assert not any(pid_alive(pids[s]) for s in SERVICES)
    assert all(seconds < 3 + 3 + 2 + 1 for seconds in took.values()), took  # grace, cancel, watchdog margin
