"""bench/cpu.py: the CPU time per hop `make bench` reports by process, and the ceiling it sets. The clock is read
on real processes: a PostgreSQL-like parent whose worker ends mid-level must still be counted."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

BURN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"
PARENT = ("import subprocess, sys, time\n"
          "worker = subprocess.Popen([sys.executable, '-c', {burn!r}])\n"
          "worker.wait()\n"
          "print('worker done', flush=True)\n"
          "time.sleep(30)\n")


def test_cpu_per_hop_by_process_most_first() -> None:
    import cpu  # bench/cpu.py

    spent = cpu.per_hop({"router": 1.0, "postgres": 2.0}, {"router": 3.0, "postgres": 2.5, "nats-server": 0.4}, 1000)
    assert list(spent) == ["router", "postgres", "nats-server"]
    assert spent == {"router": 2.0, "postgres": 0.5, "nats-server": 0.4}


def test_the_clock_counts_a_worker_that_ended_between_two_reads() -> None:
    import cpu

    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(burn=BURN.format(s=0.4))],
                              stdout=subprocess.PIPE, text=True)
    service = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.3) + "time.sleep(30)\n"])
    try:
        clock = cpu.CpuClock({"router": service.pid}, nats_pid=service.pid, postgres_pid=parent.pid)
        before = clock.read()
        assert parent.stdout is not None and parent.stdout.readline().strip() == "worker done"
        time.sleep(0.5)  # the service's burn is over too
        after = clock.read()
    finally:
        for process in (parent, service):
            process.kill()
            process.wait()
    assert after["postgres"] - before["postgres"] >= 0.2  # the worker's time, though it has ended
    assert after["router"] - before["router"] >= 0.1
    assert set(after) == {"router", "nats-server", "postgres", "bench client"}


def test_what_the_bench_prints_of_it() -> None:
    import cpu

    text = "\n".join(cpu.lines({"router": 1.5, "postgres": 0.5}, hops_per_s=400, langgraph_per_s=500, cores=2))
    assert "router 1.50, postgres 0.50; 2.00 in all" in text
    assert "at most 1000 hops/s (measured 400)" in text
    assert "2x LangGraph (1000/s) needs at most 2.00 ms of CPU per hop in all" in text
    floor = cpu.floor_line(raw_nats_p50=0.8, eventsourcing_save=0.9, langgraph_p50=1.6)
    assert "= 1.70 ms, 1.06x LangGraph's p50: 1.5x leaves 0.70 ms" in floor
