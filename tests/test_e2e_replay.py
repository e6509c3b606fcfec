"""Replaying a finished task's recorded router inputs reproduces its recorded router events exactly, and each
runner's output is stored once (in the decision that holds it, not again in the input record)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.router.core import INPUT_RECORD, OUTPUT_IN, replay
from agent_engine.router.store import TaskStore

pytestmark = pytest.mark.e2e



def test_replay_of_a_finished_task_matches_its_history(engine, tenant):
    status, history = asyncio.run(engine.run_to_end(tenant, {"brief": "replay me"}))
    assert status == "succeeded"
    replayed = replay(history)
    assert [e.model_dump(mode="json") for e in replayed] == [e.model_dump(mode="json") for e in history]
    assert len(history) > 10


def stored_records(engine: Any, task_id: str) -> list[Envelope]:
    """The task's records as PostgreSQL holds them (opened with the session's master key, the stack's), not as
    `task history` shows them."""
    store = TaskStore(engine.env["AE_POSTGRES_URL"])
    try:
        return store.records(task_id)
    finally:
        store.close()


def test_each_output_is_stored_once_and_the_task_replays_and_verifies(engine, tenant):
    status, history = asyncio.run(engine.run_to_end(tenant, {"brief": "store my outputs once"}))
    assert status == "succeeded"
    task_id = history[0].task_id
    stored = stored_records(engine, task_id)
    assert len(stored) == len(history)

    results = [i for i, r in enumerate(stored) if r.type == INPUT_RECORD and r.data["input"]["type"] == "node.completed"]
    assert len(results) >= 5
    for i in results:  # every result here went into a decision unchanged: its record names it, holds no copy
        record, inner = stored[i], stored[i].data["input"]
        holder = stored[i + record.data[OUTPUT_IN]]
        assert "output" not in inner["data"]
        assert holder.type in ("node.succeeded", "node.tool_returned") and holder.causation_id == inner["id"]
        text = json.dumps(holder.data["output"])
        assert sum(json.dumps(r.to_wire()).count(text) for r in stored[i:i + record.data[OUTPUT_IN] + 1]) == 1
        shown = history[i].data["input"]["data"]  # `task history` shows the input whole
        assert shown["output"] == holder.data["output"] and OUTPUT_IN not in history[i].data

    replayed = engine.agentctl("task", "replay", task_id)
    assert replayed.returncode == 0 and "identical" in replayed.stdout, replayed.stdout + replayed.stderr
    assert [e.model_dump(mode="json") for e in replay(stored)] == [e.model_dump(mode="json") for e in stored]
    verified = engine.agentctl("audit", "verify", "--task", task_id)
    assert verified.returncode == 0 and verified.stdout.startswith(f"ok: task {task_id}: {len(stored)} records"), \
        verified.stdout + verified.stderr
