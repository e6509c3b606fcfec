"""MCP servers per tenant: the declaration (`tenants`, `per_tenant`, `{tenant}`) and its errors, and, against
testkit's notes server as real stdio processes, that a per-tenant server gives each tenant a process of its own
(one tenant's note is not in another's notebook), that a tenant not listed is refused, and that the processes are
bounded and stopped when idle."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent_engine.runtime.processes import pid_alive
from agent_engine.tool_runner.calls import CallLog, call_key
from agent_engine.tool_runner.config import ToolConfig
from agent_engine.tool_runner.mcp import McpTools, NotReached, PerTenant, ServerDied
from agent_engine.tool_runner.mcp_servers import ServerSpec, load_servers
from agent_engine.tool_runner.service import ToolRunner
from agent_engine.tool_runner.tools import Context, Scope, Tool, ToolError

NOTES = [sys.executable, "-m", "agent_engine.testkit.mcp_notes"]


def declared(tmp_path: Path, text: str) -> dict[str, ServerSpec]:
    path = tmp_path / "servers.yaml"
    path.write_text(text)
    return load_servers(path)


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ValueError) as raised:
        declared(tmp_path, text)
    return str(raised.value)


# --- the declaration ------------------------------------------------------------------------------------------

def test_a_server_is_for_every_tenant_and_shared_unless_declared_otherwise(tmp_path):
    [spec] = declared(tmp_path, "mcp_servers:\n  notes: {command: python3}\n").values()
    assert (spec.tenants, spec.per_tenant) == (None, False)
    assert spec.allows("anyone")


def test_a_per_tenant_server_gets_the_tenant_in_args_cwd_env_and_ae_tenant(tmp_path):
    [spec] = declared(tmp_path, "mcp_servers:\n  files:\n    command: python3\n"
                      "    args: [-m, server, '--root=/srv/{tenant}/files']\n    cwd: /srv/{tenant}\n"
                      "    env: {ROOT: '/srv/{tenant}', MODE: strict}\n    per_tenant: true\n"
                      "    tenants: [acme, globex]\n    max_processes: 2\n    idle_stop_s: 30\n").values()
    assert spec.allows("acme") and not spec.allows("initech") and not spec.allows(None)
    acme = spec.for_tenant("acme")
    assert acme.args == ["-m", "server", "--root=/srv/acme/files"] and acme.cwd == "/srv/acme"
    assert acme.env == {"ROOT": "/srv/acme", "MODE": "strict", "AE_TENANT": "acme"}
    assert spec.args[2] == "--root=/srv/{tenant}/files"  # the declaration itself is left as it was


def test_tenant_in_a_shared_server_is_refused_naming_each_field(tmp_path):
    message = refused(tmp_path, "mcp_servers:\n  notes:\n    command: python3\n    args: [-m, x, '/srv/{tenant}']\n"
                      "    cwd: '/srv/{tenant}'\n    env: {ROOT: '{tenant}'}\n")
    assert "mcp_servers.notes" in message
    assert "{tenant} in args[2], cwd, env.ROOT: only a server with per_tenant: true may use it" in message


def test_an_empty_tenants_list_is_refused_naming_the_field(tmp_path):
    message = refused(tmp_path, "mcp_servers:\n  notes: {command: python3, tenants: []}\n")
    assert "mcp_servers.notes.tenants: List should have at least 1 item" in message


def test_an_unknown_field_and_a_bad_tenant_name_are_refused_naming_them(tmp_path):
    assert "mcp_servers.notes.tenant: Extra inputs are not permitted" in refused(
        tmp_path, "mcp_servers:\n  notes: {command: python3, tenant: [acme]}\n")
    assert "mcp_servers.notes.tenants.1: String should match pattern" in refused(
        tmp_path, "mcp_servers:\n  notes: {command: python3, tenants: [acme, ../etc]}\n")


def test_per_tenant_settings_on_a_shared_server_and_tenant_in_the_command_are_refused(tmp_path):
    assert "max_processes apply only to a server with per_tenant: true" in refused(
        tmp_path, "mcp_servers:\n  notes: {command: python3, max_processes: 3}\n")
    assert "command may not hold {tenant}" in refused(
        tmp_path, "mcp_servers:\n  notes: {command: '/opt/{tenant}/bin/server', per_tenant: true}\n")
    assert "mcp_servers.notes.max_processes: Input should be greater than or equal to 1" in refused(
        tmp_path, "mcp_servers:\n  notes: {command: python3, per_tenant: true, max_processes: 0}\n")


# --- real processes -------------------------------------------------------------------------------------------

async def call(tool: Tool, tenant: str | None, args: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """As the runner does, for `tenant`'s task: check the arguments, run in a worker thread, check the result."""
    tool.check(args)
    scope = Scope(tenant, "task-1", "node") if tenant is not None else None
    output = await asyncio.to_thread(tool.run, args, Context(ToolConfig(workspace=tmp_path.resolve()), 20.0,
                                                             scope=scope))
    tool.check_result(output)
    return output


