"""`make bench`: the engine against baselines measured in the same run, on the same servers.

Engine: hops/s and per-hop latency (p50/p99) for a 5-node LINEAR workflow with the mock provider
at zero delay, at 1, 16, 64 and 256 tasks in flight; all five services run as processes on real
NATS and PostgreSQL. Then the same with K routers (partitions split between them; `--routers`, default
1,2) at the busy levels. Baselines: raw nats-py hops, raw eventsourcing saves, LangGraph with its
PostgreSQL checkpointer running the same 5-node line. At 64 in flight, each process's CPU time per hop (bench/cpu.py).
Prints a table; writes bench/results/latest.json.

    python bench/bench.py [--seconds 8] [--levels 1,16,64,256] [--routers 1,2]
    python bench/bench.py --rebuild-only     # only the rebuild figures, on a PostgreSQL of its own
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baselines
import cpu
from cluster import ROOT, Cluster

from agent_engine.cli.stack import Stack
from agent_engine.contracts.envelope import command, derive_id
from agent_engine.contracts.events import NodeDispatched, NodeSucceeded
from agent_engine.contracts.subjects import PARTITIONS, type_subject
from agent_engine.router.core import fold
from agent_engine.router.store import TaskStore, eventsourcing_env
from agent_engine.runtime.bus import MSG_ID, TASK_ID_HEADER
from agent_engine.runtime.processes import stop_pid

WORKFLOW = Path(__file__).parent / "workflows" / "linear5"
RESULTS = Path(__file__).parent / "results"


async def engine_level(cluster: Cluster, inflight: int, seconds: float, clock: cpu.CpuClock | None = None
                       ) -> dict[str, Any]:
    """Keep `inflight` tasks running (a finished task is replaced at once) for `seconds`. With a `clock`, each
    process's CPU time per hop over the same window goes in the result too."""
    nc = await cluster.connect()
    tenant = f"bench{uuid.uuid4().hex[:8]}"
    workflow = await cluster.push(nc, tenant, WORKFLOW)
    last_hop: dict[str, float] = {}
    latencies: list[float] = []
    hops = 0
    window = {"open": False, "end": 0.0}
    rss_peak = 0

    seen: set[str] = set()

    def first(msg: Any) -> bool:
        """Whether this is the first sighting of the event: a plain subscription also gets the copies JetStream
        drops (a record published again, by a relay after a crash or, before 2026-12-04, by every router's)."""
        event_id = (msg.headers or {}).get(MSG_ID, "")
        if event_id in seen:
            return False
        seen.add(event_id)
        return True

    async def on_hop(msg: Any) -> None:
        nonlocal hops
        now = time.perf_counter()
        if not first(msg):
            return
        task_id = msg.headers.get(TASK_ID_HEADER, "")
        if window["open"]:
            hops += 1
            if task_id in last_hop:
                latencies.append(now - last_hop[task_id])
        last_hop[task_id] = now

    async def on_done(msg: Any) -> None:
        if not first(msg):
            return
        last_hop.pop(msg.headers.get(TASK_ID_HEADER, ""), None)
        if time.perf_counter() < window["end"] or not window["open"]:
            await cluster.submit(nc, tenant, workflow, {})

    await nc.subscribe(type_subject("node.succeeded", tenant), cb=on_hop)
    await nc.subscribe(type_subject("task.succeeded", tenant), cb=on_done)
    services = [psutil.Process(pid) for pid in cluster.pids().values()]
    rss_idle = sum(p.memory_info().rss for p in services)
    for _ in range(inflight):
        await cluster.submit(nc, tenant, workflow, {})
    await asyncio.sleep(min(2.0, seconds / 4))  # warm up: let the pipeline fill
    used = clock.read() if clock else {}
    start = time.perf_counter()
    window.update(open=True, end=start + seconds)
    while time.perf_counter() < window["end"]:
        await asyncio.sleep(0.25)
        rss_peak = max(rss_peak, sum(p.memory_info().rss for p in services))
    elapsed = time.perf_counter() - start
    window["open"] = False
    if clock:
        used = cpu.per_hop(used, clock.read(), hops)
    await asyncio.sleep(2.0)  # drain what is in flight before the next level
    await nc.close()
    result: dict[str, Any] = dict(baselines.summary(latencies, hops, elapsed))
    result["rss_per_task_kib"] = max(0, rss_peak - rss_idle) / inflight / 1024
    if clock:
        result["cpu_ms_per_hop"] = used
    return result


