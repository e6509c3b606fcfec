"""Which processes a run left behind: those started during it under this process, but not under a process that
was already running (the session's own PostgreSQL starts autovacuum workers and backends at any time, and they
are not the run's)."""

from __future__ import annotations

import psutil


def running_now() -> set[int]:
    """The pids under this process, before the run."""
    return {p.pid for p in psutil.Process().children(recursive=True)}


def left_running(before: set[int]) -> list[str]:
    """Each process started since `before` and still running, described well enough to tell which it is."""
    left = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.pid in before or process.status() == psutil.STATUS_ZOMBIE:
                continue
            if any(parent.pid in before for parent in process.parents()):
                continue
            parent = process.parent()
            left.append(f"{process.pid} {process.name()} {' '.join(process.cmdline())[:200]!r}, child of "
                        f"{parent.pid if parent else None} {parent.name() if parent else ''}")
        except psutil.Error:  # gone meanwhile: not left running
            continue
    return left
