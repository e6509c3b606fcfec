"""The `ae_tasks` gauge for /metrics: tasks by their status now, read from telemetry's task index (taskindex.py).

Why the index: it has one row per task, so a task is counted once in the status it is in, however often its
events were read or republished (a terminal event republished after JetStream's duplicate window has a new
message id, but it finds the task's row already ended). In PostgreSQL the rows are counted by a small table
kept in the same transactions as the index (projection.py), so a scrape reads a handful of rows whatever the
number of tasks, and after a restart of telemetry or of any router the gauge is where it was. A counter in the
router would start again from zero with each process and be split across partition owners.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agent_engine.runtime import metrics
from agent_engine.runtime.metrics import Sampler


def sampler(counts: Callable[[], Awaitable[dict[str, int]]]) -> Sampler:
    """A metrics sampler that sets `ae_tasks{status}` from the index's tasks by status (every status, 0 when
    none, so a status a forget or a rebuild emptied shows 0 rather than its last value)."""

    async def sample() -> None:
        for status, count in (await counts()).items():
            metrics.TASKS.labels(metrics.SERVICE[0], status).set(count)

    return sample