ROUTED_LEVELS = (64, 256)
"""Levels run again with K routers: where one router's core is the limit."""


async def with_routers(cluster: Cluster, k: int, levels: list[int], seconds: float) -> dict[str, Any]:
    """Start K-1 more routers beside the stack's, wait until the partitions are split between all K, run the
    levels, stop the extra routers."""
    stack = Stack.load(cluster.root / "home")
    extra = [stack.spawn("router", ROOT, cluster.root / f"router-{i}.log", {"AE_ROUTER_NAME": f"router-{i}"})
             for i in range(2, k + 1)]
    try:
        await wait_split(cluster, k)
        return {str(level): await engine_level(cluster, level, seconds) for level in levels}
    finally:
        for process in extra:
            await asyncio.to_thread(stop_pid, process.pid, 40.0)  # SIGTERM: it drains and gives its partitions up
        await wait_split(cluster, 1)


async def wait_split(cluster: Cluster, k: int, timeout: float = 60) -> None:
    from agent_engine.router.partitions import holders

    assert cluster.postgres is not None
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        held = await asyncio.to_thread(holders, cluster.postgres.url)
        if len(held) == k and sum(len(parts) for parts in held.values()) == PARTITIONS:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the partitions were not split over {k} routers within {timeout:.0f} s")


