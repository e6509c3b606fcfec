"""`make soak`: many tasks under chaos, then the same checks as `make faults` and a replay check (issue 14).

On a whole engine of its own (bench/cluster.py: NATS and PostgreSQL owned by this process, the five services as
OS processes, authorization on), runs examples/research-review (a tool node and five agent nodes, mock provider)
with tasks submitted continuously at a bounded number in flight, while:

- a random service is killed with `kill -9` every 2–5 s (a random gap in that range) and started again at once as
  `agentctl up` does; its restart time is from the kill until its /readyz says ready;
- NATS is crash-restarted (`kill -9`) once a quarter of the tasks have finished, and PostgreSQL (immediate
  shutdown, crash recovery) once half have, each together with that round's service kill, while tasks are in
  flight; their restart time is from the crash until every service says it is ready.

Every LINE_EVERY finished tasks it prints each service's RSS (the process alone, which the chaos restarts every
few tens of seconds) and the restart times since the line before. At the end, with the chaos stopped:

- 0 lost: every task is terminal, and every one succeeded (research-review's mock reviewer approves);
- 0 doubled: in every task's stored history no node succeeded twice, and every node of a succeeded task once;
- replay equal: for a random sample of tasks the router's replay query (`agentctl task replay`) reproduces the
  stored history exactly;

then PASS or FAIL (exit code 1). Writes bench/results/soak.txt (soak-quick.txt with --quick).

    python bench/soak.py [--tasks 10000] [--inflight 64] [--seed 7] [--mock-delay 0.05]
                         [--every-min 2] [--every-max 5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import EXAMPLE, Cluster
from faults import Chaos, Report, check_histories, count_stream
from growth import Load

from agent_engine.cli.stack import SERVICES
from agent_engine.contracts.subjects import partition_subject
from bench import RESULTS, machine

TASKS = 10_000
QUICK_TASKS = 300
LINE_EVERY = 1_000
QUICK_LINE_EVERY = 100
REPLAY_SAMPLE = 20
NATS_AT, POSTGRES_AT = 0.25, 0.5
"""The share of tasks finished at which NATS, then PostgreSQL, is crash-restarted."""


@dataclass
class Line:
    """What the run looked like when `finished` tasks had ended."""

    finished: int
    seconds: float
    in_flight: int
    rss_mb: dict[str, float | None]
    """None: the service was down at that moment (being restarted)."""
    restarts: dict[str, list[float]]
    """Per service, kill → ready again, in seconds, of each kill since the line before."""
    load_average: float


@dataclass
class SoakReport(Report):
    inflight: int = 0
    lines_: list[Line] = field(default_factory=list)
    restarts: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in SERVICES})
    server_restart_s: dict[str, float] = field(default_factory=dict)
    """NATS or PostgreSQL crash (with that round's service kill) → every service ready again."""
    replay_checked: int = 0
    replay_differs: list[str] = field(default_factory=list)
    error: str = ""
    """Why the run stopped before every task had ended (a stall, a service that would not start)."""

    @property
    def ok(self) -> bool:
        return super().ok and not self.error and self.replay_checked > 0 and not self.replay_differs

    def details(self) -> list[str]:
        every = [s for times in self.restarts.values() for s in times]
        return [
            *super().details(),
            f"replay checked        {self.replay_checked}, differing {len(self.replay_differs)} "
            f"{self.replay_differs[:5]}",
            f"kill -9 → ready       {_spread(every)} over {len(every)} kills",
            "server crash → ready  " + ", ".join(f"{k} {v:.2f} s" for k, v in self.server_restart_s.items()),
            *([f"error                 {self.error}"] if self.error else []),
        ]

    def table(self) -> list[str]:
        names = list(SERVICES)
        rows = [f"{'':>27} | {'RSS MB':^34} | {'kill -9 → ready again, s: median/max (kills)':^84}",
                f"{'finished':>8} {'min':>5} {'tasks/s':>7} {'load':>4} | "
                + " ".join(f"{_short(n):>6}" for n in names) + " | " + " ".join(f"{_short(n):>16}" for n in names)]
        before = Line(0, 0.0, 0, {}, {}, 0.0)
        for line in self.lines_:
            rate = (line.finished - before.finished) / max(line.seconds - before.seconds, 1e-9)
            before = line
            rss = " ".join(f"{'-' if line.rss_mb[n] is None else f'{line.rss_mb[n]:.0f}':>6}" for n in names)
            times = " ".join(f"{_spread(line.restarts[n]):>16}" for n in names)
            rows.append(f"{line.finished:>8,} {line.seconds / 60:>5.1f} {rate:>7.1f} {line.load_average:>4.1f} | "
                        f"{rss} | {times}")
        return rows


def _short(service: str) -> str:
    return {"guardrails": "guard", "agent-runner": "agent", "tool-runner": "tool", "telemetry": "telem"}.get(
        service, service)


def _spread(times: list[float]) -> str:
    if not times:
        return "-"
    return f"{statistics.median(times):.2f}/{max(times):.2f} ({len(times)})"


def rss_now(cluster: Cluster) -> dict[str, float | None]:
    pids = cluster.pids()
    out: dict[str, float | None] = {}
    for name in SERVICES:
        try:
            rss = psutil.Process(pids[name]).memory_info().rss
        except (KeyError, psutil.Error):
            rss = 0
        out[name] = rss / 2**20 or None  # 0: a process that is going or not yet there
    return out


async def run(tasks: int, inflight: int, seed: int, mock_delay: float, every: tuple[float, float], root: Path,
              line_every: int = LINE_EVERY, replay_sample: int = REPLAY_SAMPLE,
              log: Callable[[str], None] = print) -> SoakReport:
    """The whole soak on an engine of its own under `root`; every process it starts is stopped, the environment
    restored."""
    rng = random.Random(seed)
    saved = dict(os.environ)  # the cluster points this process at its own servers and credentials
    cluster = Cluster(root, AE_MOCK_DELAY_S=str(mock_delay))
    report = SoakReport(tasks=tasks, inflight=inflight)
    started = time.monotonic()
    nc = None
    try:
        await asyncio.to_thread(cluster.start)
        nc = await cluster.connect()
        load = Load(cluster, nc, inflight, EXAMPLE, {"brief": "soak: summarise the week's incidents"}, "soak")
        await load.start()
        window: dict[str, list[float]] = {name: [] for name in SERVICES}

        def timed(service: str, seconds: float, server: str | None) -> None:
            if server is not None:
                report.server_restart_s[server] = seconds
            else:
                window[service].append(seconds)
                report.restarts[service].append(seconds)

        def server_due(_round: int) -> str | None:
            if not report.nats_restarts and load.finished >= tasks * NATS_AT:
                return "nats"
            if report.nats_restarts and not report.postgres_restarts and load.finished >= tasks * POSTGRES_AT:
                return "postgres"
            return None

        chaos = Chaos(cluster, report, rng, lambda: rng.uniform(*every), server_due, lambda: load.running, timed,
                      pause=None)
        chaos_run = asyncio.create_task(chaos.run())
        load_began = time.monotonic()

        async def tick() -> None:
            if chaos_run.done():
                chaos_run.result()  # the chaos failed (a service that would not start): stop with its error
                raise RuntimeError("the chaos stopped early")
            if server_due(0) is not None:  # its moment has come: now, not at the next timed round, which a fast
                await chaos.round(0)       # run could finish before
            if load.finished >= (len(report.lines_) + 1) * line_every:
                await add_line()

        async def add_line() -> None:
            line = Line(load.finished, time.monotonic() - load_began, load.running,
                        await asyncio.to_thread(rss_now, cluster), {k: list(v) for k, v in window.items()},
                        os.getloadavg()[0])
            for times in window.values():
                times.clear()
            report.lines_.append(line)
            log("\n".join(report.table()[-1:] if len(report.lines_) > 1 else report.table()))

        log(f"soak: {tasks:,} research-review tasks at {inflight} in flight, a service killed every "
            f"{every[0]:g}–{every[1]:g} s, NATS restarted at {NATS_AT:.0%} and PostgreSQL at {POSTGRES_AT:.0%} "
            f"finished; seed {seed}; under {root}")
        try:
            await load.run_to(tasks, lambda text: log(f"[{time.monotonic() - started:7.1f}s]{text}"), tick)
        except Exception as e:  # noqa: BLE001  reported, and what can be checked still is
            report.error = f"{type(e).__name__}: {e}"
            log(f"the load stopped: {report.error}")
        if not report.lines_ or report.lines_[-1].finished < load.finished:
            await add_line()  # the last tasks ended during a tick that had already passed its line: the table
        chaos.stop.set()      # still ends with the whole run
        try:
            await chaos_run
        except Exception as e:  # noqa: BLE001
            report.error = report.error or f"chaos: {type(e).__name__}: {e}"
        await asyncio.to_thread(cluster.up)
        await cluster.wait_ready(tuple(SERVICES))
        log(f"[{time.monotonic() - started:7.1f}s] load done; reading every task's stored history")
        # what this client saw end (a task it never saw end counts as unfinished); then the store's own word
        seen = {t: load.ended.get(t, "unfinished") for t in load.ids}
        statuses = await check_histories(cluster, nc, seen, report)
        statuses |= {f"never submitted #{i}": "unsubmitted" for i in range(len(load.ids), tasks)}
        report.statuses = Counter(statuses.values())
        report.lost = [t for t, s in statuses.items() if s not in ("succeeded", "failed", "rejected")]
        log(f"[{time.monotonic() - started:7.1f}s] counting node results delivered, replaying a sample")
        report.results_delivered = await count_stream(nc, partition_subject("node.completed", load.tenant))
        succeeded = [t for t in load.ids if statuses[t] == "succeeded"]
        for task_id in rng.sample(succeeded, min(replay_sample, len(succeeded))):
            replayed = await cluster.query(nc, "task.replay", task_id)
            report.replay_checked += 1
            if not replayed.get("identical"):
                report.replay_differs.append(f"{task_id}: {replayed.get('differences', replayed)}"[:300])
    finally:
        if nc is not None:
            await nc.close()
        await asyncio.to_thread(cluster.stop)
        os.environ.clear()
        os.environ.update(saved)
        report.seconds = time.monotonic() - started
    return report


def text(report: SoakReport, command: str) -> str:
    return "\n".join([
        f"Agent Engine soak — {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} — {machine()}",
        f"{command}: {report.tasks:,} tasks of research-review, {report.inflight} in flight; RSS of each service "
        "(restarted by the chaos every few tens of seconds); kill -9 → ready of the kills since the line before",
        "",
        *report.table(),
        "",
        *report.lines(),
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, help=f"tasks to run (default {TASKS:,}; --quick: {QUICK_TASKS})")
    p.add_argument("--inflight", type=int, default=64, help="tasks in flight (default 64)")
    p.add_argument("--seed", type=int, default=7, help="chooses the victims, the gaps and the replay sample")
    p.add_argument("--mock-delay", type=float, default=0.05, help="simulated seconds per LLM call (default 0.05)")
    p.add_argument("--every-min", type=float, default=2.0, help="shortest gap between service kills (default 2 s)")
    p.add_argument("--every-max", type=float, default=5.0, help="longest gap between service kills (default 5 s)")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_TASKS} tasks, a line every {QUICK_LINE_EVERY}")
    args = p.parse_args()
    if not 0 < args.every_min <= args.every_max:
        p.error("need 0 < --every-min <= --every-max")
    tasks = args.tasks or (QUICK_TASKS if args.quick else TASKS)
    line_every = QUICK_LINE_EVERY if args.quick or tasks < 2 * LINE_EVERY else LINE_EVERY
    # SIGTERM as Ctrl-C: the run's finally stops every process it started (the services, NATS, PostgreSQL)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with tempfile.TemporaryDirectory(prefix="ae-soak-") as tmp:
            report = asyncio.run(run(tasks, args.inflight, args.seed, args.mock_delay,
                                     (args.every_min, args.every_max), Path(tmp), line_every))
    except KeyboardInterrupt:
        print("interrupted; every process the run started is stopped", file=sys.stderr)
        return 130
    out = text(report, " ".join(["python bench/soak.py", *sys.argv[1:]]))
    RESULTS.mkdir(exist_ok=True)
    name = "soak-quick.txt" if args.quick else "soak.txt"
    (RESULTS / name).write_text(out + "\n")
    print("\n" + out + f"\n\nwritten: {RESULTS / name}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
