"""The soak (bench/soak.py): its quick mode end to end, so the script cannot rot, and what makes its verdict FAIL."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from agent_engine.testkit.processes import left_running, running_now

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def passing_report():  # type: ignore[no-untyped-def]
    import soak  # bench/soak.py

    report = soak.SoakReport(tasks=3, inflight=2, statuses=Counter(succeeded=3), nats_restarts=1, postgres_restarts=1,
                             unfinished_at={"nats": 2, "postgres": 1}, replay_checked=3)
    report.kills["router"] += 1
    report.restarts["router"].append(1.25)
    report.lines_.append(soak.Line(3, 30.0, 0, {n: 50.0 for n in report.restarts} | {"router": None},
                                   {n: [] for n in report.restarts} | {"router": [1.25]}, 1.5))
    return report


def test_a_clean_run_passes_and_its_table_shows_each_service():
    report = passing_report()
    assert report.ok and report.lines()[-1].endswith("PASS")
    header, columns, row = report.table()
    assert "RSS MB" in header and "kill -9 → ready" in header
    assert columns.split("|")[1].split() == ["guard", "router", "agent", "tool", "telem", "dashboard"]
    assert row.split("|")[1].split() == ["50", "-", "50", "50", "50", "50"], "a service down at that moment shows -"
    assert "1.25/1.25 (1)" in row.split("|")[2]


@pytest.mark.parametrize("spoil", [
    lambda r: r.lost.append("t1"),
    lambda r: r.not_exactly_once.append("t1 succeeded {'planning': 2}"),
    lambda r: r.statuses.update(succeeded=-1, failed=1),
    lambda r: r.replay_differs.append("t1: #4 differs"),
    lambda r: setattr(r, "replay_checked", 0),
    lambda r: setattr(r, "error", "RuntimeError: stalled"),
    lambda r: r.unfinished_at.update(postgres=0),
    lambda r: r.unfinished_at.pop("nats"),
], ids=["lost", "doubled", "not all succeeded", "replay differs", "no replay checked", "stopped early",
        "postgres restarted with nothing in flight", "nats never restarted"])
def test_any_defect_fails_the_run(spoil):
    report = passing_report()
    spoil(report)
    assert not report.ok and report.lines()[-1].endswith("FAIL")


@pytest.mark.e2e
def test_soak_quick(tmp_path):
    import soak  # bench/soak.py

    environ = dict(os.environ)
    before = running_now()
    lines: list[str] = []
    report = asyncio.run(soak.run(soak.QUICK_TASKS, inflight=64, seed=3, mock_delay=0.05, every=(2.0, 5.0),
                                  root=tmp_path, line_every=soak.QUICK_LINE_EVERY, log=lines.append))
    print("\n".join(lines))
    print(soak.text(report, "test_soak_quick"))
    assert os.environ == environ, "the run restores the environment it changed"
    assert left_running(before) == [], "processes left running"

    assert report.ok, report.lines()
    assert report.statuses == {"succeeded": soak.QUICK_TASKS} and not report.lost and not report.not_exactly_once
    assert report.replay_checked == soak.REPLAY_SAMPLE
    assert report.unfinished_at["nats"] > 0 and report.unfinished_at["postgres"] > 0
    assert sum(report.kills.values()) >= 3
    finished = [line.finished for line in report.lines_]  # one line a hundred tasks, or fewer when the count
    assert len(finished) >= 2 and finished == sorted(set(finished))  # jumps past a mark during a server restart
    assert finished[-1] == soak.QUICK_TASKS, "the table ends with the whole run"
    timed = [s for times in report.restarts.values() for s in times]
    assert timed and all(s > 0 for s in timed) and set(report.server_restart_s) == {"nats", "postgres"}
