"""Workspace file tools: a workspace that cannot be escaped, clear errors, appends that add up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agent_engine.tool_runner.tools import REGISTRY, Context, ToolError, context
from agent_engine.tool_runner.tools.files import workspace_append, workspace_list, workspace_read


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


@pytest.fixture
def ctx(workspace: Path) -> Context:
    return context(workspace)


def test_workspace_read_inside(ctx: Context) -> None:
    assert workspace_read({"path": "docs/a.md"}, ctx) == {
        "path": "docs/a.md", "content": "# A", "bytes": 3, "truncated": False}


def test_workspace_read_truncates(ctx: Context) -> None:
    out = workspace_read({"path": "notes.txt", "max_bytes": 5}, ctx)
    assert (out["content"], out["bytes"], out["truncated"]) == ("hello", 15, True)


def test_workspace_read_missing_file(ctx: Context) -> None:
    with pytest.raises(ToolError, match="no file 'nope.txt' in the workspace"):
        workspace_read({"path": "nope.txt"}, ctx)


@pytest.mark.parametrize("path", ["../outside/secret.txt", "docs/../../outside/secret.txt"])
def test_workspace_read_refuses_dot_dot(ctx: Context, path: str) -> None:
    with pytest.raises(ToolError, match="outside the workspace"):
        workspace_read({"path": path}, ctx)


def test_workspace_read_refuses_an_absolute_path(workspace: Path, ctx: Context) -> None:
    secret = workspace.parent / "outside" / "secret.txt"
    with pytest.raises(ToolError, match="outside the workspace"):
        workspace_read({"path": str(secret)}, ctx)


def test_workspace_read_refuses_a_symlink_out(workspace: Path, ctx: Context) -> None:
    os.symlink(workspace.parent / "outside" / "secret.txt", workspace / "link.txt")
    with pytest.raises(ToolError, match="path 'link.txt' is outside the workspace"):
        workspace_read({"path": "link.txt"}, ctx)


def test_workspace_read_follows_a_symlink_that_stays_inside(workspace: Path, ctx: Context) -> None:
    os.symlink(workspace / "notes.txt", workspace / "alias.txt")
    assert workspace_read({"path": "alias.txt"}, ctx)["content"] == "hello workspace"


def test_workspace_list(ctx: Context) -> None:
    assert workspace_list({}, ctx) == {"files": ["docs/a.md", "docs/b.md", "notes.txt"], "truncated": False}
    assert workspace_list({"path": "docs", "pattern": "*.md", "limit": 1}, ctx) == {
        "files": ["docs/a.md"], "truncated": True}


def test_workspace_list_skips_symlinks_out(workspace: Path, ctx: Context) -> None:
    os.symlink(workspace.parent / "outside" / "secret.txt", workspace / "link.txt")
    os.symlink(workspace.parent / "outside", workspace / "outdir")
    assert workspace_list({}, ctx)["files"] == ["docs/a.md", "docs/b.md", "notes.txt"]


@pytest.mark.parametrize("path", ["..", "../outside", "outdir"])
def test_workspace_list_refuses_directories_outside(workspace: Path, ctx: Context, path: str) -> None:
    os.symlink(workspace.parent / "outside", workspace / "outdir")
    with pytest.raises(ToolError, match="outside the workspace"):
        workspace_list({"path": path}, ctx)


def test_workspace_list_of_a_file_is_refused(ctx: Context) -> None:
    with pytest.raises(ToolError, match="'notes.txt' is not a directory"):
        workspace_list({"path": "notes.txt"}, ctx)


# --- workspace_append -------------------------------------------------------------------------

def test_workspace_append_adds_lines_and_creates_folders(workspace: Path, ctx: Context) -> None:
    first = workspace_append({"path": "logs/run.log", "text": "one"}, ctx)
    second = workspace_append({"path": "logs/run.log", "text": "two"}, ctx)
    assert (workspace / "logs" / "run.log").read_text() == "one\ntwo\n"
    assert first == {"path": "logs/run.log", "bytes_written": 4, "size": 4}
    assert second == {"path": "logs/run.log", "bytes_written": 4, "size": 8}
    REGISTRY["workspace_append"].check_result(second)


def test_workspace_append_without_newline(workspace: Path, ctx: Context) -> None:
    workspace_append({"path": "notes.txt", "text": "!", "newline": False}, ctx)
    assert (workspace / "notes.txt").read_text() == "hello workspace!"


@pytest.mark.parametrize("path", ["../outside/secret.txt", "/etc/passwd-copy", "docs/../../outside/new.txt"])
def test_workspace_append_refuses_paths_outside(workspace: Path, ctx: Context, path: str) -> None:
    with pytest.raises(ToolError, match="outside the workspace"):
        workspace_append({"path": path, "text": "x"}, ctx)
    assert (workspace.parent / "outside" / "secret.txt").read_text() == "top secret"


def test_workspace_append_to_a_directory_is_refused(ctx: Context) -> None:
    with pytest.raises(ToolError, match="'docs' is a directory in the workspace, not a file"):
        workspace_append({"path": "docs", "text": "x"}, ctx)


def test_workspace_append_is_declared_not_idempotent() -> None:
    assert REGISTRY["workspace_append"].idempotent is False
    assert all(REGISTRY[name].idempotent for name in ("workspace_read", "workspace_list", "text_stats", "http_fetch"))


# --- argument validation ----------------------------------------------------------------------

@pytest.mark.parametrize(("tool", "args", "message"), [
    ("text_stats", {}, "(root): 'text' is a required property"),
    ("text_stats", {"text": 3}, "text: 3 is not of type 'string'"),
    ("text_stats", {"text": "x", "top": 99}, "top: 99 is greater than the maximum of 50"),
    ("text_stats", {"text": "x", "colour": "red"}, "'colour' was unexpected"),
    ("workspace_read", {"path": "a", "max_bytes": 0}, "max_bytes: 0 is less than the minimum of 1"),
    ("workspace_list", {"limit": "ten"}, "limit: 'ten' is not of type 'integer'"),
    ("workspace_append", {"path": "a"}, "(root): 'text' is a required property"),
    ("http_fetch", {"url": "http://x", "method": "POST"}, "method: 'POST' is not one of ['GET', 'HEAD']"),
    ("python", {"code": ""}, "code: '' should be non-empty"),
    ("python", {"code": "1", "memory_mb": 8}, "memory_mb: 8 is less than the minimum of 32"),
])
def test_argument_errors_name_the_tool_and_field(tool: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolError) as info:
        REGISTRY[tool].check(args)
    assert str(info.value).startswith(f"invalid arguments for tool '{tool}': ")
    assert message in str(info.value)


def test_valid_arguments_pass() -> None:
    REGISTRY["text_stats"].check({"text": "x", "top": 3})
    REGISTRY["workspace_list"].check({})
    REGISTRY["python"].check({"code": "print(1)", "data": {"any": ["json", 1]}})


def test_every_builtin_declares_a_result_schema() -> None:
    assert [name for name, tool in REGISTRY.items() if tool.result_schema is None] == []