@pytest.fixture
async def per_tenant(tmp_path: Path) -> AsyncIterator[tuple[McpTools, dict[str, Tool]]]:
    mcp = McpTools({"notes": ServerSpec(command=NOTES[0], args=[*NOTES[1:], str(tmp_path / "notes-{tenant}.jsonl")],
                                        per_tenant=True, tenants=["acme", "globex", "initech"], max_processes=2)})
    tools = await mcp.start()
    yield mcp, tools
    await mcp.stop()


async def test_two_tenants_calls_land_in_two_processes_that_share_nothing(per_tenant, tmp_path):
    mcp, tools = per_tenant
    pool = mcp.servers["notes"]
    assert isinstance(pool, PerTenant) and pool.processes == {}  # the listing process is gone; none started yet
    assert all(e.tenants == ["acme", "globex", "initech"] for e in mcp.entries)
    add, notes, env = tools["mcp:notes/add_note"], tools["mcp:notes/list_notes"], tools["mcp:notes/environment"]

    assert await call(add, "acme", {"title": "secret", "text": "acme's plan"}, tmp_path) == {"id": 1, "count": 1}
    assert await call(notes, "globex", {}, tmp_path) == {"notes": []}  # acme's write is not globex's to read
    assert await call(add, "globex", {"title": "mine", "text": "globex"}, tmp_path) == {"id": 1, "count": 1}
    assert await call(notes, "acme", {}, tmp_path) == {"notes": [{"title": "secret", "text": "acme's plan"}]}

    acme, globex = [await call(env, t, {}, tmp_path) for t in ("acme", "globex")]
    assert acme["pid"] != globex["pid"] and "AE_TENANT" in acme["names"]
    assert sorted(pool.processes) == ["acme", "globex"]
    assert sorted(p.name for p in tmp_path.glob("notes-*.jsonl")) == ["notes-acme.jsonl", "notes-globex.jsonl"]


async def test_a_tenant_not_listed_is_refused_and_nothing_is_started_for_it(per_tenant, tmp_path):
    mcp, tools = per_tenant
    with pytest.raises(ToolError, match="MCP server 'notes' is not available to tenant 'umbrella'") as raised:
        await call(tools["mcp:notes/add_note"], "umbrella", {"title": "x", "text": "y"}, tmp_path)
    assert not raised.value.retryable
    with pytest.raises(ToolError, match="serves only calls made for a tenant"):
        await call(tools["mcp:notes/list_notes"], None, {}, tmp_path)
    assert mcp.servers["notes"].processes == {}  # type: ignore[union-attr]
    assert not list(tmp_path.glob("notes-umbrella*"))


async def test_a_shared_server_kept_to_some_tenants_refuses_the_others(tmp_path):
    mcp = McpTools({"notes": ServerSpec(command=NOTES[0], args=[*NOTES[1:], str(tmp_path / "n.jsonl")],
                                        tenants=["acme"])})
    tools = await mcp.start()
    try:
        assert all(e.tenants == ["acme"] for e in mcp.entries)  # the router keeps its tools from the others
        assert await call(tools["mcp:notes/shout"], "acme", {"text": "hi"}, tmp_path) == {"text": "HI"}
        with pytest.raises(ToolError, match="not available to tenant 'globex'"):
            await call(tools["mcp:notes/shout"], "globex", {"text": "hi"}, tmp_path)
    finally:
        await mcp.stop()


async def test_processes_are_bounded_and_an_idle_one_is_stopped(per_tenant, tmp_path):
    mcp, tools = per_tenant
    pool = mcp.servers["notes"]
    assert isinstance(pool, PerTenant)
    env = tools["mcp:notes/environment"]
    acme = (await call(env, "acme", {}, tmp_path))["pid"]
    globex = (await call(env, "globex", {}, tmp_path))["pid"]
    initech = (await call(env, "initech", {}, tmp_path))["pid"]  # a third, over max_processes: 2
    assert sorted(pool.processes) == ["globex", "initech"] and not pid_alive(acme)  # the longest idle made room
    assert (await call(env, "acme", {}, tmp_path))["pid"] not in (acme, globex, initech)  # started again
    pool.spec = pool.spec.model_copy(update={"idle_stop_s": 0.01})
    await asyncio.sleep(0.05)
    await pool.stop_idle()
    assert pool.processes == {}


