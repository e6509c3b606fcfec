"""The built-in tools' interfaces, defined once: what a model is told about each tool (description,
argument schema) and whether running it twice differs from running it once.

The tool-runner implements these (its registry is tested to match this catalogue); the router reads
them to offer tools to agents and to check the arguments a model asks for before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Capability = Literal["fs.read", "fs.write", "network", "shell"]
CAPABILITIES: tuple[Capability, ...] = ("fs.read", "fs.write", "network", "shell")
"""What a tool may reach outside the engine: read or write files, open connections, run code. An agent is
granted some of them (agents.yaml `capabilities`); a tool needing one it lacks is not the agent's to use."""
SIDE_EFFECT_CAPABILITIES: frozenset[str] = frozenset({"fs.write", "shell"})
"""Capabilities that change the world (or may: arbitrary code), which an analysis-only agent never gets."""


@dataclass(frozen=True)
class BuiltinTool:
    description: str
    args_schema: dict[str, Any]
    idempotent: bool = True
    """False: running it twice has a different effect than once (an append); never run twice per call."""
    capabilities: frozenset[Capability] = frozenset()
    """What it needs. The memory tools need none: their notes stay in the engine's own database, scoped to
    the tenant, never the host's files or network."""


PATH = {"type": "string", "minLength": 1}
MEMORY_LAYERS = ["task", "project", "global"]
"""The manifest's MemoryLayer values (it imports this module, so it cannot be imported here)."""

BUILTINS: dict[str, BuiltinTool] = {
    "text_stats": BuiltinTool(
        "Counts characters, words, lines and sentences; lists the most frequent words.",
        {"type": "object", "required": ["text"], "additionalProperties": False,
         "properties": {"text": {"type": "string"}, "top": {"type": "integer", "minimum": 0, "maximum": 50}}}),
    "workspace_list": BuiltinTool(
        "Lists files under a directory of the workspace.",
        {"type": "object", "additionalProperties": False,
         "properties": {"path": {"type": "string"}, "pattern": {"type": "string"},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 5000}}},
        capabilities=frozenset({"fs.read"})),
    "workspace_read": BuiltinTool(
        "Reads one text file of the workspace.",
        {"type": "object", "required": ["path"], "additionalProperties": False,
         "properties": {"path": {"type": "string"}, "max_bytes": {"type": "integer", "minimum": 1}}},
        capabilities=frozenset({"fs.read"})),
    "workspace_append": BuiltinTool(
        "Appends text to a file of the workspace (a line unless newline is false).",
        {"type": "object", "required": ["path", "text"], "additionalProperties": False,
         "properties": {"path": PATH, "text": {"type": "string", "maxLength": 65536},
                        "newline": {"type": "boolean"}}},
        idempotent=False, capabilities=frozenset({"fs.write"})),
    "http_fetch": BuiltinTool(
        "Fetches one URL (GET or HEAD) from a host on the tool-runner's allowlist; returns status, main headers "
        "and the body as text, cut at max_bytes.",
        {"type": "object", "required": ["url"], "additionalProperties": False,
         "properties": {
             "url": {"type": "string", "minLength": 1, "maxLength": 4096},
             "method": {"enum": ["GET", "HEAD"]},
             "headers": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 20},
             "max_bytes": {"type": "integer", "minimum": 1},
             "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 300}}},
        capabilities=frozenset({"network"})),
    "python": BuiltinTool(
        "Runs a Python snippet in a separate process with time, memory and CPU limits, no network and a scratch "
        "directory. `data` is readable as a variable; set a variable `result` to return a JSON value.",
        {"type": "object", "required": ["code"], "additionalProperties": False,
         "properties": {
             "code": {"type": "string", "minLength": 1, "maxLength": 200000},
             "data": {},
             "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
             "memory_mb": {"type": "integer", "minimum": 32}}},
        capabilities=frozenset({"shell"})),
    # Idempotent: a save is an upsert by key, so saving the same note twice leaves what saving it once does.
    "memory_save": BuiltinTool(
        "Saves a note to memory under a key, replacing the note that key held in the same layer. Layers: `task` "
        "(this task only), `project` (every task of this workflow's project), `global` (every task of the tenant). "
        "Notes not saved again expire after the retention period; beyond the per-layer limit the oldest are dropped.",
        {"type": "object", "required": ["layer", "key", "text"], "additionalProperties": False,
         "properties": {"layer": {"enum": MEMORY_LAYERS},
                        "key": {"type": "string", "minLength": 1, "maxLength": 200},
                        "text": {"type": "string", "minLength": 1, "maxLength": 8192}}}),
    "memory_search": BuiltinTool(
        "Searches saved notes, newest first: those of the given layers (default all three), optionally only those "
        "whose key or text contains `query` (case-insensitive).",
        {"type": "object", "additionalProperties": False,
         "properties": {"layers": {"type": "array", "items": {"enum": MEMORY_LAYERS}, "minItems": 1,
                                   "uniqueItems": True},
                        "query": {"type": "string", "maxLength": 200},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 100}}}),
}

NON_IDEMPOTENT_BUILTINS: frozenset[str] = frozenset(name for name, b in BUILTINS.items() if not b.idempotent)
"""Built-in tools with side effects whatever tools.yaml says."""
