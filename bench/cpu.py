"""Where a hop's work goes: the CPU time of each process of the stack over a level (the five services, nats-server,
PostgreSQL with its backends, and the bench's own client), per hop, and the throughput that much work allows on
this machine's cores. `make bench` measures it at 64 in flight with one router; it is why the speed targets are
met or not (docs/performance.md)."""

from __future__ import annotations

import psutil


class CpuClock:
    """CPU seconds used so far by each process of a running stack, by name."""

    def __init__(self, services: dict[str, int], nats_pid: int, postgres_pid: int) -> None:
        self.services = {name: psutil.Process(pid) for name, pid in services.items()}
        self.nats = psutil.Process(nats_pid)
        self.postgres = psutil.Process(postgres_pid)
        self.client = psutil.Process()

    def read(self) -> dict[str, float]:
        used = {name: own(p) for name, p in self.services.items()}
        used["nats-server"] = own(self.nats)
        used["bench client"] = own(self.client)
        used["postgres"] = self._postgres()
        return used

    def _postgres(self) -> float:
        """The postmaster, its backends alive now, and (in its children_* times) those that have ended; read again
        when a backend ended while they were read (it would be counted in neither)."""
        while True:
            times = self.postgres.cpu_times()
            backends, ended = 0.0, False
            for child in self.postgres.children(recursive=True):
                try:
                    backends += own(child)
                except psutil.NoSuchProcess:
                    ended = True
            after = self.postgres.cpu_times()
            if not ended and (after.children_user, after.children_system) == (times.children_user,
                                                                              times.children_system):
                return float(after.user + after.system + after.children_user + after.children_system + backends)


def own(process: psutil.Process) -> float:
    """The process's own CPU seconds (user + system, all threads), not its children's."""
    times = process.cpu_times()
    return float(times.user + times.system)


def per_hop(before: dict[str, float], after: dict[str, float], hops: int) -> dict[str, float]:
    """Milliseconds of CPU per hop, by process, most first."""
    spent = {name: (after[name] - before.get(name, 0.0)) * 1000 / max(hops, 1) for name in after}
    return dict(sorted(spent.items(), key=lambda kv: -kv[1]))


def lines(cpu: dict[str, float], hops_per_s: float, langgraph_per_s: float, cores: int) -> list[str]:
    """What `make bench` prints of it: each process's share, the ceiling all of it sets, and what 2x LangGraph
    would leave per hop."""
    total = sum(cpu.values())
    shares = ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items() if ms >= 0.01)
    ceiling = cores * 1000 / total if total else 0.0
    goal = 2 * langgraph_per_s
    out = [f"CPU per hop at 64 in flight, one router (ms): {shares}; {total:.2f} in all",
           f"  on {cores} cores that allows at most {ceiling:.0f} hops/s (measured {hops_per_s:.0f})"]
    if goal:
        out[-1] += f"; 2x LangGraph ({goal:.0f}/s) needs at most {cores * 1000 / goal:.2f} ms of CPU per hop in all"
    return out


def floor_line(raw_nats_p50: float, eventsourcing_save: float, langgraph_p50: float, inflight: int = 1) -> str:
    """At `inflight` (1 in `make bench`): a hop's messaging (a raw nats-py hop) and one save (raw eventsourcing),
    against LangGraph's p50."""
    floor = raw_nats_p50 + eventsourcing_save
    left = 1.5 * langgraph_p50 - floor
    return (f"a hop's I/O alone at {inflight} in flight (raw nats-py hop p50 {raw_nats_p50:.2f} + raw eventsourcing "
            f"save {eventsourcing_save:.2f} ms) = {floor:.2f} ms, {floor / langgraph_p50:.2f}x LangGraph's p50: 1.5x "
            f"leaves {left:.2f} ms for the services' own work per hop" if langgraph_p50 else "")
