"""Built-in tools and the tool runner: known numbers, a workspace that cannot be escaped, clear errors."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from agent_engine.contracts.envelope import derive_id
from agent_engine.tool_runner.service import SOURCE, ToolRunner
from agent_engine.tool_runner.tools import (
    REGISTRY,
    Tool,
    ToolError,
    text_stats,
    workspace_list,
    workspace_read,
)

TEXT = "Alpha beta gamma. Beta gamma!\nGamma delta?"


# --- text_stats -------------------------------------------------------------------------------

def test_text_stats_on_a_known_text() -> None:
    assert text_stats({"text": TEXT}, Path(".")) == {
        "chars": 42, "words": 7, "lines": 2, "sentences": 3,
        "top_words": [{"word": "gamma", "count": 3}, {"word": "beta", "count": 2},
                      {"word": "alpha", "count": 1}, {"word": "delta", "count": 1}],
    }


def test_text_stats_counts_one_letter_words() -> None:
    stats = text_stats({"text": "I am a cat."}, Path("."))
    assert stats["words"] == 4
    assert stats["top_words"] == []  # only words longer than three letters are ranked


def test_text_stats_top_limits_the_ranking() -> None:
    assert text_stats({"text": TEXT, "top": 2}, Path("."))["top_words"] == [
        {"word": "gamma", "count": 3}, {"word": "beta", "count": 2}]


def test_text_stats_on_empty_and_one_line_text() -> None:
    assert text_stats({"text": ""}, Path(".")) == {"chars": 0, "words": 0, "lines": 0, "sentences": 0,
                                                    "top_words": []}
    assert text_stats({"text": "no full stop"}, Path("."))["lines"] == 1


# --- workspace tools --------------------------------------------------------------------------

@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "docs").mkdir(parents=True)
    (root / "notes.txt").write_text("hello workspace")
    (root / "docs" / "a.md").write_text("# A")
    (root / "docs" / "b.md").write_text("# B")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    return root


def test_workspace_read_inside(workspace: Path) -> None:
    assert workspace_read({"path": "docs/a.md"}, workspace) == {
        "path": "docs/a.md", "content": "# A", "bytes": 3, "truncated": False}


def test_workspace_read_truncates(workspace: Path) -> None:
    out = workspace_read({"path": "notes.txt", "max_bytes": 5}, workspace)
    assert (out["content"], out["bytes"], out["truncated"]) == ("hello", 15, True)


def test_workspace_read_missing_file(workspace: Path) -> None:
    with pytest.raises(ToolError, match="no file 'nope.txt' in the workspace"):
        workspace_read({"path": "nope.txt"}, workspace)


@pytest.mark.parametrize("path", ["../outside/secret.txt", "docs/../../outside/secret.txt"])
def test_workspace_read_refuses_dot_dot(workspace: Path, path: str) -> None:
    with pytest.raises(ToolError, match="outside the workspace"):
        workspace_read({"path": path}, workspace)


def test_workspace_read_refuses_an_absolute_path(workspace: Path) -> None:
    secret = workspace.parent / "outside" / "secret.txt"
    with pytest.raises(ToolError, match="outside the workspace"):
        workspace_read({"path": str(secret)}, workspace)


def test_workspace_read_refuses_a_symlink_out(workspace: Path) -> None:
    os.symlink(workspace.parent / "outside" / "secret.txt", workspace / "link.txt")
    with pytest.raises(ToolError, match="path 'link.txt' is outside the workspace"):
        workspace_read({"path": "link.txt"}, workspace)


def test_workspace_read_follows_a_symlink_that_stays_inside(workspace: Path) -> None:
    os.symlink(workspace / "notes.txt", workspace / "alias.txt")
    assert workspace_read({"path": "alias.txt"}, workspace)["content"] == "hello workspace"


def test_workspace_list(workspace: Path) -> None:
    assert workspace_list({}, workspace) == {"files": ["docs/a.md", "docs/b.md", "notes.txt"], "truncated": False}
    assert workspace_list({"path": "docs", "pattern": "*.md", "limit": 1}, workspace) == {
        "files": ["docs/a.md"], "truncated": True}


def test_workspace_list_skips_symlinks_out(workspace: Path) -> None:
    os.symlink(workspace.parent / "outside" / "secret.txt", workspace / "link.txt")
    os.symlink(workspace.parent / "outside", workspace / "outdir")
    assert workspace_list({}, workspace)["files"] == ["docs/a.md", "docs/b.md", "notes.txt"]


@pytest.mark.parametrize("path", ["..", "../outside", "outdir"])
def test_workspace_list_refuses_directories_outside(workspace: Path, path: str) -> None:
    os.symlink(workspace.parent / "outside", workspace / "outdir")
    with pytest.raises(ToolError, match="outside the workspace"):
        workspace_list({"path": path}, workspace)


def test_workspace_list_of_a_file_is_refused(workspace: Path) -> None:
    with pytest.raises(ToolError, match="'notes.txt' is not a directory"):
        workspace_list({"path": "notes.txt"}, workspace)


# --- argument validation ----------------------------------------------------------------------

@pytest.mark.parametrize(("tool", "args", "message"), [
    ("text_stats", {}, "(root): 'text' is a required property"),
    ("text_stats", {"text": 3}, "text: 3 is not of type 'string'"),
    ("text_stats", {"text": "x", "top": 99}, "top: 99 is greater than the maximum of 50"),
    ("text_stats", {"text": "x", "colour": "red"}, "'colour' was unexpected"),
    ("workspace_read", {"path": "a", "max_bytes": 0}, "max_bytes: 0 is less than the minimum of 1"),
    ("workspace_list", {"limit": "ten"}, "limit: 'ten' is not of type 'integer'"),
])
def test_argument_errors_name_the_tool_and_field(tool: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolError) as info:
        REGISTRY[tool].check(args)
    assert str(info.value).startswith(f"invalid arguments for tool '{tool}': ")
    assert message in str(info.value)


def test_valid_arguments_pass() -> None:
    REGISTRY["text_stats"].check({"text": "x", "top": 3})
    REGISTRY["workspace_list"].check({})


# --- the runner -------------------------------------------------------------------------------

async def test_handle_completes_a_good_call(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("text_stats", {"text": TEXT, "top": 1})
    [event] = await ToolRunner(tmp_path).handle(cause, dispatch)
    assert event.type == "node.completed"
    assert event.id == derive_id(cause.id, "completed")
    assert (event.source, event.tenant, event.task_id, event.correlation_id, event.causation_id) == (
        SOURCE, "acme", "task-1", "corr-1", cause.id)
    data = event.data
    assert (data["dispatch_id"], data["node"], data["attempt"], data["provider"]) == (
        "disp-1", "gather_context", 1, "tool:text_stats")
    assert data["output"]["words"] == 7
    assert data["output"]["top_words"] == [{"word": "gamma", "count": 3}]
    assert data["duration_ms"] >= 0


async def test_handle_reads_from_its_workspace(tool_dispatch, tmp_path: Path) -> None:
    (tmp_path / "brief.txt").write_text("the brief")
    cause, dispatch = tool_dispatch("workspace_read", {"path": "brief.txt"}, name="read_brief")
    [event] = await ToolRunner(tmp_path).handle(cause, dispatch)
    assert event.type == "node.completed"
    assert event.data["output"]["content"] == "the brief"


async def test_handle_unknown_builtin_is_a_permanent_error(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("web_search", {"q": "x"}, name="search")
    [event] = await ToolRunner(tmp_path).handle(cause, dispatch)
    assert event.type == "node.errored"
    assert event.id == derive_id(cause.id, "errored")
    assert event.data["retryable"] is False
    assert event.data["error"].startswith("tool 'search' names built-in 'web_search', which this tool-runner "
                                          "does not have")
    assert "text_stats" in event.data["error"]


async def test_handle_bad_args_is_a_permanent_error(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("text_stats", {"txt": "typo"})
    [event] = await ToolRunner(tmp_path).handle(cause, dispatch)
    assert event.type == "node.errored"
    assert event.data["retryable"] is False
    assert "invalid arguments for tool 'text_stats'" in event.data["error"]
    assert "'text' is a required property" in event.data["error"]


async def test_handle_escape_attempt_is_a_permanent_error(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("workspace_read", {"path": "../../etc/passwd"}, name="read")
    [event] = await ToolRunner(tmp_path).handle(cause, dispatch)
    assert (event.type, event.data["retryable"]) == ("node.errored", False)
    assert "outside the workspace" in event.data["error"]


async def test_handle_dispatch_without_tool(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch(with_tool=False)
    [event] = await ToolRunner(tmp_path).handle(cause, dispatch)
    assert (event.type, event.data["error"], event.data["retryable"]) == (
        "node.errored", "tool dispatch carries no tool", False)


async def test_handle_slow_tool_times_out_retryably(tool_dispatch, tmp_path: Path) -> None:
    slow = Tool("slow", "sleeps", {"type": "object"}, lambda args, ws: time.sleep(0.3) or {})
    cause, dispatch = tool_dispatch("slow", {}, name="nap")
    [event] = await ToolRunner(tmp_path, {"slow": slow}, timeout_s=0.05).handle(cause, dispatch)
    assert event.type == "node.errored"
    assert event.data["error"] == "tool 'nap' ran over 0.05s"
    assert event.data["retryable"] is True  # idempotent tools may be retried


async def test_handle_is_deterministic_in_ids(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("text_stats", {"text": "x"})
    runner = ToolRunner(tmp_path)
    [first] = await runner.handle(cause, dispatch)
    [second] = await runner.handle(cause, dispatch)
    assert first.id == second.id
