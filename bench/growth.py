"""`make bench-growth`: does what the engine costs grow with its own history? (issue 14)

Runs bench/workflows/linear5 (five agent nodes in a line, mock provider at zero delay) at 64 tasks in flight on a
whole engine (bench/cluster.py: NATS and PostgreSQL owned by this process, the five services as OS processes,
authorization on). At each checkpoint of finished tasks it stops feeding tasks, lets those in flight finish, then:

- records each service's RSS (psutil, the process alone), idle, before this checkpoint's restarts;
- router: `kill -9`, starts it again as `agentctl up` does (Stack.up), submits a new task, and times the kill
  until that task finished (and until the restarted router said it was ready);
- telemetry: `kill -9`, starts it again, and times the kill until its ledger answers with every call made so far.

Then it feeds tasks again up to the next checkpoint. The router and telemetry measured at a checkpoint were
therefore started at the previous one (with all the history before it in the store); the other three services
have run since the start. Prints a table and the issue's targets, met or not: each service's RSS within 15 %
between the first checkpoint of at least 2,000 finished tasks and the largest, and the router's restart at the
largest within 1.2x of the smallest. Writes bench/results/growth.json (growth-quick.json with --quick).

    python bench/growth.py [--checkpoints 500,2000,5000] [--inflight 64] [--quick]
    python bench/growth.py --checkpoints 1000,2000,20000      # the issue's targets
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from nats.aio.client import Client
from nats.aio.msg import Msg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import Cluster

from agent_engine.cli.stack import SERVICES
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.subjects import TELEMETRY_RPC, rpc_subject, type_subject
from agent_engine.runtime.bus import TASK_ID_HEADER
from agent_engine.testkit import TERMINAL, task_request
from bench import RESULTS, WORKFLOW, machine

CHECKPOINTS = (500, 2000, 5000)
QUICK_CHECKPOINTS = (20, 60)
QUICK_INFLIGHT = 8
CALLS_PER_TASK = 5
"""linear5 makes one (mock) LLM call per agent node: what the telemetry ledger must count per finished task."""
RSS_TARGET = 0.15
RSS_FROM = 2_000
"""The issue measures RSS from 2,000 finished tasks (caches still filling before that), restarts from 1,000."""
RESTART_TARGET = 1.2
STALL_S = 120.0
"""No task finished for this long: the run has stalled; stop with what is known rather than wait for ever."""
PROBE_TIMEOUT_S = 600.0
RECONCILE_S = 30.0
"""A load task open this long is asked about (its end may have been published while this client was reconnecting)."""


@dataclass
class Checkpoint:
    finished: int
    load_s: float
    """Wall time of the load from the start up to this checkpoint (restarts not counted)."""
    rss_mb: dict[str, float]
    """Idle, after the tasks in flight finished, before this checkpoint's restarts."""
    router_ready_s: float
    """kill -9 → the restarted router says it is ready (its /readyz)."""
    router_restart_s: float
    """kill -9 → restart → a task submitted once it was up has finished."""
    telemetry_ready_s: float
    telemetry_restart_s: float
    """kill -9 → restart → the ledger answers with every call made before the kill."""
    ledger_calls: int
    rss_after_restart_mb: dict[str, float] = field(default_factory=dict)
    """Router and telemetry right after their restart (a new process that loaded what it needs of the history)."""
    tasks_run: dict[str, int] = field(default_factory=dict)
    """Per service, the load's tasks finished since the process was started (the router and telemetry measured at
    a checkpoint were restarted at the previous one)."""
    kib_per_task: dict[str, float] = field(default_factory=dict)
    """Per service, its RSS growth since it was started (or restarted) over `tasks_run`."""
    load_average: float = 0.0
    """The machine's 1-minute load average when the checkpoint was reached (other work on it moves the figures)."""


Started = dict[str, tuple[float, int]]
"""Per service, its RSS (MB) once started and the load's finished tasks then."""


