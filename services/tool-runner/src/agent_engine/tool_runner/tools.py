"""The built-in tool registry. Every tool declares an argument schema, whether it is idempotent,
and a function from validated arguments to a JSON object."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema


class ToolError(Exception):
    """A tool refused or failed; the message goes back to the task as the node's error."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args_schema: dict[str, Any]
    run: Callable[[dict[str, Any], Path], dict[str, Any]]
    idempotent: bool = True

    def check(self, args: dict[str, Any]) -> None:
        problems = sorted(jsonschema.Draft202012Validator(self.args_schema).iter_errors(args), key=str)
        if problems:
            detail = "; ".join(f"{'/'.join(map(str, p.absolute_path)) or '(root)'}: {p.message}" for p in problems)
            raise ToolError(f"invalid arguments for tool '{self.name}': {detail}")


WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def text_stats(args: dict[str, Any], _workspace: Path) -> dict[str, Any]:
    text: str = args["text"]
    words = WORD.findall(text.lower())
    top = Counter(w for w in words if len(w) > 3).most_common(args.get("top", 5))
    return {
        "chars": len(text), "words": len(words), "lines": len(text.splitlines()) or (1 if text else 0),
        "sentences": len(re.findall(r"[.!?]+(?:\s|$)", text)),
        "top_words": [{"word": w, "count": c} for w, c in top],
    }


def confined(workspace: Path, relative: str) -> Path:
    """A path inside the workspace; anything that resolves outside it (.., symlinks) is refused."""
    root = workspace.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise ToolError(f"path '{relative}' is outside the workspace")
    return target


def workspace_list(args: dict[str, Any], workspace: Path) -> dict[str, Any]:
    base = confined(workspace, args.get("path", "."))
    if not base.is_dir():
        raise ToolError(f"'{args.get('path', '.')}' is not a directory in the workspace")
    root = workspace.resolve()
    files = sorted(str(p.relative_to(root)) for p in base.rglob(args.get("pattern", "*"))
                   if p.is_file() and p.resolve().is_relative_to(root))
    limit = args.get("limit", 200)
    return {"files": files[:limit], "truncated": len(files) > limit}


def workspace_read(args: dict[str, Any], workspace: Path) -> dict[str, Any]:
    target = confined(workspace, args["path"])
    if not target.is_file():
        raise ToolError(f"no file '{args['path']}' in the workspace")
    limit = args.get("max_bytes", 65536)
    data = target.read_bytes()
    return {"path": args["path"], "content": data[:limit].decode("utf-8", errors="replace"),
            "bytes": len(data), "truncated": len(data) > limit}


REGISTRY: dict[str, Tool] = {t.name: t for t in (
    Tool("text_stats", "Counts characters, words, lines and sentences; lists the most frequent words.",
         {"type": "object", "required": ["text"], "additionalProperties": False,
          "properties": {"text": {"type": "string"}, "top": {"type": "integer", "minimum": 0, "maximum": 50}}},
         text_stats),
    Tool("workspace_list", "Lists files under a directory of the workspace.",
         {"type": "object", "additionalProperties": False,
          "properties": {"path": {"type": "string"}, "pattern": {"type": "string"},
                         "limit": {"type": "integer", "minimum": 1, "maximum": 5000}}},
         workspace_list),
    Tool("workspace_read", "Reads one text file of the workspace.",
         {"type": "object", "required": ["path"], "additionalProperties": False,
          "properties": {"path": {"type": "string"}, "max_bytes": {"type": "integer", "minimum": 1}}},
         workspace_read),
)}
