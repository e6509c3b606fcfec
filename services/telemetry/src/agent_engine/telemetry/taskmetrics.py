"""The `ae_tasks` gauge (tasks by status) for /metrics, read from the ledger's count of stream messages by type.

Why here and not a counter in the router: the ledger keeps that count in PostgreSQL in the same transaction as
its stream position, so after a restart (of telemetry or of any router) the gauge is where it was, each stored
message counted once; a counter in a router process would start again from zero and split across partitions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agent_engine.runtime import metrics
from agent_engine.runtime.metrics import Sampler


def sampler(query: Callable[[], Awaitable[dict[str, Any]]]) -> Sampler:
    """A metrics sampler that sets `ae_tasks{status}` from the ledger's answer to a query for all totals."""

    async def sample() -> None:
        answer = await query()
        for status, count in metrics.task_statuses(answer.get("messages_by_subject") or {}).items():
            metrics.TASKS.labels(metrics.SERVICE[0], status).set(count)

    return sample