class Load:
    """Keeps `inflight` tasks of a workflow (linear5 by default) running in one tenant until `target` were submitted;
    counts those that ended. Probe tasks (the new task after a restart) run in a tenant of their own, so the load's
    count and its ledger are the load's alone."""

    def __init__(self, cluster: Cluster, nc: Client, inflight: int, workflow: Path = WORKFLOW,
                 task_input: dict[str, Any] | None = None, prefix: str = "growth") -> None:
        self.cluster, self.nc, self.inflight = cluster, nc, inflight
        self.directory, self.task_input = workflow, task_input or {}
        run = uuid.uuid4().hex[:8]
        self.tenant, self.probe_tenant = f"{prefix}{run}", f"{prefix}probe{run}"
        self.workflow = ""
        self.submitted = self.finished = self.failed = self.running = self.target = 0
        self.ids: list[str] = []
        """The load's tasks, in the order submitted."""
        self.open: dict[str, float] = {}
        """The load's tasks not yet seen to end, with when they were submitted (monotonic)."""
        self.ended: dict[str, str] = {}
        """Every task id seen to end (either tenant), with its status: duplicates are counted once."""
        self.changed = asyncio.Event()

    async def start(self) -> None:
        for tenant in (self.tenant, self.probe_tenant):
            self.workflow = await self.cluster.push(self.nc, tenant, self.directory)
            for status in TERMINAL:
                await self.nc.subscribe(type_subject(f"task.{status}", tenant), cb=self._on_end)

    async def _on_end(self, msg: Msg) -> None:
        task_id = msg.headers.get(TASK_ID_HEADER, "") if msg.headers else ""
        if task_id:
            self.end(task_id, msg.subject.rsplit(".", 1)[-1])

    def end(self, task_id: str, status: str) -> None:
        if task_id in self.ended:
            return
        self.ended[task_id] = status
        if self.open.pop(task_id, None) is not None:
            self.finished += 1
            self.running -= 1
            self.failed += status != "succeeded"
            self.changed.set()

    async def _top_up(self) -> None:
        while self.running < self.inflight and self.submitted < self.target:
            envelope = task_request(self.tenant, self.workflow, self.task_input)
            self.submitted += 1
            self.running += 1
            self.ids.append(envelope.task_id)
            self.open[envelope.task_id] = time.monotonic()
            await self._publish(envelope)

    async def _publish(self, envelope: Envelope) -> None:
        """Until JetStream acknowledges it (NATS may be restarting); the same envelope, so a retry of one that was
        stored after all is deduplicated by its id."""
        for attempt in range(int(STALL_S)):
            try:
                await self.cluster.publish(self.nc, envelope)
                return
            except Exception:  # no responders, a timeout, reconnecting: the server is coming back
                if attempt == int(STALL_S) - 1:
                    raise
                await asyncio.sleep(1.0)

    async def reconcile(self, older_than: float = RECONCILE_S, most: int = 64) -> None:
        """Ask the router about the oldest open tasks: an end this client missed (its connection was down while
        NATS restarted) is counted all the same."""
        now = time.monotonic()
        stale = [t for t, at in self.open.items() if now - at > older_than][:most]
        try:
            statuses = await self.cluster.statuses(self.nc, stale) if stale else {}
        except Exception:  # noqa: BLE001  the router is down this moment (the chaos): ask again next time
            return
        for task_id, status in statuses.items():
            if status in TERMINAL:
                self.end(task_id, status)

    async def run_to(self, target: int, log: Callable[[str], None],
                     tick: Callable[[], Awaitable[None]] | None = None) -> None:
        """Feed tasks until `target` have ended in all; progress every 10 s; `tick` after each wake-up; stalled →
        RuntimeError."""
        self.target = target
        began = time.monotonic()
        progress_at = reconciled_at = began
        last_finished = (self.finished, began)
        while self.finished < target:
            await self._top_up()
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.5)
            if tick is not None:
                await tick()
            now = time.monotonic()
            if self.finished != last_finished[0]:
                last_finished = (self.finished, now)
            elif now - last_finished[1] > STALL_S:
                raise RuntimeError(f"stalled: no task ended for {STALL_S:.0f} s at {self.finished}/{target}; "
                                   f"services running: {sorted(self.cluster.pids())}")
            if now - reconciled_at >= RECONCILE_S / 2:
                reconciled_at = now
                await self.reconcile()
            if now - progress_at >= 10:
                progress_at = now
                log(f"  {self.finished:>6,}/{target:,} finished, {self.running} in flight")

    async def probe(self) -> tuple[str, str]:
        """Submit one task in the probe tenant; (its id, its status once ended)."""
        task_id = await self.cluster.submit(self.nc, self.probe_tenant, self.workflow, self.task_input)
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while task_id not in self.ended:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the probe task {task_id} did not end within {PROBE_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.01)
        return task_id, self.ended[task_id]


