"""The built-in tools this tool-runner has, by the name a manifest's `builtin` uses."""

from __future__ import annotations

from agent_engine.tool_runner.tools.base import Tool
from agent_engine.tool_runner.tools.files import WORKSPACE_APPEND, WORKSPACE_LIST, WORKSPACE_READ
from agent_engine.tool_runner.tools.http import HTTP_FETCH
from agent_engine.tool_runner.tools.memory import MEMORY_SAVE, MEMORY_SEARCH
from agent_engine.tool_runner.tools.python import PYTHON
from agent_engine.tool_runner.tools.text import TEXT_STATS

REGISTRY: dict[str, Tool] = {t.name: t for t in (
    TEXT_STATS, WORKSPACE_LIST, WORKSPACE_READ, WORKSPACE_APPEND, HTTP_FETCH, PYTHON, MEMORY_SAVE, MEMORY_SEARCH,
)}
