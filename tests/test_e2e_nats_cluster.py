"""The engine on a 3-node NATS cluster (issue 13, item 5): every stream and bucket on three servers, two
processes of the router and of each runner, 100 tasks, and the node leading the event stream killed with
`kill -9` while they run, then started again on its port and data. Every task succeeds, no node of a task
completes twice, and every durable consumer keeps its place through the change of leader."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent_engine.contracts.subjects import (
    AUDIT_STREAM,
    DLQ_STREAM,
    STREAM,
    TELEMETRY_RPC,
    TOOL_CALLS_BUCKET,
    WORKFLOW_BUCKET,
    dlq_subject,
    rpc_subject,
)
from agent_engine.router.partitions import holders

pytestmark = pytest.mark.e2e

TASKS = 100
WORKING_NODES = {"gather_context", "interpretation", "decomposition", "planning", "execution", "review"}
CONSUMERS = ("guardrails", "router", "agent-runner", "tool-runner")
REPLICAS = {"router": {"AE_ROUTER_NAME": "router-2"}, "agent-runner": {}, "tool-runner": {}}
"""The second process of each; the stack's `up` started the first."""
DOWN_S = 3.0
"""How long the killed node stays down: long enough for the others to elect new leaders and go on without it."""


async def _run(engine: Any, tenant: str) -> dict[str, Any]:
    cluster = engine.cluster
    nc = await engine.connect()
    js = nc.jetstream(timeout=10)
    try:
        ids, succeeded = await engine.start_tasks(nc, tenant, TASKS)
        await asyncio.wait_for(succeeded.reached.wait(), 60)
        leader = (await js.stream_info(STREAM)).cluster.leader
        cluster.kill(leader)
        killed_at, at_kill = time.monotonic(), succeeded.count
        await asyncio.sleep(DOWN_S)
        new_leader = await _new_leader(js, STREAM, leader)
        await asyncio.to_thread(cluster.start, leader)  # same ports, same store
        status = await engine.wait_terminal(nc, ids, timeout=120)
        finished_s = time.monotonic() - killed_at
        await asyncio.to_thread(cluster.wait_ready)  # the restarted node has caught up with every stream and consumer
        consumers = {name: await js.consumer_info(STREAM, name) for name in CONSUMERS}
        held = {name: await js.stream_info(name) for name in (STREAM, DLQ_STREAM, AUDIT_STREAM,
                                                               f"KV_{TOOL_CALLS_BUCKET}", f"KV_{WORKFLOW_BUCKET}")}
        histories = [await engine.history(nc, t) for t in ids]
        stored = await js.stream_info(STREAM, subjects_filter=f"ae.{tenant}.llm.called")
        calls = sum((stored.state.subjects or {}).values())
        dead = await js.stream_info(DLQ_STREAM, subjects_filter=dlq_subject("*", tenant))
        ledger = await _ledger_reaches(nc, tenant, calls)
        return {"held": held, "leader": leader, "new_leader": new_leader, "at_kill": at_kill,
                "status": status, "finished_s": finished_s, "consumers": consumers, "histories": histories,
                "calls": calls, "ledger": ledger, "dead_letters": dead.state.subjects or {}}
    finally:
        await nc.close()


async def _new_leader(js: Any, name: str, old: str, timeout: float = 15) -> str | None:
    """The stream's leader once another server than `old` leads it (None if none did within `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            leader = (await js.stream_info(name)).cluster.leader
        except Exception:  # noqa: BLE001  no leader to answer yet
            leader = None
        if leader and leader != old:
            return str(leader)
        await asyncio.sleep(0.2)
    return None


async def _ledger_reaches(nc: Any, tenant: str, calls: int, timeout: float = 30) -> dict[str, Any]:
    """Telemetry's line for the tenant, once it counts `calls` (its ordered consumer resumes after the kill)."""
    deadline = time.monotonic() + timeout
    line: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            msg = await nc.request(rpc_subject(TELEMETRY_RPC, "ledger"), json.dumps({"tenant": tenant}).encode(),
                                   timeout=5)
            line = json.loads(msg.data)
        except Exception:  # noqa: BLE001  telemetry reconnecting: ask again
            pass
        if line.get("calls") == calls:
            break
        await asyncio.sleep(0.5)
    return line


def _both_routers_own_partitions(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(holders(url)) < 2:
        assert time.monotonic() < deadline, f"the second router took no partition within {timeout:g}s"
        time.sleep(0.2)


def test_a_kill_9_of_the_event_streams_leader_loses_no_task_and_completes_no_node_twice(
        own_stack: Any, tenant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_STREAM_REPLICAS", "3")  # this process too: whoever creates a stream first makes it R3
    engine = own_stack(nats_nodes=3, AE_STREAM_REPLICAS="3")
    logs = {name: tmp_path / f"{name}-2.log" for name in REPLICAS}
    replicas = [engine.replica(name, logs[name], **env) for name, env in REPLICAS.items()]
    try:
        _both_routers_own_partitions(engine.env["AE_POSTGRES_URL"])  # else the second may never get work in time
        seen = asyncio.run(_run(engine, tenant))
    finally:
        running = [process.poll() is None for process in replicas]
        for process in replicas:
            process.send_signal(signal.SIGTERM)
        for process in replicas:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    for (name, log), alive, process in zip(logs.items(), running, replicas, strict=True):
        assert alive and process.returncode == 0, f"{name}-2 died or did not stop cleanly:\n{log.read_text()[-3000:]}"

    for name, info in seen["held"].items():
        assert info.config.num_replicas == 3 and len(info.cluster.replicas or []) == 2, (name, info.cluster)
    assert seen["at_kill"] < TASKS * len(WORKING_NODES), "the kill came after all work was done: proves nothing"
    assert seen["new_leader"] not in (None, seen["leader"]), "another node did not take over the stream"
    assert Counter(seen["status"].values()) == Counter({"succeeded": TASKS})
    # a result that could not be published while the stream had no leader is an outage: the dispatch comes back,
    # it is never dead-lettered as if it were a bad message
    assert seen["dead_letters"] == {}, seen["dead_letters"]
    for history in seen["histories"]:
        completed = Counter(e.data["node"] for e in history if e.type == "node.succeeded")
        assert completed == Counter(dict.fromkeys(WORKING_NODES, 1)), completed
        dispatches = [e.data["dispatch_id"] for e in history if e.type == "node.dispatched"]
        assert len(dispatches) == len(set(dispatches)), Counter(dispatches).most_common(2)
        assert len({e.id for e in history}) == len(history)
    for name, info in seen["consumers"].items():  # each durable consumer moved with its stream and drained
        assert info.cluster.leader and len(info.cluster.replicas or []) == 2, (name, info.cluster)
        assert info.num_pending == 0 and info.num_ack_pending == 0, (name, info.num_pending, info.num_ack_pending)
    assert seen["ledger"].get("calls") == seen["calls"], (seen["ledger"], seen["calls"])  # telemetry resumed
    applied = int(logs["router"].read_text().split("router router-2 stopping: applied ")[1].split()[0])
    assert applied > 0, "the second router never consumed: the test proves nothing"
    print(f"killed {seen['leader']} at {seen['at_kill']} of {TASKS * len(WORKING_NODES)} node results; "
          f"{seen['new_leader']} took over; all done {seen['finished_s']:.1f}s after the kill")
