"""agentctl task fork over real NATS and PostgreSQL: a fork at a mid-graph record copies the history,
reuses recorded agent outputs (or calls the model again with --live), and lists side-effecting tool
steps before anything runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "research-review"
SIDE_EFFECTS = ROOT / "tests" / "workflows" / "fork-side-effects"


def history(engine: Any, task_id: str) -> list[dict[str, Any]]:
    return json.loads(engine.agentctl("task", "history", task_id, "--json").stdout)


def forked_id(stderr: str) -> str:
    line = next(ln for ln in stderr.splitlines() if ln.startswith("task ") and " forked from " in ln)
    return line.split()[1]


def test_fork_at_a_mid_graph_record_reuses_recorded_outputs(engine, tenant):
    input_ = json.loads((EXAMPLE / "input.json").read_text())
    status, records = asyncio.run(engine.run_to_end(tenant, input_))
    assert status == "succeeded"
    source = records[0].task_id
    at = next(i for i, r in enumerate(records, start=1)
              if r.type == "node.succeeded" and r.data["node"] == "decomposition")

    done = engine.agentctl("task", "fork", source, "--at", str(at))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"copies records 1-{at + 1}" in done.stderr  # extended to the dispatch decided with it
    fork = forked_id(done.stderr)
    shown = json.loads(engine.agentctl("task", "show", fork, "--json").stdout)
    assert shown["status"] == "succeeded" and shown["exit_node"] == "approved"
    assert shown["lineage"]["kind"] == "fork" and shown["lineage"]["parent_id"] == source
    by = {n["node"]: n["provider"] for n in shown["nodes"] if n["status"] == "succeeded"}
    assert by["interpretation"] == "mock"  # copied as it was
    assert by["planning"] == by["execution"] == by["review"] == "recorded:mock"  # reused, no model call
    types = [e["type"] for e in history(engine, fork)]
    assert types[:2] == ["router.input", "task.forked"]
    assert "node.dispatched" not in types  # every later step was an agent step with a recorded output
    replayed = engine.agentctl("task", "replay", fork)
    assert "identical" in replayed.stdout, replayed.stdout

    live = engine.agentctl("task", "fork", source, "--at", str(at), "--live")
    assert live.returncode == 0, live.stdout + live.stderr
    dispatched = [e["data"]["node"] for e in history(engine, forked_id(live.stderr)) if e["type"] == "node.dispatched"]
    # the executor's model asks for its tool again: its turn, the tool call, its next turn
    assert dispatched == ["planning", "execution", "execution", "execution", "review"]


def test_fork_lists_side_effecting_tool_steps_before_anything_runs(engine, tenant):
    status, records = asyncio.run(engine.run_to_end(tenant, {}, SIDE_EFFECTS))
    assert status == "succeeded"
    source = records[0].task_id

    refused = engine.agentctl("task", "fork", source, "--at", "3")
    assert refused.returncode == 1
    assert "tool steps with side effects that may run again: file" in refused.stderr
    assert "nothing was forked; pass --yes" in refused.stderr
    assert len(history(engine, source)) == len(records)

    dry = engine.agentctl("task", "fork", source, "--at", "3", "--dry-run")
    assert dry.returncode == 0 and "file" in dry.stderr

    went = engine.agentctl("task", "fork", source, "--at", "3", "--yes")
    assert went.returncode == 0, went.stdout + went.stderr
    fork = json.loads(engine.agentctl("task", "show", forked_id(went.stderr), "--json").stdout)
    assert [(n["node"], n["status"], n["provider"]) for n in fork["nodes"][:2]] == [
        ("write", "succeeded", "recorded:mock"), ("file", "succeeded", "tool:text_stats")]


def test_fork_refuses_what_cannot_run_with_a_reason(engine, tenant):
    status, records = asyncio.run(engine.run_to_end(tenant, {}, SIDE_EFFECTS))
    assert status == "succeeded"
    source = records[0].task_id
    late = engine.agentctl("task", "fork", source, "--at", str(len(records)))
    assert late.returncode == 1 and "the task was succeeded: nothing would run" in late.stderr
    out_of_range = engine.agentctl("task", "fork", source, "--at", "0")
    assert out_of_range.returncode == 1 and f"--at must be between 1 and {len(records)}" in out_of_range.stderr
