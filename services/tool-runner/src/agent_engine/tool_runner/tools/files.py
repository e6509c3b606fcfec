"""Workspace file tools: list, read, append. Every path is confined to the workspace directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_engine.tool_runner.tools.base import Context, ToolError, builtin


def confined(workspace: Path, relative: str) -> Path:
    """A path inside the workspace; anything that resolves outside it (.., symlinks) is refused."""
    root = workspace.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise ToolError(f"path '{relative}' is outside the workspace")
    return target


def workspace_list(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    base = confined(ctx.workspace, args.get("path", "."))
    if not base.is_dir():
        raise ToolError(f"'{args.get('path', '.')}' is not a directory in the workspace")
    root = ctx.workspace.resolve()
    files = sorted(str(p.relative_to(root)) for p in base.rglob(args.get("pattern", "*"))
                   if p.is_file() and p.resolve().is_relative_to(root))
    limit = args.get("limit", 200)
    return {"files": files[:limit], "truncated": len(files) > limit}


def workspace_read(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    target = confined(ctx.workspace, args["path"])
    if not target.is_file():
        raise ToolError(f"no file '{args['path']}' in the workspace")
    limit = args.get("max_bytes", 65536)
    data = target.read_bytes()
    return {"path": args["path"], "content": data[:limit].decode("utf-8", errors="replace"),
            "bytes": len(data), "truncated": len(data) > limit}


def workspace_append(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Append text (a line, by default) to a workspace file, creating it and its folders if needed."""
    target = confined(ctx.workspace, args["path"])
    if target.is_dir():
        raise ToolError(f"'{args['path']}' is a directory in the workspace, not a file")
    text = args["text"] + ("\n" if args.get("newline", True) else "")
    data = text.encode()
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("ab") as out:
        out.write(data)
        size = out.tell()
    ctx.written.append(args["path"])
    return {"path": args["path"], "bytes_written": len(data), "size": size}


COUNT = {"type": "integer", "minimum": 0}
WORKSPACE_LIST = builtin(
    "workspace_list", workspace_list,
    result_schema={"type": "object", "required": ["files", "truncated"],
                   "properties": {"files": {"type": "array", "items": {"type": "string"}},
                                  "truncated": {"type": "boolean"}}},
)
WORKSPACE_READ = builtin(
    "workspace_read", workspace_read,
    result_schema={"type": "object", "required": ["path", "content", "bytes", "truncated"],
                   "properties": {"path": {"type": "string"}, "content": {"type": "string"}, "bytes": COUNT,
                                  "truncated": {"type": "boolean"}}},
)
WORKSPACE_APPEND = builtin(
    "workspace_append", workspace_append,
    result_schema={"type": "object", "required": ["path", "bytes_written", "size"],
                   "properties": {"path": {"type": "string"}, "bytes_written": COUNT, "size": COUNT}},
)
