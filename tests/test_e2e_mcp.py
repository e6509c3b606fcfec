"""An agent uses MCP tools end to end (issue 15, item 8): the tool-runner starts the notes MCP server the
deployment declares (AE_MCP_SERVERS), publishes its tools' schemas; the router pins them with the task, so the
mock model's call missing an argument is refused against the server's own schema, the corrected call adds the
note (once: add_note has side effects by its annotations), a read lists it, and the task succeeds. A tool node
calls the same server directly. A second server, declared `per_tenant` for two tenants, gives each its own
process and notebook, and a task of a tenant it is not declared for is rejected at start."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
WORKFLOW = Path(__file__).parent / "workflows" / "mcp-notes"
PRIVATE_TENANTS = ("acme", "globex")
"""The tenants the per-tenant `private` server is declared for (fixed names: the stack is this module's own)."""


@pytest.fixture(scope="module")
def mcp_engine(own_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("mcp")
    servers = root / "mcp-servers.yaml"
    notes = ["-m", "agent_engine.testkit.mcp_notes"]
    servers.write_text(json.dumps({"mcp_servers": {
        "notes": {"command": sys.executable, "args": [*notes, str(root / "notes.jsonl")]},
        "private": {"command": sys.executable, "args": [*notes, str(root / "private-{tenant}.jsonl")],
                    "per_tenant": True, "tenants": list(PRIVATE_TENANTS)}}}))
    engine = own_stack(AE_MCP_SERVERS=str(servers))
    engine.notebook = root / "notes.jsonl"
    engine.root = root
    return engine


async def _run(engine: Any, tenant: str) -> tuple[str, list[Any]]:
    nc = await engine.connect()
    try:
        workflow = await engine.push(nc, tenant, WORKFLOW)
        task_id = await engine.submit(nc, tenant, workflow, {"title": "groceries", "text": "eggs, flour"})
        status = await engine.wait_terminal(nc, [task_id])
        return status[task_id], await engine.history(nc, task_id)
    finally:
        await nc.close()


def test_an_agent_adds_a_note_through_an_mcp_tool_and_the_task_succeeds_with_it(mcp_engine, tenant):
    status, history = asyncio.run(_run(mcp_engine, tenant))
    assert status == "succeeded"

    # what the model was offered: the server's description and schema, pinned from the catalogue
    first = next(r.data for r in history if r.type == "node.dispatched" and r.data["node"] == "scribe")
    offered = {t["name"]: t for t in first["agent"]["tool_defs"]}
    assert offered["add_note"]["input_schema"]["required"] == ["title", "text"]
    assert offered["add_note"]["description"].startswith("Adds a note")
    assert offered["notes"]["description"] == "Lists the notebook's notes."  # tools.yaml's words win

    turns = [r.data for r in history if r.type == "node.tool_turn_recorded"]
    [refused] = turns[0]["calls"]
    assert refused["refused"] and "'text' is a required property" in refused["error"]

    returned = {r.data["tool"]: r.data for r in history if r.type == "node.tool_returned"}
    assert returned["add_note"]["output"] == {"id": 1, "count": 1}
    assert returned["notes"]["output"] == {"notes": [{"title": "groceries", "text": "eggs, flour"}]}
    # the model's last turn carried those results
    last = [r.data for r in history if r.type == "node.dispatched" and r.data["node"] == "scribe"][-1]
    seen = [c.get("output") for t in last["context"]["conversation"] for c in t["calls"]]
    assert {"id": 1, "count": 1} in seen

    calls = {r.data["tool"]["name"]: r.data["tool"] for r in history
             if r.type == "node.dispatched" and r.data["kind"] == "tool"}
    assert calls["add_note"]["builtin"] == "mcp:notes/add_note"
    assert calls["add_note"]["side_effects"] is True  # from the server's annotations: run once, call log
    assert "side_effects" not in calls["notes"]  # read-only by its annotations

    check = next(r.data for r in history if r.type == "node.succeeded" and r.data["node"] == "check")
    assert check["output"] == {"notes": [{"title": "groceries", "text": "eggs, flour"}]}
    assert mcp_engine.notebook.read_text().count("\n") == 1

    # the schemas pinned with the task are in its records: replay reproduces every decision without the catalogue
    task_id = history[0].task_id
    replayed = mcp_engine.agentctl("task", "replay", task_id)
    assert replayed.returncode == 0 and "identical" in replayed.stdout, replayed.stdout + replayed.stderr


async def _run_workflow(engine: Any, tenant: str, directory: Path) -> tuple[str, list[Any]]:
    nc = await engine.connect()
    try:
        workflow = await engine.push(nc, tenant, directory)
        task_id = await engine.submit(nc, tenant, workflow, {"title": "x", "text": "y"})
        status = await engine.wait_terminal(nc, [task_id])
        return status[task_id], await engine.history(nc, task_id)
    finally:
        await nc.close()


def test_an_analysis_only_agent_listing_an_mcp_tool_its_server_says_changes_things_never_starts(
        mcp_engine, tenant, tmp_path):
    """Valid as written (nothing in tools.yaml says add_note has side effects); the server's annotations, pinned
    when the task starts, do: the router rejects the task naming the rule, and no note is added."""
    directory = tmp_path / "mcp-notes"
    shutil.copytree(WORKFLOW, directory)
    agents = directory / "agents.yaml"
    agents.write_text(agents.read_text().replace("capabilities: [fs.write]", "mode: analysis-only"))
    tools = directory / "tools.yaml"
    tools.write_text(tools.read_text().replace("    capabilities: [fs.write]\n", ""))
    before = mcp_engine.notebook.read_text() if mcp_engine.notebook.exists() else ""
    status, history = asyncio.run(_run_workflow(mcp_engine, tenant, directory))
    assert status == "rejected"
    [rejected] = [r.data for r in history if r.type == "task.rejected"]
    assert ("[agent-mode] agent 'scribe' is analysis-only and may not use tool 'add_note': it has side effects"
            in rejected["reason"])
    assert (mcp_engine.notebook.read_text() if mcp_engine.notebook.exists() else "") == before


def _private_workflow(tmp_path: Path) -> Path:
    """The same workflow, its tools naming the per-tenant server."""
    directory = tmp_path / "mcp-private"
    shutil.copytree(WORKFLOW, directory)
    tools = directory / "tools.yaml"
    tools.write_text(tools.read_text().replace("server: notes", "server: private"))
    return directory


def test_a_per_tenant_server_keeps_each_tenants_notes_apart_and_refuses_a_tenant_not_declared(
        mcp_engine, tenant, tmp_path):
    directory = _private_workflow(tmp_path)
    for name in PRIVATE_TENANTS:  # one after the other: the second tenant's process does not see the first's note
        status, history = asyncio.run(_run_workflow(mcp_engine, name, directory))
        assert status == "succeeded", [r.data for r in history if r.type in ("node.errored", "task.failed")]
        returned = {r.data["tool"]: r.data for r in history if r.type == "node.tool_returned"}
        assert returned["add_note"]["output"] == {"id": 1, "count": 1}  # its own notebook: the first note in it
        check = next(r.data for r in history if r.type == "node.succeeded" and r.data["node"] == "check")
        assert check["output"] == {"notes": [{"title": "x", "text": "y"}]}
        assert (mcp_engine.root / f"private-{name}.jsonl").read_text().count("\n") == 1

    status, history = asyncio.run(_run_workflow(mcp_engine, tenant, directory))
    assert status == "rejected"
    [rejected] = [r.data for r in history if r.type == "task.rejected"]
    assert (f"tool 'add_note' (MCP server 'private'), tool 'notes' (MCP server 'private') are not available to tenant "
            f"'{tenant}'") in rejected["reason"]
    assert not [r for r in history if r.type == "node.dispatched"]
    assert sorted(p.name for p in mcp_engine.root.glob("private-*")) == [f"private-{t}.jsonl" for t in PRIVATE_TENANTS]