async def test_a_new_tenant_waits_while_every_process_is_in_a_call(per_tenant, tmp_path):
    mcp, tools = per_tenant
    slow = tools["mcp:notes/slow"]
    running = [asyncio.create_task(call(slow, t, {"seconds": 3}, tmp_path)) for t in ("acme", "globex")]
    pool = mcp.servers["notes"]
    assert isinstance(pool, PerTenant)
    while sum(pool.running.values()) < 2:
        await asyncio.sleep(0.02)
    with pytest.raises(ToolError, match="already runs 2 processes .* tenant 'initech' must wait") as raised:
        await call(tools["mcp:notes/shout"], "initech", {"text": "x"}, tmp_path)
    assert raised.value.retryable and isinstance(raised.value, NotReached)
    assert [await r for r in running] == [{"result": "slept"}] * 2  # the two calls in progress were not disturbed


@pytest.mark.integration
async def test_a_side_effecting_call_refused_for_want_of_a_process_runs_once_on_the_next_attempt(
        tmp_path, calls: CallLog, tool_dispatch, task_id):
    """Through the runner with the call log in real NATS: a side-effecting call that found no free process never
    reached the server, so it fails retryably and claims nothing; the router's next attempt runs it, once."""
    mcp = McpTools({"notes": ServerSpec(command=NOTES[0], args=[*NOTES[1:], str(tmp_path / "notes-{tenant}.jsonl")],
                                        per_tenant=True, max_processes=1)})
    tools = await mcp.start()
    try:
        pool = mcp.servers["notes"]
        assert isinstance(pool, PerTenant)
        runner = ToolRunner(ToolConfig(workspace=tmp_path.resolve()), tools, calls)
        blocked = asyncio.create_task(call(tools["mcp:notes/slow"], "acme", {"seconds": 2}, tmp_path))
        while not pool.running.get("acme"):
            await asyncio.sleep(0.02)

        def attempt(n: int) -> tuple[Any, Any]:
            cause, dispatch = tool_dispatch("mcp:notes/add_note", {"title": "plan", "text": "globex's"},
                                            name="add_note", task_id=task_id, attempt=n)
            return cause.model_copy(update={"tenant": "globex"}), dispatch

        [refused] = await runner.handle(*attempt(1))
        assert (refused.type, refused.data["retryable"]) == ("node.errored", True)
        assert "already runs 1 processes (max_processes), each in a call; tenant 'globex' must wait" in (
            refused.data["error"])
        assert await calls.get(call_key("globex", task_id, "gather_context")) is None  # the claim was withdrawn
        assert not (tmp_path / "notes-globex.jsonl").exists()
        assert await blocked == {"result": "slept"}

        [ran] = await runner.handle(*attempt(2))  # the router's retry
        assert ran.type == "node.completed" and ran.data["output"] == {"id": 1, "count": 1}
        assert await runner.handle(*attempt(2)) == [ran]  # redelivered: answered from the call log, not run
        assert (tmp_path / "notes-globex.jsonl").read_text().count("\n") == 1
    finally:
        await mcp.stop()


async def test_a_process_that_cannot_start_for_a_tenant_fails_the_call_as_not_reached(tmp_path):
    (tmp_path / ".catalogue").mkdir()  # the listing process starts; a tenant's has no directory to start in
    mcp = McpTools({"notes": ServerSpec(command=NOTES[0], args=[*NOTES[1:], "notes.jsonl"], per_tenant=True,
                                        cwd=str(tmp_path / "{tenant}"))})
    tools = await mcp.start()
    try:
        with pytest.raises(NotReached, match=r"MCP server 'notes\[acme\]' could not be started .* the call never "
                                             "reached it") as raised:
            await call(tools["mcp:notes/add_note"], "acme", {"title": "x", "text": "y"}, tmp_path)
        assert raised.value.retryable
    finally:
        await mcp.stop()


async def test_stopping_during_a_call_ends_it_with_its_own_error(per_tenant, tmp_path):
    """The tool-runner stopping while a tenant's call runs: the call fails for what happened to it (its server
    stopped), not with a KeyError from the bookkeeping of the process already gone."""
    mcp, _ = per_tenant
    pool = mcp.servers["notes"]
    assert isinstance(pool, PerTenant)
    running = asyncio.create_task(pool.call("acme", "slow", {"seconds": 5}, 20.0))
    while "acme" not in pool.processes or pool.processes["acme"].session is None:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # the request is with the server
    await pool.stop()
    with pytest.raises(ServerDied):
        await running
    assert pool.processes == {} and pool.running == {}
