"""The growth measurement (bench/growth.py) in its quick form, so the script cannot rot: two tiny checkpoints,
each with its RSS, its router restart and its telemetry restart; every process it started is gone after."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from agent_engine.testkit.processes import left_running, running_now

pytestmark = pytest.mark.e2e
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def test_growth_quick(tmp_path):
    import growth  # bench/growth.py

    environ = dict(os.environ)
    before = running_now()
    lines: list[str] = []
    result = asyncio.run(growth.run([10, 30], inflight=8, root=tmp_path, log=lines.append))
    print("\n".join(lines))
    print(growth.table(result))
    assert os.environ == environ, "the run restores the environment it changed"
    assert left_running(before) == [], "processes left running"

    points = result["checkpoints"]
    assert [p["finished"] for p in points] == [10, 30] and result["failed_tasks"] == 0
    for p in points:
        assert set(p["rss_mb"]) == {"guardrails", "router", "agent-runner", "tool-runner", "telemetry", "dashboard"}
        assert all(mb > 10 for mb in p["rss_mb"].values())
        assert 0 < p["router_ready_s"] <= p["router_restart_s"]
        assert 0 < p["telemetry_ready_s"] <= p["telemetry_restart_s"]
        assert p["ledger_calls"] == growth.CALLS_PER_TASK * p["finished"]
    targets = result["targets"]
    assert targets["between"] == [10, 30]
    assert set(targets["rss_within_15_percent"]) == set(points[0]["rss_mb"])
    assert isinstance(targets["router_restart_within_1_2x"]["met"], bool)
    assert "router restart    within 1.2x" in growth.table(result)
