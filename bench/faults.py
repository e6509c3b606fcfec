"""Fault injection: while N tasks run, kill -9 a random service every few seconds and bring it
back, crash-restart NATS once and PostgreSQL once; then check that every task reached a terminal
status, none was lost, and no node's effect was applied twice.

    python bench/faults.py [--tasks 200] [--every 3] [--mock-delay 0.3] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import ROOT, Cluster

from agent_engine.cli.stack import SERVICES
from agent_engine.contracts.subjects import partition_subject, type_subject
from agent_engine.runtime.bus import TASK_ID_HEADER

EXAMPLE = ROOT / "examples" / "research-review"
STORED_ENDS = {"task.succeeded", "task.failed", "task.cancelled"}
NODES = {"gather_context", "interpretation", "decomposition", "planning", "execution", "review"}


@dataclass
class Report:
    tasks: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    nats_restarts: int = 0
    postgres_restarts: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    not_exactly_once: list[str] = field(default_factory=list)
    unfinished_at: dict[str, int] = field(default_factory=dict)
    """How many tasks had not finished when each server was restarted (0 would prove nothing)."""
    results_delivered: int = 0
    results_applied: int = 0
    seconds: float = 0.0

    @property
    def redeliveries_absorbed(self) -> int:
        return self.results_delivered - self.results_applied

    @property
    def ok(self) -> bool:
        return (not self.lost and not self.not_exactly_once and self.statuses.get("succeeded", 0) == self.tasks
                and all(self.unfinished_at.get(k, 0) > 0 for k in ("nats", "postgres")))

    def lines(self) -> list[str]:
        return [*self.details(), "RESULT                " + ("PASS" if self.ok else "FAIL")]

    def details(self) -> list[str]:
        return [
            f"tasks                 {self.tasks}",
            f"statuses              {dict(self.statuses)}",
            f"service kills         {sum(self.kills.values())} {dict(self.kills)}",
            f"NATS restarts         {self.nats_restarts}",
            f"PostgreSQL restarts   {self.postgres_restarts}",
            f"unfinished at restart {self.unfinished_at}",
            f"results delivered     {self.results_delivered}",
            f"results applied       {self.results_applied}",
            f"redeliveries absorbed {self.redeliveries_absorbed}",
            f"lost tasks            {len(self.lost)} {self.lost[:5]}",
            f"not exactly once      {len(self.not_exactly_once)} {self.not_exactly_once[:5]}",
            f"wall time             {self.seconds:.1f}s",
        ]


class Chaos:
    """Kills a random service with `kill -9` at each round and brings it back; at the round `server_due` names,
    crash-restarts NATS or PostgreSQL too. `unfinished` says how many tasks were not finished then (0 would prove
    nothing); `pause`: a random wait in that range before the service is started again; `timed` is told each
    service's kill → ready again (its /readyz; every service's after a server restart), in seconds, and the server
    restarted with it."""

    def __init__(self, cluster: Cluster, report: Report, rng: random.Random, gap: Callable[[], float],
                 server_due: Callable[[int], str | None], unfinished: Callable[[], int],
                 timed: Callable[[str, float, str | None], None] | None = None,
                 pause: tuple[float, float] | None = (0.2, 1.0)) -> None:
        self.cluster, self.report, self.rng, self.gap = cluster, report, rng, gap
        self.server_due, self.unfinished, self.timed, self.pause = server_due, unfinished, timed, pause
        self.stop = asyncio.Event()
        self.lock = asyncio.Lock()
        """One round at a time: a caller may also run one between the timed rounds (see `round`)."""

    async def run(self) -> None:
        round_no = 0
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), self.gap())
                return
            except TimeoutError:
                pass
            round_no += 1
            await self.round(round_no)

    async def round(self, round_no: int) -> None:
        """One kill, and the server restart due, if one is. Besides the timed rounds, a load that is about to
        pass a server's moment calls one itself, so a run that goes fast still restarts each server with tasks
        in flight."""
        async with self.lock:
            await self._round(round_no)

    async def _round(self, round_no: int) -> None:
        victim = self.rng.choice(sorted(SERVICES))
        began = time.perf_counter()
        await asyncio.to_thread(self.cluster.kill, victim)
        self.report.kills[victim] += 1
        server = self.server_due(round_no)
        if server is not None:
            self.report.unfinished_at[server] = self.unfinished()
            await asyncio.to_thread(self.cluster.restart_nats if server == "nats" else self.cluster.restart_postgres)
            if server == "nats":
                self.report.nats_restarts += 1
            else:
                self.report.postgres_restarts += 1
        if self.pause:
            await asyncio.sleep(self.rng.uniform(*self.pause))  # the engine runs without it for a moment
        await asyncio.to_thread(self.cluster.up)
        if self.timed is not None:
            await self.cluster.wait_ready(tuple(SERVICES) if server else (victim,))
            self.timed(victim, time.perf_counter() - began, server)


async def check_histories(cluster: Cluster, nc: Client, statuses: dict[str, str], report: Report,
                          at_once: int = 8) -> dict[str, str]:
    """Each task's stored history: no node's success recorded twice, and every node of a succeeded task once;
    counts the node results the router applied. Returns each task's status as its history ends ("unfinished":
    no terminal record)."""
    gate = asyncio.Semaphore(at_once)
    stored: dict[str, str] = {}

    async def check(task_id: str) -> None:
        async with gate:
            for attempt in range(3):  # a query can time out on a busy machine
                try:
                    history = await cluster.history(nc, task_id)
                    break
                except Exception:
                    if attempt == 2:
                        raise
                    await asyncio.sleep(1.0)
        ends = [e.type.removeprefix("task.") for e in history if e.type in STORED_ENDS]
        stored[task_id] = ends[-1] if ends else "unfinished"
        applied = Counter(e.data["node"] for e in history if e.type == "node.succeeded")
        report.results_applied += sum(1 for e in history if e.type == "router.input"
                                      and e.data["input"]["type"] == "node.completed")
        if any(n > 1 for n in applied.values()) or (statuses[task_id] == "succeeded" and set(applied) != NODES):
            report.not_exactly_once.append(f"{task_id} {statuses[task_id]} {dict(applied)} "
                                           f"{[e.type for e in history][-4:]}")

    await asyncio.gather(*(check(t) for t in statuses))
    return stored


async def run(tasks: int, every: float, mock_delay: float, seed: int, root: Path, timeout: float = 600) -> Report:
    rng = random.Random(seed)
    cluster = Cluster(root, AE_MOCK_DELAY_S=str(mock_delay))
    report = Report(tasks=tasks)
    started = time.monotonic()
    await asyncio.to_thread(cluster.start)
    try:
        nc = await cluster.connect()
        tenant = f"faults{uuid.uuid4().hex[:8]}"
        workflow = await cluster.push(nc, tenant, EXAMPLE)
        ids = [await cluster.submit(nc, tenant, workflow, {"brief": f"fault run task {i}"}) for i in range(tasks)]
        finished: set[str] = set()

        async def on_finished(msg) -> None:  # type: ignore[no-untyped-def]
            finished.add(msg.headers.get(TASK_ID_HEADER, "") if msg.headers else "")

        await nc.subscribe(type_subject("task.succeeded", tenant), cb=on_finished)
        await nc.subscribe(type_subject("task.failed", tenant), cb=on_finished)
        chaos = Chaos(cluster, report, rng, lambda: every, {2: "nats", 3: "postgres"}.get,
                      lambda: report.tasks - len(finished))
        running = asyncio.create_task(chaos.run())
        # let the chaos run at least until PostgreSQL was restarted, then wait for the tasks
        while report.postgres_restarts == 0 and not running.done():
            await asyncio.sleep(0.5)
        statuses = await cluster.wait_terminal(nc, ids, timeout)
        chaos.stop.set()
        await running
        await asyncio.to_thread(cluster.up)
        report.statuses = Counter(statuses.values())
        report.lost = [t for t, s in statuses.items() if s not in ("succeeded", "failed", "rejected")]
        await check_histories(cluster, nc, statuses, report)
        report.results_delivered = await count_stream(nc, partition_subject("node.completed", tenant))
        await nc.close()
    finally:
        await asyncio.to_thread(cluster.stop)
    report.seconds = time.monotonic() - started
    return report


async def count_stream(nc: Client, subject: str) -> int:
    """node.completed messages stored for the run (each redelivered dispatch may add one)."""
    js = nc.jetstream()
    sub = await js.subscribe(subject, ordered_consumer=True)
    count = 0
    try:
        while True:
            await sub.next_msg(timeout=2.0)
            count += 1
    except Exception:  # noqa: BLE001  idle for 2 s: everything was read
        return count
    finally:
        await sub.unsubscribe()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--every", type=float, default=3.0, help="seconds between service kills (default 3)")
    p.add_argument("--mock-delay", type=float, default=1.0, help="simulated seconds per LLM call (default 1.0)")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ae-faults-") as tmp:
        report = asyncio.run(run(args.tasks, args.every, args.mock_delay, args.seed, Path(tmp)))
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