def rss_mb(cluster: Cluster, names: tuple[str, ...] = tuple(SERVICES)) -> dict[str, float]:
    pids = cluster.pids()
    missing = [n for n in names if n not in pids]
    if missing:
        raise RuntimeError(f"service(s) not running: {', '.join(missing)}")
    return {n: psutil.Process(pids[n]).memory_info().rss / 2**20 for n in names}


async def ledger_calls(nc: Client, tenant: str) -> int | None:
    """The calls telemetry's ledger counts for `tenant`; None while it does not answer."""
    try:
        msg = await nc.request(rpc_subject(TELEMETRY_RPC, "ledger"), json.dumps({"tenant": tenant}).encode(),
                               timeout=1.0)
        calls = json.loads(msg.data).get("calls")
    except Exception:  # noqa: BLE001  no responders, a timeout, a reply that is no ledger: not answering yet
        return None
    return calls if isinstance(calls, int) else None


async def wait_ledger(nc: Client, tenant: str, calls: int, timeout: float) -> int | None:
    """Poll the ledger until it counts at least `calls`; the last answer (None: never answered) at the timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await ledger_calls(nc, tenant)
        if last is not None and last >= calls:
            return last
        await asyncio.sleep(0.05)
    return last


async def kill_and_up(cluster: Cluster, service: str) -> tuple[float, float]:
    """kill -9 `service`, start it again as `agentctl up` does; (the perf_counter of the kill, seconds until the new
    process says it is ready)."""
    began = time.perf_counter()
    await asyncio.to_thread(cluster.kill, service)
    await asyncio.to_thread(cluster.up)
    await cluster.wait_ready((service,), PROBE_TIMEOUT_S)
    return began, time.perf_counter() - began


async def measure(cluster: Cluster, load: Load, load_s: float, started: Started, log: Callable[[str], None]
                  ) -> Checkpoint:
    """RSS, then the router's restart, then telemetry's; `started` is brought up to date for the two restarted."""
    rss = rss_mb(cluster)
    load_average = os.getloadavg()[0]
    log(f"  load average {load_average:.2f}; RSS MB: {', '.join(f'{k} {v:.0f}' for k, v in rss.items())}")
    tasks_run = {n: load.finished - started[n][1] for n in rss}
    kib = {n: (rss[n] - started[n][0]) * 1024 / tasks_run[n] for n in rss if tasks_run[n]}

    began, router_ready = await kill_and_up(cluster, "router")
    _, status = await load.probe()
    router_restart = time.perf_counter() - began
    if status != "succeeded":
        raise RuntimeError(f"the task after the router's restart ended {status}")
    log(f"  router: kill -9 → ready {router_ready:.2f} s → new task finished {router_restart:.2f} s")
    after = rss_mb(cluster, ("router",))

    expected = CALLS_PER_TASK * load.finished
    calls = await wait_ledger(load.nc, load.tenant, expected, timeout=60)
    if calls is None:
        raise RuntimeError("telemetry's ledger does not answer")
    if calls < expected:
        log(f"  note: the ledger counts {calls} calls before the kill, not {expected}; timing the restart to {calls}")
    began, telemetry_ready = await kill_and_up(cluster, "telemetry")
    answered = await wait_ledger(load.nc, load.tenant, calls, timeout=PROBE_TIMEOUT_S)
    telemetry_restart = time.perf_counter() - began
    if answered is None or answered < calls:
        raise RuntimeError(f"telemetry's ledger counts {answered} of {calls} calls {PROBE_TIMEOUT_S:.0f} s after "
                           "its restart")
    log(f"  telemetry: kill -9 → ready {telemetry_ready:.2f} s → ledger answers with all {calls:,} calls "
        f"{telemetry_restart:.2f} s")
    after |= rss_mb(cluster, ("telemetry",))
    started.update({n: (mb, load.finished) for n, mb in after.items()})
    return Checkpoint(load.finished, load_s, rss, router_ready, router_restart, telemetry_ready, telemetry_restart,
                      calls, after, tasks_run, kib, load_average)


def targets(points: list[Checkpoint]) -> dict[str, Any]:
    """The issue's targets: the router's restart between the smallest and the largest checkpoint, and RSS between
    the first checkpoint of at least RSS_FROM finished tasks (the smallest when none before the largest is) and
    the largest."""
    first, last = points[0], points[-1]
    base = next((p for p in points[:-1] if p.finished >= RSS_FROM), first)
    rss = {name: {"from_mb": base.rss_mb[name], "to_mb": last.rss_mb[name],
                  "growth": last.rss_mb[name] / base.rss_mb[name] - 1,
                  "met": last.rss_mb[name] <= base.rss_mb[name] * (1 + RSS_TARGET)} for name in base.rss_mb}
    ratio = last.router_restart_s / first.router_restart_s
    return {"between": [first.finished, last.finished], "rss_between": [base.finished, last.finished],
            "rss_within_15_percent": rss,
            "router_restart_within_1_2x": {"from_s": first.router_restart_s, "to_s": last.router_restart_s,
                                           "ratio": ratio, "met": ratio <= RESTART_TARGET}}


def table(r: dict[str, Any]) -> str:
    points = [Checkpoint(**p) for p in r["checkpoints"]]
    names = list(points[0].rss_mb)
    widths = [max(len(n), 6) for n in names]
    lines = [f"Agent Engine growth with history — {r['when']} — {r['machine']}",
             f"linear5, mock provider, {r['inflight']} in flight; RSS in MB, idle at each checkpoint before its "
             "restarts; restart times from the kill -9",
             "",
             f"{'finished':>8} | " + " | ".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True))
             + " | router: ready, new task finished | telemetry: ledger answers | tasks/s | load avg"]
    previous = Checkpoint(0, 0.0, {}, 0.0, 0.0, 0.0, 0.0, 0)
    for p in points:
        rate = (p.finished - previous.finished) / (p.load_s - previous.load_s)
        previous = p
        lines.append(f"{p.finished:>8,} | "
                     + " | ".join(f"{p.rss_mb[n]:>{w}.0f}" for n, w in zip(names, widths, strict=True))
                     + f" | {p.router_ready_s:>12.2f} s, {p.router_restart_s:>14.2f} s"
                     + f" | {p.telemetry_restart_s:>24.2f} s | {rate:>7.0f} | {p.load_average:>8.2f}")
    lines += ["", "RSS growth per task run since the process started, in KiB (router and telemetry are restarted",
              "at each checkpoint, so theirs covers the tasks since the one before); their RSS after the restart, MB",
              f"{'finished':>8} | " + " | ".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True))
              + " | after restart: router, telemetry"]
    for p in points:
        lines.append(f"{p.finished:>8,} | "
                     + " | ".join(f"{p.kib_per_task.get(n, 0.0):>{w}.1f}" for n, w in zip(names, widths, strict=True))
                     + f" | {p.rss_after_restart_mb['router']:>21.0f}, {p.rss_after_restart_mb['telemetry']:>9.0f}")
    t = r["targets"]
    a, b = t["between"]
    ra, _ = t.get("rss_between", t["between"])
    lines += ["", f"targets (issue 14), RSS from {ra:,} and the router's restart from {a:,}, to {b:,} finished tasks:"]
    for name, g in t["rss_within_15_percent"].items():
        lines.append(f"  {name + ' RSS':<17} within 15 %: {g['from_mb']:6.0f} → {g['to_mb']:6.0f} MB "
                     f"({g['growth']:+6.1%})  {'met' if g['met'] else 'NOT MET'}")
    rr = t["router_restart_within_1_2x"]
    lines.append(f"  router restart    within 1.2x: {rr['from_s']:6.2f} → {rr['to_s']:6.2f} s  "
                 f"({rr['ratio']:.2f}x)  {'met' if rr['met'] else 'NOT MET'}")
    if r["failed_tasks"]:
        lines.append(f"  note: {r['failed_tasks']} load task(s) did not succeed")
    return "\n".join(lines)


async def run(checkpoints: list[int], inflight: int, root: Path, log: Callable[[str], None] = print
              ) -> dict[str, Any]:
    """The whole measurement on an engine of its own under `root`; every process it starts is stopped."""
    if checkpoints != sorted(set(checkpoints)) or checkpoints[0] < 1 or len(checkpoints) < 2:
        raise ValueError(f"checkpoints must be two or more increasing counts, not {checkpoints}")
    saved = dict(os.environ)  # the cluster points this process at its own servers and credentials
    cluster = Cluster(root, AE_MOCK_DELAY_S="0")
    nc: Client | None = None
    started = time.monotonic()

    def say(text: str) -> None:
        log(f"[{time.monotonic() - started:7.1f}s] {text}")

    try:
        say(f"starting NATS, PostgreSQL and the five services under {root}")
        await asyncio.to_thread(cluster.start)
        nc = await cluster.connect()
        load = Load(cluster, nc, inflight)
        await load.start()
        _, status = await load.probe()  # the probe tenant's first task pays for what a tenant's first task costs
        if status != "succeeded":
            raise RuntimeError(f"a first task ended {status}; see the logs under {root / 'home' / 'logs'}")
        rss_start = rss_mb(cluster)
        started_at: Started = {n: (mb, 0) for n, mb in rss_start.items()}
        points: list[Checkpoint] = []
        load_s = 0.0
        for target in checkpoints:
            say(f"running linear5 at {inflight} in flight up to {target:,} finished tasks")
            began = time.monotonic()
            await load.run_to(target, say)
            load_s += time.monotonic() - began
            say(f"checkpoint {target:,}: {load.finished:,} finished ({load.failed} not succeeded); measuring")
            points.append(await measure(cluster, load, load_s, started_at, say))
    finally:
        say("stopping the services, NATS and PostgreSQL this run started")
        if nc is not None:
            await nc.close()
        await asyncio.to_thread(cluster.stop)
        os.environ.clear()
        os.environ.update(saved)
    return {"when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "inflight": inflight,
            "workflow": "bench/workflows/linear5", "rss_start_mb": rss_start,
            "checkpoints": [asdict(p) for p in points], "failed_tasks": load.failed, "targets": targets(points),
            "seconds": time.monotonic() - started}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", help="finished tasks at which to measure (default 500,2000,5000; "
                                         "--quick: 20,60)")
    p.add_argument("--inflight", type=int, help=f"tasks in flight (default 64; --quick: {QUICK_INFLIGHT})")
    p.add_argument("--quick", action="store_true", help="a smoke run of under a minute; writes growth-quick.json")
    args = p.parse_args()
    checkpoints = ([int(x) for x in args.checkpoints.split(",")] if args.checkpoints
                   else list(QUICK_CHECKPOINTS if args.quick else CHECKPOINTS))
    inflight = args.inflight or (QUICK_INFLIGHT if args.quick else 64)
    # SIGTERM as Ctrl-C: the run's finally stops every process it started (the services, NATS, PostgreSQL)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with tempfile.TemporaryDirectory(prefix="ae-growth-") as tmp:
            result = asyncio.run(run(checkpoints, inflight, Path(tmp)))
    except KeyboardInterrupt:
        print("interrupted; every process the run started is stopped", file=sys.stderr)
        return 130
    result["command"] = " ".join(["python", "bench/growth.py", *sys.argv[1:]])
    name = "growth-quick" if args.quick else "growth"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    text = table(result)
    (RESULTS / f"{name}.txt").write_text(text + "\n")
    print(text)
    print(f"\nwritten: {RESULTS / name}.json and .txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
