"""The MCP client against a real MCP server over stdio (testkit's notes server, started by each test): the
catalogue it publishes, calls with structured and text results, tool errors, a server that dies mid-call and is
started again, time limits, and a side-effecting MCP tool run once across a redelivery (real NATS call log)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent_engine.contracts.mcp import side_effects_from
from agent_engine.runtime.processes import pid_alive
from agent_engine.tool_runner.calls import CallLog
from agent_engine.tool_runner.config import ToolConfig
from agent_engine.tool_runner.mcp import McpTools
from agent_engine.tool_runner.mcp_servers import ServerSpec, load_servers
from agent_engine.tool_runner.service import ToolRunner
from agent_engine.tool_runner.tools import Tool, ToolError, context


@pytest.fixture
async def notes(tmp_path: Path) -> AsyncIterator[tuple[McpTools, dict[str, Tool], Path]]:
    """The notes server started as the tool-runner starts a declared one; its tools by registry name."""
    book = tmp_path / "notes.jsonl"
    mcp = McpTools({"notes": ServerSpec(command=sys.executable, args=["-m", "agent_engine.testkit.mcp_notes",
                                                                      str(book)])})
    tools = await mcp.start()
    yield mcp, tools, book
    await mcp.stop()


async def run(tool: Tool, args: dict[str, Any], tmp_path: Path, limit: float = 20.0) -> dict[str, Any]:
    """As the runner does: check the arguments, run in a worker thread, check the result."""
    tool.check(args)
    output = await asyncio.to_thread(tool.run, args, context(tmp_path, limit))
    tool.check_result(output)
    return output


async def test_the_catalogue_has_each_tool_with_its_schemas_and_side_effects(notes):
    mcp, tools, _ = notes
    entries = {e.tool: e for e in mcp.entries}
    assert set(tools) == {f"mcp:notes/{name}" for name in entries}
    assert {"add_note", "list_notes", "shout", "fail", "crash", "slow"} <= set(entries)
    add = entries["add_note"]
    assert add.input_schema["required"] == ["title", "text"] and add.output_schema is not None
    assert (add.side_effects, entries["list_notes"].side_effects, entries["shout"].side_effects) == (True, False, None)
    assert not tools["mcp:notes/add_note"].idempotent and tools["mcp:notes/list_notes"].idempotent


def test_side_effects_from_annotations():
    assert side_effects_from(None) is None and side_effects_from({}) is None
    assert side_effects_from({"readOnlyHint": True}) is False
    assert side_effects_from({"idempotentHint": True, "readOnlyHint": False}) is True  # a delete is idempotent
    assert side_effects_from({"destructiveHint": False}) is True  # may still add something each time
    assert side_effects_from({"title": "Notes"}) is True


async def test_structured_and_text_results(notes, tmp_path):
    _, tools, book = notes
    assert await run(tools["mcp:notes/add_note"], {"title": "a", "text": "first"}, tmp_path) == {"id": 1, "count": 1}
    assert await run(tools["mcp:notes/list_notes"], {}, tmp_path) == {"notes": [{"title": "a", "text": "first"}]}
    assert await run(tools["mcp:notes/shout"], {"text": "hi"}, tmp_path) == {"text": "HI"}
    assert book.read_text().count("\n") == 1


async def test_arguments_are_checked_against_the_servers_schema(notes):
    _, tools, _ = notes
    with pytest.raises(ToolError, match="invalid arguments for tool 'mcp:notes/add_note'.*'text' is a required"):
        tools["mcp:notes/add_note"].check({"title": "a"})


async def test_a_tool_error_comes_back_as_a_refusal_for_the_model(notes, tmp_path):
    _, tools, _ = notes
    with pytest.raises(ToolError, match="reported an error: .*no such page") as raised:
        await run(tools["mcp:notes/fail"], {"reason": "no such page"}, tmp_path)
    assert not raised.value.retryable


async def test_a_server_that_dies_mid_call_errors_that_call_and_is_started_again(notes, tmp_path):
    mcp, tools, _ = notes
    with pytest.raises(ToolError, match="MCP server 'notes' died during the call") as raised:
        await run(tools["mcp:notes/crash"], {}, tmp_path)
    assert raised.value.retryable  # the runner keeps it retryable only for an idempotent call
    assert await run(tools["mcp:notes/shout"], {"text": "back"}, tmp_path) == {"text": "BACK"}
    assert mcp.servers["notes"].starts == 2


async def test_a_server_killed_while_idle_is_started_again_by_the_next_call(notes, tmp_path):
    mcp, tools, _ = notes
    pid = (await run(tools["mcp:notes/environment"], {}, tmp_path))["pid"]
    os.kill(pid, signal.SIGKILL)
    while pid_alive(pid):  # gone before the next call, so the ping, not the call, finds it dead
        await asyncio.sleep(0.02)
    assert await run(tools["mcp:notes/shout"], {"text": "again"}, tmp_path) == {"text": "AGAIN"}
    assert mcp.servers["notes"].starts == 2


async def test_a_call_over_its_time_limit_times_out_and_the_server_still_answers(notes, tmp_path):
    _, tools, _ = notes
    with pytest.raises(TimeoutError):
        await run(tools["mcp:notes/slow"], {"seconds": 30}, tmp_path, limit=0.5)
    assert await run(tools["mcp:notes/shout"], {"text": "still here"}, tmp_path) == {"text": "STILL HERE"}


async def test_a_server_gets_its_declared_env_and_none_of_the_tool_runners(tmp_path, monkeypatch):
    monkeypatch.setenv("AE_NATS_CREDENTIAL_FOR_TEST", "secret")  # as the tool-runner's own environment holds
    mcp = McpTools({"notes": ServerSpec(command=sys.executable, env={"NOTES_MODE": "strict"},
                                        args=["-m", "agent_engine.testkit.mcp_notes", str(tmp_path / "n.jsonl")])})
    tools = await mcp.start()
    try:
        names = (await run(tools["mcp:notes/environment"], {}, tmp_path))["names"]
    finally:
        await mcp.stop()
    assert "NOTES_MODE" in names and "AE_NATS_CREDENTIAL_FOR_TEST" not in names


async def test_a_server_that_cannot_start_stops_the_tool_runner_naming_it():
    mcp = McpTools({"broken": ServerSpec(command=sys.executable, args=["-c", "raise SystemExit(1)"],
                                         start_timeout_s=10)})
    with pytest.raises(ValueError, match="AE_MCP_SERVERS: server 'broken'"):
        await mcp.start()


def test_the_servers_file_is_checked(tmp_path):
    good = tmp_path / "servers.yaml"
    good.write_text("mcp_servers:\n  notes: {command: python3, args: [-m, x], env: {A: b}}\n")
    assert load_servers(good)["notes"].args == ["-m", "x"]
    typo = tmp_path / "typo.yaml"
    typo.write_text("mcp_servers:\n  notes: {comand: python3}\n")
    with pytest.raises(ValueError, match=r"typo.yaml: mcp_servers.notes.command: Field required"):
        load_servers(typo)
    bad_name = tmp_path / "name.yaml"
    bad_name.write_text("mcp_servers:\n  Notes.x: {command: python3}\n")
    with pytest.raises(ValueError, match=r"server names \['Notes.x'\]"):
        load_servers(bad_name)


@pytest.mark.integration
async def test_a_side_effecting_mcp_tool_runs_once_across_a_redelivery(notes, tool_dispatch, task_id,
                                                                       calls: CallLog, tmp_path):
    """Through the runner, as a dispatch from the router: the call log keeps a redelivered add_note from
    adding the note twice; the same event answers both."""
    _, tools, book = notes
    runner = ToolRunner(ToolConfig(workspace=tmp_path), tools, calls)
    cause, dispatch = tool_dispatch("mcp:notes/add_note", {"title": "once", "text": "only once"}, name="add_note",
                                    task_id=task_id)
    [first] = await runner.handle(cause, dispatch)
    [again] = await runner.handle(cause, dispatch)
    assert first.type == "node.completed" and first.data["output"] == {"id": 1, "count": 1}
    assert again == first and first.data["provider"] == "tool:mcp:notes/add_note"
    assert book.read_text().count("\n") == 1


@pytest.mark.integration
async def test_a_call_the_server_died_in_is_retried_only_when_idempotent(notes, tool_dispatch, task_id,
                                                                        calls: CallLog, tmp_path):
    """Through the runner: `crash` is read-only by its annotations, so its failure is retryable; the same tool
    declared side-effecting in tools.yaml (the dispatch says so) may have had its effect, so it is not."""
    _, tools, _ = notes
    runner = ToolRunner(ToolConfig(workspace=tmp_path), tools, calls)
    [idempotent] = await runner.handle(*tool_dispatch("mcp:notes/crash", {}, name="crash", task_id=task_id))
    assert (idempotent.type, idempotent.data["retryable"]) == ("node.errored", True)
    assert "MCP server 'notes' died during the call" in idempotent.data["error"]
    [guarded] = await runner.handle(*tool_dispatch("mcp:notes/crash", {}, name="crash", task_id=task_id,
                                                   node="other", side_effects=True))
    assert (guarded.type, guarded.data["retryable"]) == ("node.errored", False)


# --- pure: a call's result as the node's output --------------------------------------------------------------

def result(**fields: Any) -> Any:
    from mcp.types import CallToolResult

    return CallToolResult.model_validate({"content": [], **fields})


def test_structured_content_is_the_output_and_a_non_object_comes_as_result() -> None:
    from agent_engine.tool_runner.mcp import output_of

    assert output_of("t", result(structuredContent={"a": 1}), True) == {"a": 1}
    assert output_of("t", result(structuredContent=[1, 2]), True) == {"result": [1, 2]}


def test_text_is_joined_and_other_blocks_are_named_not_carried() -> None:
    from agent_engine.tool_runner.mcp import output_of

    blocks = [{"type": "text", "text": "one"}, {"type": "image", "data": "aGk=", "mimeType": "image/png"},
              {"type": "text", "text": "two"}]
    assert output_of("t", result(content=blocks), False) == {"text": "one\ntwo", "omitted": ["image"]}


def test_is_error_and_a_missing_structured_result_are_errors_for_the_model() -> None:
    from agent_engine.tool_runner.mcp import output_of

    with pytest.raises(ToolError, match="tool 't' reported an error: quota exceeded") as raised:
        output_of("t", result(content=[{"type": "text", "text": "quota exceeded"}], isError=True), False)
    assert not raised.value.retryable
    with pytest.raises(ToolError, match="has an output schema but returned no structured content"):
        output_of("t", result(content=[{"type": "text", "text": "x"}]), True)


async def test_a_result_breaking_the_output_schema_is_refused_by_the_runners_check() -> None:
    from agent_engine.contracts.mcp import McpToolEntry
    from agent_engine.tool_runner.mcp import Shared, as_tool

    entry = McpToolEntry(server="s", tool="count", input_schema={"type": "object"},
                         output_schema={"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}})
    tool = as_tool(Shared("s", ServerSpec(command="unused")), entry, asyncio.get_running_loop())
    tool.check_result({"n": 3})
    with pytest.raises(ToolError, match="does not match its result schema"):
        tool.check_result({"n": "three"})
    listed = as_tool(Shared("s", ServerSpec(command="unused")),
                     entry.model_copy(update={"output_schema": {"type": "array"}}), asyncio.get_running_loop())
    listed.check_result({"result": [1]})  # a non-object schema applies to the wrapped value
    with pytest.raises(ToolError):
        listed.check_result({"result": 1})
