"""Where a hop's time goes: py-spy on the router and the agent-runner while the engine runs `bench/workflows/linear5`
at a fixed number of tasks in flight (as `make bench` does), then the top frames of each profile by share of samples.

    python bench/profile.py [--inflight 64] [--seconds 20] [--gil] [--out bench/results/profile]

Needs py-spy (`make bench` installs it) and the right to trace the services (root, or ptrace allowed). Writes each
process's raw profile (collapsed stacks, `<out>/<service>.txt`, loadable in speedscope) and prints, per process,
the frames most often on the stack (inclusive share) and most often at its top (self share). With `--gil` only
samples holding the GIL count: the Python work; without it, idle waits show as well.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import Cluster
from cpu import own

from agent_engine.contracts.subjects import type_subject
from bench import engine_level

PROFILED = ("router", "agent-runner")
RATE = 200
"""py-spy samples per second: a sample stands for 5 ms."""


def py_spy() -> str:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else "py-spy"


def summarise(raw: Path, top: int = 25, dispatches: int = 0) -> str:
    """Inclusive and self shares of the frames in a collapsed-stack file (`frame;frame;... count` lines); with
    `dispatches` (agent dispatches answered while it was recorded), also the sampled time per dispatch."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")[1:]]  # the first is the process/thread
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    if not total:
        return f"{raw.name}: no samples"
    per = f", {total * 1000 / RATE / dispatches:.3f} ms of samples per agent dispatch" if dispatches else ""
    lines = [f"{raw.stem}: {total} samples{per}", "  inclusive (on the stack):"]
    lines += [f"    {100 * n / total:5.1f} %  {f}" for f, n in inclusive.most_common(top)]
    lines += ["  self (top of the stack):"]
    lines += [f"    {100 * n / total:5.1f} %  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """`fn (path/to/module.py:12)` -> `fn (module.py)`: lines merged, so a function counts once."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    for anchor in ("site-packages", "src", "lib"):
        if anchor in parts:
            parts = parts[len(parts) - parts[::-1].index(anchor):]
            break
    return f"{name} ({'/'.join(parts[-3:])})"


async def run(inflight: int, seconds: float, gil: bool, idle: bool, out: Path,
              services: tuple[str, ...] = PROFILED) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ae-profile-") as tmp:
        cluster = Cluster(Path(tmp), AE_MOCK_DELAY_S="0")
        await asyncio.to_thread(cluster.start)
        try:
            pids = cluster.pids()
            counter = await cluster.connect()
            answered = {"n": 0}

            async def on_answer(_msg: Any) -> None:
                answered["n"] += 1

            # what the agent-runner answered while recorded: the per-dispatch figures below divide by it
            await counter.subscribe(f"{type_subject('node.completed')}.>", cb=on_answer)  # partitioned
            procs = {s: psutil.Process(pids[s]) for s in services}
            cpu_before = {s: own(p) for s, p in procs.items()}
            began = time.perf_counter()
            spies = []
            for service in services:
                cmd = [py_spy(), "record", "--pid", str(pids[service]), "--duration", str(int(seconds) + 2),
                       "--rate", str(RATE), "--format", "raw", "--output", str(out / f"{service}.txt"), "--nonblocking"]
                if gil:
                    cmd.append("--gil")
                if idle:
                    cmd.append("--idle")
                spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            window: dict[str, Any] = {}

            async def recorded() -> None:
                """When the spies are done: the dispatches answered and the CPU used while they recorded."""
                for spy in spies:
                    _, err = await asyncio.to_thread(spy.communicate)
                    if spy.returncode:
                        print(f"py-spy failed: {err.decode(errors='replace')}", file=sys.stderr)
                window.update(seconds=time.perf_counter() - began, dispatches=answered["n"],
                              cpu={s: own(p) - cpu_before[s] for s, p in procs.items()})

            spied = asyncio.create_task(recorded())
            result = await engine_level(cluster, inflight, seconds)
            await spied
            await counter.close()
        finally:
            await asyncio.to_thread(cluster.stop)
    print(f"engine at {inflight} in flight: {result['hops_per_s']:.0f} hops/s, p50 {result['p50_ms']:.2f} ms "
          f"(profiled{', GIL-holding samples only' if gil else ''})")
    dispatches = window["dispatches"]
    print(f"{dispatches} agent dispatches answered in the {window['seconds']:.1f} s recorded; CPU time per dispatch "
          "(user + system, all threads): " + ", ".join(f"{s} {1000 * t / max(1, dispatches):.3f} ms"
                                                      for s, t in window["cpu"].items()))
    for service in services:
        raw = out / f"{service}.txt"
        if raw.exists():
            print(summarise(raw, dispatches=dispatches))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inflight", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--gil", action="store_true", help="only samples that hold the GIL")
    p.add_argument("--idle", action="store_true", help="count idle samples too (wall-clock time, waits included)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "profile")
    p.add_argument("--services", default=",".join(PROFILED),
                   help=f"which services to profile, comma-separated (default {','.join(PROFILED)})")
    p.add_argument("--summarise", type=Path, help="only print the summary of an existing raw profile")
    args = p.parse_args()
    if args.summarise:
        print(summarise(args.summarise))
        return 0
    asyncio.run(run(args.inflight, args.seconds, args.gil, args.idle, args.out, tuple(args.services.split(","))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
