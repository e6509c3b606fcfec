"""Built-in tools: each declares its argument and result schemas and whether it is idempotent."""

from agent_engine.tool_runner.tools.base import Context, Scope, Tool, ToolError, context
from agent_engine.tool_runner.tools.registry import REGISTRY

__all__ = ["REGISTRY", "Context", "Scope", "Tool", "ToolError", "context"]