def rebuild_ms(postgres_url: str, events: int, snapshot_every: int | None = None) -> tuple[float, float]:
    """Time to load one task with `events` stored records, saved as the router saves them (with the state
    after each batch, so it is snapshotted every AE_SNAPSHOT_EVERY records): (load, as the router does;
    the fold of every record, as replay and history read them)."""
    store = TaskStore(postgres_url, os.urandom(32), snapshot_every)  # its own master key, and a tenant of its own
    task_id, tenant = str(uuid.uuid4()), f"bench{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    records = []
    for i in range(events):
        dispatch_id, attempt = derive_id(task_id, i // 2), 1 + i // 2
        data: NodeDispatched | NodeSucceeded = (
            NodeDispatched(dispatch_id=dispatch_id, node="n1", kind="agent", attempt=attempt, deadline=now)
            if i % 2 == 0 else NodeSucceeded(dispatch_id=dispatch_id, node="n1", attempt=attempt, output={"i": i}))
        records.append(command(data, id=derive_id(task_id, "rec", i), source="bench", tenant=tenant,
                               task_id=task_id))
    state = fold([])
    for chunk in range(0, events, 1000):
        state = fold(records[chunk:chunk + 1000], state)
        store.save({task_id: (chunk, records[chunk:chunk + 1000])}, {task_id: state})
    start = time.perf_counter()
    loaded = store.load(task_id)
    load = time.perf_counter() - start
    start = time.perf_counter()
    whole = fold(store.records(task_id))
    full = time.perf_counter() - start
    assert loaded == whole and whole.version == events
    store.close()
    return load * 1000, full * 1000


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def table(r: dict[str, Any]) -> str:
    lines = [f"Agent Engine bench — {r['when']} — {r['machine']}", "",
             f"{'in flight':>9} | {'engine hops/s':>13} | {'raw nats hops/s':>15} {'ratio':>6} | "
             f"{'LangGraph steps/s':>17} {'ratio':>6} | {'engine p50/p99 ms':>17} | {'raw nats p50 ms':>15} | "
             f"{'LangGraph p50 ms':>16} {'ratio':>6} | {'RSS/task KiB':>12}"]
    for level in r["levels"]:
        e, n, g = r["engine"][str(level)], r["raw_nats"][str(level)], r["langgraph"][str(level)]
        lines.append(
            f"{level:>9} | {e['hops_per_s']:>13.0f} | {n['hops_per_s']:>15.0f} "
            f"{ratio(e['hops_per_s'], n['hops_per_s']):>6} | "
            f"{g['hops_per_s']:>17.0f} {ratio(e['hops_per_s'], g['hops_per_s']):>6} | "
            f"{e['p50_ms']:>8.2f}/{e['p99_ms']:<8.2f} | {n['p50_ms']:>15.2f} | "
            f"{g['p50_ms']:>16.2f} {ratio(e['p50_ms'], g['p50_ms']):>6} | {e['rss_per_task_kib']:>12.1f}")
    es, rb, rbb = r["eventsourcing_save_ms"], r["rebuild_10k_ms"], r["eventsourcing_rebuild_10k_ms"]
    full = r.get("rebuild_10k_full_fold_ms", 0.0)
    e1 = r["engine"][str(r["levels"][0])]["p50_ms"]
    lines += ["",
              f"raw eventsourcing save of one event: {es:.2f} ms; engine p50 hop at {r['levels'][0]} in flight is "
              f"{ratio(e1, es)} that",
              f"rebuild a task of 10,000 events: {rb:.0f} ms from its snapshot ({full:.0f} ms folding every record, "
              f"as replay does); raw eventsourcing aggregate of 10,000 events: {rbb:.0f} ms ({ratio(rb, rbb)})"]
    if "cpu_ms_per_hop" in r["engine"].get("64", {}):
        e64 = r["engine"]["64"]
        lines += cpu.lines(e64["cpu_ms_per_hop"], e64["hops_per_s"], r["langgraph"]["64"]["hops_per_s"],
                           r.get("cores") or 1)
    first = str(r["levels"][0])
    lines.append(cpu.floor_line(r["raw_nats"][first]["p50_ms"], es, r["langgraph"][first]["p50_ms"], int(first)))
    for k, levels in sorted(r.get("routers", {}).items()):
        for level, e in sorted(levels.items(), key=lambda kv: int(kv[0])):
            one = r["engine"].get(level)
            lines.append(f"{k} routers at {level} in flight: {e['hops_per_s']:.0f} hops/s"
                         + (f" ({ratio(e['hops_per_s'], one['hops_per_s'])} one router's), " if one else ", ")
                         + f"p50/p99 {e['p50_ms']:.2f}/{e['p99_ms']:.2f} ms")
    t = r["targets"]
    names = {"steps_per_s_at_64_vs_langgraph": "hops/s at 64 (best of the router counts) / LangGraph's",
             "steps_per_s_at_64_vs_raw_nats": "hops/s at 64 (best of the router counts) / raw nats-py's",
             "p50_at_1_vs_langgraph": "p50 at 1 in flight / LangGraph's",
             "rebuild_10k_ms": "rebuild of 10,000 events, ms",
             "rss_kib_per_task_at_256": "RSS per in-flight task at 256, KiB"}
    lines += ["", "targets (issue 14):"]
    for key, (measured, goal, at_least, met) in t.items():
        lines.append(f"  {names[key]:<55} {measured:>8.2f} {'>=' if at_least else '<='} {goal:<6g} "
                     f"{'met' if met else 'NOT MET'}")
    return "\n".join(lines)


async def main_async(levels: list[int], seconds: float, routers: list[int] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ae-bench-") as tmp:
        cluster = Cluster(Path(tmp), AE_MOCK_DELAY_S="0")
        await asyncio.to_thread(cluster.start)
        try:
            assert cluster.nats is not None and cluster.postgres is not None
            result: dict[str, Any] = {"engine": {}, "raw_nats": {}, "langgraph": {}, "levels": levels}
            for level in levels:
                print(f"engine at {level} in flight ...", flush=True)
                clock = (cpu.CpuClock(cluster.pids(), cluster.nats.pid, cluster.postgres.pid) if level == 64
                         else None)
                result["engine"][str(level)] = await engine_level(cluster, level, seconds, clock)
            result["routers"] = {}
            for k in [k for k in routers or [] if k > 1]:
                routed = [level for level in levels if level in ROUTED_LEVELS] or levels[-1:]
                print(f"engine with {k} routers at {routed} in flight ...", flush=True)
                result["routers"][str(k)] = await with_routers(cluster, k, routed, seconds)
            await asyncio.to_thread(Cluster.stop_services, cluster)
            for level in levels:
                print(f"raw nats-py at {level} in flight ...", flush=True)
                result["raw_nats"][str(level)] = await baselines.raw_nats(cluster.nats.url, level, seconds)
            for level in levels:
                print(f"LangGraph at {level} in flight ...", flush=True)
                result["langgraph"][str(level)] = await baselines.langgraph(cluster.postgres.url, level, seconds)
            env = eventsourcing_env(cluster.postgres.url)
            result["eventsourcing_save_ms"] = baselines.eventsourcing_save_ms(env)
            result["rebuild_10k_ms"], result["rebuild_10k_full_fold_ms"] = rebuild_ms(cluster.postgres.url, 10_000)
            result["eventsourcing_rebuild_10k_ms"] = baselines.eventsourcing_rebuild_ms(env, 10_000)
        finally:
            await asyncio.to_thread(cluster.stop)
    at64 = str(64 if 64 in levels else levels[-1])
    at1 = str(levels[0])
    e64, n64, g64 = result["engine"][at64], result["raw_nats"][at64], result["langgraph"][at64]
    at256 = str(256 if 256 in levels else levels[-1])
    best64 = max([e64["hops_per_s"]] + [k[at64]["hops_per_s"] for k in result["routers"].values() if at64 in k])
    result["targets"] = {  # issue 14's, each as (measured, target, met)
        "steps_per_s_at_64_vs_langgraph": target(best64 / g64["hops_per_s"], 2.0, at_least=True),
        "steps_per_s_at_64_vs_raw_nats": target(best64 / n64["hops_per_s"], 0.3, at_least=True),
        "p50_at_1_vs_langgraph": target(result["engine"][at1]["p50_ms"] / result["langgraph"][at1]["p50_ms"], 1.5),
        "rebuild_10k_ms": target(result["rebuild_10k_ms"], 100.0),
        "rss_kib_per_task_at_256": target(result["engine"][at256]["rss_per_task_kib"], 40.0),
    }
    result["when"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    result["machine"] = machine()
    result["cores"] = psutil.cpu_count()
    return result


def target(measured: float, goal: float, at_least: bool = False) -> tuple[float, float, bool, bool]:
    return measured, goal, at_least, measured >= goal if at_least else measured <= goal


def machine() -> str:
    return (f"{platform.machine()}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}")


def rebuild_only(repeat: int = 5) -> None:
    """The rebuild figures alone (median of `repeat` tasks each): without snapshots, with them at
    AE_SNAPSHOT_EVERY, and with the longest tail a snapshot leaves (every - 1 records after it)."""
    from statistics import median

    from agent_engine.router.snapshots import every_from_env
    from agent_engine.runtime import embedded

    every = every_from_env() or 200
    with tempfile.TemporaryDirectory(prefix="ae-bench-") as tmp:
        server = embedded.start_postgres(Path(tmp) / "postgres", durable=False)
        try:
            for label, events, snapshot_every in (("no snapshots", 10_000, 0),
                                                  (f"snapshots every {every}", 10_000, every),
                                                  (f"snapshots every {every}, tail of {every - 1}",
                                                   10_000 + every - 1, every)):
                runs = [rebuild_ms(server.url, events, snapshot_every) for _ in range(repeat)]
                print(f"rebuild a task of {events:,} events, {label}: {median(r[0] for r in runs):.1f} ms "
                      f"(folding every record: {median(r[1] for r in runs):.1f} ms)", flush=True)
        finally:
            server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level (default 8)")
    p.add_argument("--levels", default="1,16,64,256", help="tasks in flight (default 1,16,64,256)")
    p.add_argument("--routers", default="1,2", help="router counts K to run the busy levels with (default 1,2)")
    p.add_argument("--rebuild-only", action="store_true", help="only the rebuild figures (no services)")
    args = p.parse_args()
    if args.rebuild_only:
        rebuild_only()
        return 0
    result = asyncio.run(main_async([int(x) for x in args.levels.split(",")], args.seconds,
                                    [int(x) for x in args.routers.split(",")]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2))
    text = table(result)
    (RESULTS / "latest.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
