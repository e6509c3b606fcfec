"""Whether an agent may use a tool, by capability and mode (T3): one pure check, used by validation (by
`agentctl workflow validate`, and by the router on the manifest it pins when a task starts, where an MCP tool's
side effects from its server's annotations are first known) and by the router on each call a model asks for."""

from __future__ import annotations

from dataclasses import dataclass

from agent_engine.contracts.builtins import SIDE_EFFECT_CAPABILITIES
from agent_engine.contracts.manifest import AgentSpec, ToolSpec


@dataclass(frozen=True)
class CapabilityProblem:
    rule: str
    """`agent-capability` (a capability the agent is not granted) or `agent-mode` (analysis-only)."""
    message: str


def capability_problem(agent_name: str, agent: AgentSpec, tool_name: str, tool: ToolSpec) -> CapabilityProblem | None:
    """Why `agent` may not use `tool` (None: it may)."""
    needs = tool.needs()
    granted = agent.granted()
    if granted is not None:
        missing = sorted(needs - granted)
        if missing:
            return CapabilityProblem("agent-capability", f"agent '{agent_name}' may not use tool '{tool_name}': it "
                                     f"needs capability {_names(missing)}, which the agent is not granted "
                                     f"(capabilities: {sorted(granted)})")
    if agent.mode == "analysis-only":
        changing = sorted(needs & SIDE_EFFECT_CAPABILITIES)
        if changing:
            return CapabilityProblem("agent-mode", f"agent '{agent_name}' is analysis-only and may not use tool "
                                     f"'{tool_name}': it needs capability {_names(changing)}")
        if tool.has_side_effects:
            return CapabilityProblem("agent-mode", f"agent '{agent_name}' is analysis-only and may not use tool "
                                     f"'{tool_name}': it has side effects")
    return None


def _names(capabilities: list[str]) -> str:
    return ", ".join(f"'{c}'" for c in capabilities)
