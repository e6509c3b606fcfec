"""`agentctl task list` prints a table a person can read: newest first as asked, durations, costs, and a
plain line when nothing matches."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent_engine.cli.client import CliError
from agent_engine.cli.commands.agents import since_of
from agent_engine.cli.commands.tail import parse_since
from agent_engine.cli.commands.tasklist import duration, table


def task(task_id: str, finished: str | None, status: str = "succeeded", cost: str = "0.0123") -> dict[str, object]:
    return {"task_id": task_id, "tenant": "acme", "workflow": "triage", "revision": "r1", "status": status,
            "started_at": "2026-03-01T12:00:00+00:00", "finished_at": finished, "cost_usd": cost, "error": ""}


def test_the_table() -> None:
    text = table([task("t2", None, "running", "0"), task("t1", "2026-03-01T12:03:05.500000+00:00")])
    assert text.splitlines() == [
        "TASK  TENANT  WORKFLOW  STATUS     STARTED (UTC)        DURATION  COST",
        "t2    acme    triage    running    2026-03-01 12:00:00  -         $0.0000",
        "t1    acme    triage    succeeded  2026-03-01 12:00:00  3m05s     $0.0123"]
    assert table([]) == "no tasks match"


def test_durations() -> None:
    assert duration(task("t", "2026-03-01T12:00:04.25+00:00")) == "4.2s"
    assert duration(task("t", "2026-03-01T14:10:00+00:00")) == "2h10m"


def test_a_since_too_far_back_is_refused_by_name() -> None:
    """Review of issue #16: `agentctl task list --since 99999999999d` and `agents stats --since` gave a traceback."""
    with pytest.raises(CliError, match="--since '99999999999d': too far back"):
        parse_since("99999999999d")
    with pytest.raises(CliError, match="--since '99999999999d': too far back"):
        since_of("99999999999d", datetime.now(UTC))
