"""Every node role over real NATS and PostgreSQL: the committee (BRANCH + agent MERGE), the
supervisor loop (bounded revise), the map-reduce (SPLIT into subtasks with lineage), a failing
subtask failing its parent, and a cancel during a SPLIT of 50 subtasks."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FANOUT = ROOT / "tests" / "workflows" / "fanout"
WORDS = " ".join(f"word{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(50))
"""Fifty distinct words: the fanout workflow's SPLIT starts one subtask per word."""


def run_example(engine: Any, tenant: str, name: str) -> tuple[str, dict[str, Any]]:
    done = engine.agentctl("run", str(EXAMPLES / name), "--input", f"@{EXAMPLES / name / 'input.json'}",
                           "--tenant", tenant)
    assert done.returncode == 0, done.stdout + done.stderr
    task_id = done.stdout.split("task ")[-1].split()[0]
    return done.stdout, json.loads(engine.agentctl("task", "show", task_id, "--json").stdout)


def test_committee_runs_three_members_in_parallel_and_the_chair_merges(engine, tenant):
    out, shown = run_example(engine, tenant, "committee")
    assert "⋈ recommend        merged 3 input(s) under policy all" in out
    nodes = {n["node"]: n for n in shown["nodes"]}
    assert {nodes[m]["status"] for m in ("optimist", "skeptic", "expert", "recommend")} == {"succeeded"}
    assert nodes["recommend"]["provider"] == "mock"
    # the members ran side by side: each was dispatched before any of them finished
    starts = [nodes[m]["started_at"] for m in ("optimist", "skeptic", "expert")]
    ends = [nodes[m]["finished_at"] for m in ("optimist", "skeptic", "expert")]
    assert max(starts) < min(ends)


def test_supervisor_revises_once_with_the_feedback_then_publishes(engine, tenant):
    out, shown = run_example(engine, tenant, "supervisor")
    assert "↺ review           sends draft back: revision 1 of 2" in out
    assert shown["status"] == "succeeded" and shown["exit_node"] == "published"
    assert shown["revisions"] == {"review": 1}
    history = json.loads(engine.agentctl("task", "history", shown["task_id"], "--json").stdout)
    drafts = [e for e in history if e["type"] == "node.dispatched" and e["data"]["node"] == "draft"]
    assert len(drafts) == 2
    assert "feedback" not in drafts[0]["data"]["context"]
    assert drafts[1]["data"]["context"]["feedback"]["approved"] is False
    assert drafts[1]["data"]["context"]["revision"] == 1


def test_map_reduce_runs_a_subtask_per_section_with_lineage(engine, tenant):
    out, shown = run_example(engine, tenant, "map-reduce")
    assert "⇉ split            started 3 subtask(s), collected by reduce" in out
    assert [(s["index"], s["status"]) for s in shown["subtasks"]] == [(0, "succeeded"), (1, "succeeded"),
                                                                      (2, "succeeded")]
    assert {n["node"]: n["status"] for n in shown["nodes"]}["measure"] == "subtasks"
    child = json.loads(engine.agentctl("task", "show", shown["subtasks"][1]["task_id"], "--json").stdout)
    assert child["lineage"] == {"kind": "subtask", "parent_id": shown["task_id"], "root_id": shown["task_id"],
                                "parent_node": "split", "index": 1, "cause": "item 1 of 3 of SPLIT node 'split'"}
    assert [n["node"] for n in child["nodes"]] == ["measure"]
    assert child["nodes"][0]["output"]["words"] == 13  # "The router decides from recorded inputs only, ..."
    text = engine.agentctl("task", "show", child["task_id"]).stdout
    assert f"lineage   subtask of {shown['task_id']}" in text
    replayed = engine.agentctl("task", "replay", shown["task_id"])
    assert "identical" in replayed.stdout, replayed.stdout


def test_a_failing_subtask_fails_its_parent_with_the_reason(engine, tenant):
    status, history = asyncio.run(engine.run_to_end(tenant, {"text": "alpha beta gamma"}, ROOT / "tests" / "workflows"
                                                    / "fanout-fail"))
    assert status == "failed"
    failed = next(e for e in history if e.type == "task.failed")
    assert failed.data["reason"].startswith("node 'fan' failed: subtask ")
    assert "refers to $input.item.missing, which the task does not have" in failed.data["reason"]


async def _fan_out_with_runner_down(engine: Any, tenant: str) -> tuple[str, list[str]]:
    nc = await engine.connect()
    try:
        workflow = await engine.push(nc, tenant, FANOUT)
        engine.kill("agent-runner")  # every subtask's agent node waits for a runner that is not there
        task_id = await engine.submit(nc, tenant, workflow, {"text": WORDS})
        for _ in range(150):
            try:
                subtasks = [s["task_id"] for s in (await engine.show(nc, task_id)).get("subtasks", [])]
            except Exception:  # noqa: BLE001  not stored yet
                subtasks = []
            if len(subtasks) == 50 and set((await engine.statuses(nc, subtasks)).values()) == {"running"}:
                return task_id, subtasks
            await asyncio.sleep(0.2)
        raise AssertionError(f"the SPLIT never had 50 running subtasks: {len(subtasks)}")
    finally:
        await nc.close()


async def _histories(engine: Any, task_ids: list[str]) -> dict[str, list[str]]:
    nc = await engine.connect()
    try:
        return {t: [e.type for e in await engine.history(nc, t)] for t in task_ids}
    finally:
        await nc.close()


def test_cancel_during_a_split_of_50_stops_every_subtask(engine, tenant):
    parent, subtasks = asyncio.run(_fan_out_with_runner_down(engine, tenant))
    done = engine.agentctl("task", "cancel", parent, "--reason", "changed my mind")
    assert done.returncode == 0, done.stderr
    engine.up()  # the agent-runner returns and answers the 50 dispatches it missed

    deadline = time.monotonic() + 60
    histories: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        histories = asyncio.run(_histories(engine, subtasks))
        if all("node.result_ignored" in h for h in histories.values()):
            break
        time.sleep(0.5)
    ends = Counter(next(t for t in h if t in ("task.cancelled", "task.succeeded", "task.failed"))
                   for h in histories.values())
    assert ends == Counter({"task.cancelled": 50})
    for history in histories.values():
        assert history.count("node.dispatched") == 1  # nothing dispatched after the cancel
        assert history.count("node.result_ignored") == 1 and "node.succeeded" not in history
    shown = json.loads(engine.agentctl("task", "show", parent, "--json").stdout)
    assert shown["status"] == "cancelled" and shown["reason"] == "changed my mind"
    parent_history = asyncio.run(_histories(engine, [parent]))[parent]
    assert parent_history.count("task.cancel_requested") == 50  # one to each subtask
    assert "node.merged" not in parent_history


def test_a_split_that_continues_on_failure_merges_what_it_has(engine, tenant):
    status, history = asyncio.run(engine.run_to_end(tenant, {"text": "alpha beta gamma"}, ROOT / "tests" / "workflows"
                                                    / "fanout-continue"))
    assert status == "succeeded"
    merged = next(e for e in history if e.type == "node.merged")
    assert merged.data["arrived"] == [] and merged.data["failed"] == ["0", "1", "2"]
    settled = [e for e in history if e.type == "subtask.settled"]
    assert len(settled) == 3 and {e.data["status"] for e in settled} == {"failed"}
