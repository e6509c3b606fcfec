"""Where a hop's time goes, with K routers: every event of the bench's tasks as a client sees it, then each hop
split into its legs. `make bench` says how long hops take; this says which leg the slow ones spend it in.

A hop (as `make bench` measures it) runs from one `node.succeeded` of a task to the next. Its legs, each from
one sighting to the next:

    dispatch: node.succeeded → the next node.dispatched (one commit holds both: the relay's order)
    runner:   node.dispatched → node.completed (the agent-runner: fetch, answer, publish)
    router:   node.completed → node.succeeded (the router: fetch, decide, commit, the relay's publish)

    python bench/hoptrace.py [--routers 2] [--inflight 64] [--seconds 10]

Prints, for all hops and for the slowest 1 %, the median of each leg and which router owned the slow hops'
partitions. `--logs DIR` keeps the services' logs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import ROOT, Cluster

from agent_engine.cli.stack import Stack
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.subjects import partition_of, tenant_subject
from agent_engine.runtime.processes import stop_pid
from bench import WORKFLOW, wait_split

LEGS = ("dispatch", "runner", "router")


def legs(seen: list[tuple[float, Envelope]]) -> list[tuple[float, dict[str, float]]]:
    """One task's sightings (time seen, event) in the order seen → (hop seconds, seconds per leg) per hop."""
    hops = []
    last_succeeded: float | None = None
    dispatched = completed = None
    for at, event in seen:
        if event.type == "node.dispatched":
            dispatched = at
        elif event.type == "node.completed":
            completed = at
        elif event.type == "node.succeeded":
            if last_succeeded is not None and dispatched is not None and completed is not None:
                hops.append((at - last_succeeded, {"dispatch": dispatched - last_succeeded,
                                                   "runner": completed - dispatched, "router": at - completed}))
            last_succeeded, dispatched, completed = at, None, None
    return hops


def report(hops: list[tuple[float, dict[str, float]]], label: str) -> str:
    if not hops:
        return f"{label}: no hops"
    line = f"{label} ({len(hops)} hops): hop p50 {statistics.median(h for h, _ in hops) * 1000:.0f} ms;"
    return line + "".join(f" {leg} {statistics.median(d[leg] for _, d in hops) * 1000:.0f}" for leg in LEGS) + " ms"


async def trace(cluster: Cluster, inflight: int, seconds: float) -> dict[str, list[tuple[float, Envelope]]]:
    nc = await cluster.connect()
    tenant = f"bench{uuid.uuid4().hex[:8]}"
    workflow = await cluster.push(nc, tenant, WORKFLOW)
    seen: dict[str, list[tuple[float, Envelope]]] = defaultdict(list)
    ids: set[str] = set()
    window = {"end": 0.0}

    async def on_event(msg: Any) -> None:
        at = time.time()
        try:
            event = Envelope.model_validate_json(msg.data)
        except ValueError:
            return
        if event.id in ids:  # a copy JetStream dropped (a plain subscription gets it all the same): seen already
            return
        ids.add(event.id)
        seen[event.task_id].append((at, event))
        if event.type == "task.succeeded" and time.time() < window["end"]:
            await cluster.submit(nc, tenant, workflow, {})

    await nc.subscribe(tenant_subject(tenant), cb=on_event)
    window["end"] = time.time() + seconds
    for _ in range(inflight):
        await cluster.submit(nc, tenant, workflow, {})
    await asyncio.sleep(seconds + 3.0)
    await nc.close()
    return seen


async def main_async(routers: int, inflight: int, seconds: float, keep_logs: Path | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="ae-hoptrace-") as tmp:
        cluster = Cluster(Path(tmp), AE_MOCK_DELAY_S="0")
        await asyncio.to_thread(cluster.start)
        stack = Stack.load(cluster.root / "home")
        extra = [stack.spawn("router", ROOT, cluster.root / f"router-{i}.log", {"AE_ROUTER_NAME": f"router-{i}"})
                 for i in range(2, routers + 1)]
        try:
            await wait_split(cluster, routers)
            from agent_engine.router.partitions import holders

            assert cluster.postgres is not None
            owner = {p: pid for pid, parts in holders(cluster.postgres.url).items() for p in parts}
            seen = await trace(cluster, inflight, seconds)
        finally:
            for process in extra:
                await asyncio.to_thread(stop_pid, process.pid, 40.0)
            await asyncio.to_thread(cluster.stop)
            if keep_logs is not None:
                keep_logs.mkdir(parents=True, exist_ok=True)
                for log in cluster.root.rglob("*.log"):
                    shutil.copy(log, keep_logs / log.name)
    hops = [(h, d, owner.get(partition_of(task))) for task, events in seen.items() for h, d in legs(events)]
    hops.sort(key=lambda x: x[0])
    slow = hops[int(len(hops) * 0.99):]
    print(f"{routers} router(s), {inflight} in flight, {seconds:.0f} s: {len(seen)} tasks")
    print(report([(h, d) for h, d, _ in hops], "all"))
    print(report([(h, d) for h, d, _ in slow], "slowest 1 %"))
    print("slowest 1 % by the backend pid owning the task's partition:", dict(Counter(pid for _, _, pid in slow)))
    worst = slow[-5:]
    print("the five slowest:", json.dumps([{k: round(v * 1000) for k, v in d.items()} | {"hop": round(h * 1000)}
                                          for h, d, _ in worst]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--routers", type=int, default=2, help="routers (default 2)")
    p.add_argument("--inflight", type=int, default=64, help="tasks in flight (default 64)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of new tasks (default 10)")
    p.add_argument("--logs", type=Path, help="copy the services' logs into this directory")
    args = p.parse_args()
    asyncio.run(main_async(args.routers, args.inflight, args.seconds, args.logs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
