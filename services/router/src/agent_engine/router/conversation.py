"""Tool use, the pure parts: what an agent's model is offered, whether a call it asks for may run, and
which earlier turns a dispatch carries (or asks the runner to summarise).

An agent node's tool use is a sequence of recorded steps, never state inside a runner: the model's
turn asking for tools (`node.tool_turn_recorded`), each call run by the tool-runner in the order the
model gave them (`node.dispatched` with `call`, then `node.tool_returned`), then the model's next turn,
dispatched with the conversation so far.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from agent_engine.contracts.capabilities import capability_problem
from agent_engine.contracts.events import ConversationSummary, NodeContext, RequestedCall, ToolDef, ToolTurn
from agent_engine.contracts.manifest import AgentSpec, WorkflowManifest

SUMMARISE_AT_BYTES = 384 * 1024
"""Earlier turns are summarised once a dispatch would carry this much (half of what one may carry), so
the turns to summarise still fit the dispatch that asks for it."""


def call_id(revision: int, turn: int, index: int) -> str:
    """What the router calls a tool call (and shows the model): unique within a node's revision."""
    return (f"r{revision}-" if revision else "") + f"t{turn}-c{index}"


def tool_defs(manifest: WorkflowManifest, agent: AgentSpec) -> list[ToolDef]:
    """The agent's tools as its model is offered them (validation made sure each has a schema)."""
    return [ToolDef(name=name, description=manifest.tools[name].model_description(),
                    input_schema=manifest.tools[name].model_schema() or {"type": "object"})
            for name in agent.tools if name in manifest.tools]


def call_problem(manifest: WorkflowManifest, agent_name: str, agent: AgentSpec, call: RequestedCall) -> str:
    """Why a call the model asked for may not run ("" if it may); the model sees the reason as the result."""
    if call.name not in agent.tools or call.name not in manifest.tools:
        return f"agent '{agent_name}' may not use tool '{call.name}'; it may use {agent.tools}"
    tool = manifest.tools[call.name]
    problem = capability_problem(agent_name, agent, call.name, tool)
    if problem is not None:  # a task breaking these is rejected at start; checked again so no path runs such a call
        return problem.message
    schema = tool.model_schema()
    if schema is None and tool.mcp is not None:
        return (f"tool '{call.name}' (MCP server '{tool.mcp.server}', tool '{tool.mcp.tool}') was not in the "
                "tool-runner's MCP catalogue when this task started, so it has no argument schema to check the "
                "call against; declare its args_schema in tools.yaml, or start a tool-runner with that server")
    if schema is None:
        return f"tool '{call.name}' has no argument schema to check the call against"
    try:
        detail = schema_problems(schema, call.args)
    except SchemaUnusable as exc:  # a manifest put in the registry without `agentctl workflow validate`
        return f"tool '{call.name}' cannot be called: its args_schema {exc}; fix tools.yaml"
    return f"invalid arguments for tool '{call.name}': {detail}" if detail else ""


class SchemaUnusable(ValueError):
    pass


def schema_problems(schema: dict[str, Any], value: Any, limit: int = 5) -> str:
    """Where `value` breaks `schema`, path by path ("" when it does not). SchemaUnusable when the schema
    itself is not a valid JSON Schema (deterministic: the same schema always fails the same way)."""
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value), key=str)
    except jsonschema.SchemaError as exc:
        raise SchemaUnusable(f"is not a valid JSON Schema: {exc.message}") from None
    except Exception as exc:  # noqa: BLE001  e.g. a $ref that cannot be resolved
        raise SchemaUnusable(f"cannot be applied: {type(exc).__name__}: {exc}") from None
    return "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:limit])


def next_open_call(turn: dict[str, Any]) -> int | None:
    """The first call of a recorded turn that has neither a result nor an error yet."""
    for index, call in enumerate(turn["calls"]):
        if call.get("output") is None and call.get("error") is None:
            return index
    return None


def _tokens(size: int) -> int:
    return (size + 3) // 4


def with_conversation(context: NodeContext, steps: tuple[dict[str, Any], ...], summary: dict[str, Any] | None,
                      agent: AgentSpec, budget: int | None) -> tuple[NodeContext, str]:
    """The context of an agent's next turn: its earlier turns (after any summary), and `summarise` set when
    they grew over the agent's `summarise_over`, the node's token budget or half of what a dispatch may
    carry. Returns (context, problem); a problem (over budget, nothing left to summarise) fails the node."""
    done = summary["turns"] if summary else 0
    turns = [ToolTurn.model_validate(t) for t in steps[done:]]
    kept = ConversationSummary.model_validate(summary) if summary else None
    base = len(context.model_dump_json())
    carried = sum(len(t.model_dump_json()) for t in turns) + (len(kept.text) if kept else 0)
    over_budget = budget is not None and _tokens(base + carried) > budget
    too_long = ((agent.summarise_over is not None and _tokens(carried) > agent.summarise_over)
                or base + carried > SUMMARISE_AT_BYTES or over_budget)
    summarise = len(turns) - agent.keep_turns if too_long and len(turns) > agent.keep_turns else None
    if summarise is not None and budget is not None:
        recent = sum(len(t.model_dump_json()) for t in turns[summarise:])
        if _tokens(base + recent) > budget:
            return context, (f"the last {agent.keep_turns} tool turn(s) and the context are about "
                             f"{_tokens(base + recent)} tokens (estimated: JSON length / 4), over the budget "
                             f"sees.max_tokens = {budget} even with the older turns summarised; lower keep_turns "
                             "or raise the budget")
    elif over_budget:
        return context, (f"the context and {len(turns)} tool turn(s) are about {_tokens(base + carried)} tokens "
                         f"(estimated: JSON length / 4), over the budget sees.max_tokens = {budget}, and no older "
                         f"turn is left to summarise (keep_turns = {agent.keep_turns})")
    return context.model_copy(update={"conversation": turns, "summary": kept, "summarise": summarise}), ""
