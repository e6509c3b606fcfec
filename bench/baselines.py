"""Baselines measured in the same run as the engine: raw nats-py hops, raw eventsourcing saves,
and LangGraph with its PostgreSQL checkpointer running the same 5-node line."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from agent_engine.runtime.bus import auth_options
from agent_engine.runtime.keyring import credential_from_env

STREAM = "BENCH_RAW"


def summary(latencies: list[float], hops: int, seconds: float) -> dict[str, float]:
    ordered = sorted(latencies) or [0.0]
    return {"hops_per_s": hops / seconds, "p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, "hops": hops}


# --- raw nats-py: publish, durable pull consume + ack, publish back, consume + ack ---------------

async def _pull(js: Any, durable: str, subject: str) -> Any:
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=durable, filter_subject=subject,
                                                 ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10000))
    return await js.pull_subscribe_bind(durable, stream=STREAM)


async def raw_worker(url: str, run: str) -> None:
    """The far side of a raw hop, in its own process like a runner: consume req, publish resp, ack."""
    nc = await nats.connect(url, **auth_options(credential_from_env()))
    js = nc.jetstream()
    sub = await _pull(js, f"worker-{run}", f"bench.{run}.req")
    while True:
        try:
            msgs = await sub.fetch(256, timeout=1.0)
        except Exception:  # noqa: BLE001  idle
            continue
        await asyncio.gather(*(js.publish(f"bench.{run}.resp", m.data) for m in msgs))
        await asyncio.gather(*(m.ack() for m in msgs))


async def raw_nats(url: str, inflight: int, seconds: float) -> dict[str, float]:
    run = uuid.uuid4().hex[:8]
    nc = await nats.connect(url, **auth_options(credential_from_env()))
    js = nc.jetstream()
    try:
        await js.add_stream(StreamConfig(name=STREAM, subjects=["bench.>"]))
    except Exception:  # noqa: BLE001  exists already
        pass
    worker = subprocess.Popen([sys.executable, __file__, "worker", url, run])
    sub = await _pull(js, f"driver-{run}", f"bench.{run}.resp")
    sent: dict[bytes, float] = {}
    latencies: list[float] = []
    hops = 0

    async def send(i: int) -> None:
        key = f"{i}:{time.perf_counter_ns()}".encode()
        sent[key] = time.perf_counter()
        await js.publish(f"bench.{run}.req", key)

    await asyncio.gather(*(send(i) for i in range(inflight)))
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        try:
            msgs = await sub.fetch(256, timeout=1.0)
        except Exception:  # noqa: BLE001
            continue
        now = time.perf_counter()
        for m in msgs:
            latencies.append(now - sent.pop(m.data))
        hops += len(msgs)
        await asyncio.gather(*(m.ack() for m in msgs))
        await asyncio.gather(*(send(int(m.data.split(b":")[0])) for m in msgs))
    elapsed = time.perf_counter() - start
    worker.kill()
    worker.wait()
    await nc.close()
    return summary(latencies, hops, elapsed)


# --- raw eventsourcing: one aggregate event per save ---------------------------------------------

def eventsourcing_save_ms(env: dict[str, str], saves: int = 400) -> float:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Counter(Aggregate):
        def __init__(self) -> None:
            self.n = 0

        @event("Incremented")
        def increment(self) -> None:
            self.n += 1

    class Bench(Application[uuid.UUID]):
        name = f"bench{uuid.uuid4().hex[:6]}"

    app = Bench(env=env)
    counter = Counter()
    app.save(counter)
    start = time.perf_counter()
    for _ in range(saves):
        counter.increment()
        app.save(counter)
    elapsed = time.perf_counter() - start
    app.close()
    return elapsed / saves * 1000


def eventsourcing_rebuild_ms(env: dict[str, str], events: int) -> float:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Log(Aggregate):
        def __init__(self) -> None:
            self.lines: list[str] = []

        @event("Appended")
        def append(self, line: str) -> None:
            self.lines.append(line)

    class Bench(Application[uuid.UUID]):
        name = f"bench{uuid.uuid4().hex[:6]}"

    app = Bench(env=env)
    log = Log()
    for i in range(events - 1):
        log.append(f"line {i}")
    app.save(log)
    start = time.perf_counter()
    app.repository.get(log.id)
    elapsed = time.perf_counter() - start
    app.close()
    return elapsed * 1000


# --- LangGraph with the PostgreSQL checkpointer --------------------------------------------------

async def langgraph(postgres_url: str, inflight: int, seconds: float) -> dict[str, float]:
    from typing import TypedDict

    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from langgraph.graph import END, START, StateGraph
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    class State(TypedDict):
        steps: int

    stamps: list[float] = []
    latencies: list[float] = []

    def step(state: State) -> dict[str, int]:
        return {"steps": state["steps"] + 1}

    builder = StateGraph(State)
    names = [f"n{i}" for i in range(1, 6)]
    for name in names:
        builder.add_node(name, step)
    builder.add_edge(START, names[0])
    for a, b in itertools.pairwise(names):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)

    pool = AsyncConnectionPool(postgres_url, min_size=1, max_size=min(inflight, 32) + 1, open=False,
                               kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
    await pool.open()
    saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
    await saver.setup()
    graph = builder.compile(checkpointer=saver)
    steps = 0
    end = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal steps
        while time.perf_counter() < end:
            last = time.perf_counter()
            config = {"configurable": {"thread_id": uuid.uuid4().hex}}
            async for _ in graph.astream({"steps": 0}, config, stream_mode="updates"):
                now = time.perf_counter()
                latencies.append(now - last)
                stamps.append(now)
                last = now
                steps += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(inflight)))
    elapsed = time.perf_counter() - start
    await pool.close()
    return summary(latencies, steps, elapsed)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "worker":
    asyncio.run(raw_worker(sys.argv[2], sys.argv[3]))
