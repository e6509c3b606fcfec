"""The fault-injection run (bench/faults.py) at a CI-sized count: service kills, a NATS crash-restart
and a PostgreSQL crash-restart while tasks run; nothing lost, no node effect applied twice."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def test_faults_at_ci_scale(tmp_path):
    import faults  # bench/faults.py

    saved = dict(os.environ)  # the cluster points this process at its own servers and credentials
    try:
        report = asyncio.run(faults.run(tasks=30, every=1.0, mock_delay=1.5, seed=11, root=tmp_path, timeout=300))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    print("\n".join(report.lines()))
    assert report.unfinished_at["nats"] > 0 and report.unfinished_at["postgres"] > 0, "faults hit after the work"
    assert sum(report.kills.values()) >= 3
    assert report.lost == [] and report.not_exactly_once == []
    assert report.statuses == {"succeeded": 30}
