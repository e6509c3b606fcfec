"""Memory layers through the whole stack: an agent's model saves a note to the project layer with a tool;
a later task of the same tenant finds it, another tenant does not, and a node that `sees` the layer gets
it in its dispatch's memory view."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
WORKFLOW = Path(__file__).parent / "workflows" / "memo"


def _recalled(history: list[Any]) -> list[dict[str, Any]]:
    [found] = [r.data for r in history if r.type == "node.tool_returned" and r.data["tool"] == "recall"]
    return [{"key": i["key"], "text": i["text"]} for i in found["output"]["items"]]


async def _tasks(engine: Any, tenant: str, other: str) -> tuple[list[Any], list[Any], list[Any]]:
    nc = await engine.connect()
    try:
        histories = []
        for who, task_input in ((tenant, {"key": "pricing", "note": "quote in EUR", "find": "pricing"}),
                                (tenant, {"key": "tone", "note": "keep it short", "find": "pricing"}),
                                (other, {"key": "tone", "note": "formal", "find": "pricing"})):
            workflow = await engine.push(nc, who, WORKFLOW)
            task_id = await engine.submit(nc, who, workflow, task_input)
            status = await engine.wait_terminal(nc, [task_id])
            assert status[task_id] == "succeeded", status
            histories.append(await engine.history(nc, task_id))
        return histories[0], histories[1], histories[2]
    finally:
        await nc.close()


def test_a_note_saved_by_one_task_is_found_by_the_next_of_its_tenant_only(engine, tenant):
    first, second, stranger = asyncio.run(_tasks(engine, tenant, tenant + "x"))
    assert _recalled(first) == [{"key": "pricing", "text": "quote in EUR"}]
    assert {"key": "pricing", "text": "quote in EUR"} in _recalled(second)  # saved by the first task
    assert _recalled(stranger) == []  # another tenant's project memory is its own
    [saved] = [r.data for r in second if r.type == "node.tool_returned" and r.data["tool"] == "remember"]
    assert saved["output"]["saved"] is True and saved["output"]["layer"] == "project"
    dispatch = next(r.data for r in second if r.type == "node.dispatched" and r.data.get("call"))
    assert dispatch["tool"]["project"] == "memo"  # the workflow's name scopes its project layer
    reader = next(r.data for r in second if r.type == "node.dispatched" and r.data["node"] == "reader")
    assert reader["context"]["memory"] == {"layers": ["project"], "project": "memo"}
