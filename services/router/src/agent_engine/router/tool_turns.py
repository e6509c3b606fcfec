"""Tool turns: an agent node whose model asks for tools, one recorded step at a time.

The model's turn that asks for tools is recorded once (node.tool_turn_recorded, each call checked
against the agent's tools and their schemas; a refused call gets its reason as its result). Then each
call runs through the tool-runner in the order the model gave them (a tool dispatch for the agent
node), each result or error is recorded (node.tool_returned), and once every call is back the model's
next turn is dispatched with the conversation so far. Nothing lives in a runner, so a crash anywhere
resumes from the store. The pure helpers are in conversation.py. Page: docs/workflows/tool-use.md.
"""

from __future__ import annotations

from typing import Any

from agent_engine.contracts.events import (
    NodeToolReturned,
    NodeToolsRequested,
    NodeToolTurnRecorded,
    ToolRefusal,
    ToolStep,
)
from agent_engine.contracts.manifest import NodeSpec
from agent_engine.router.cancel import ignore_late_result
from agent_engine.router.conversation import call_id, call_problem, next_open_call
from agent_engine.router.dispatch import build_call, open_node, superseded
from agent_engine.router.emitter import Emitter
from agent_engine.router.records import RouterInput
from agent_engine.router.walk import dispatch, node_failed


def on_tools_requested(out: Emitter, inp: RouterInput, asked: NodeToolsRequested) -> None:
    """The model asked for tools instead of answering: record its turn once, then run the calls."""
    state = out.state
    if state.terminal:
        ignore_late_result(out, asked.node, asked.dispatch_id, inp.event.type)
        return
    node = open_node(state, asked.node, asked.dispatch_id) or superseded(
        state, asked.node, asked.attempt, asked.dispatch_id)
    if node is None or state.status not in ("running", "waiting") or node.call is not None:
        return
    if asked.turn != len(node.steps):
        return  # a turn this node has recorded already
    assert state.manifest is not None
    spec = state.manifest.node(asked.node)
    agent = state.manifest.agents.get(spec.agent or "")
    if spec.kind != "agent" or agent is None:
        return
    if not agent.tools or asked.turn >= agent.max_tool_turns:
        why = (f"agent '{spec.agent}' has no tools, yet its model asked for {[c.name for c in asked.calls]}"
               if not agent.tools else f"the model asked for tools in turn {asked.turn + 1}, past agent "
               f"'{spec.agent}''s max_tool_turns = {agent.max_tool_turns}")
        node_failed(out, spec.id, asked.attempt, why)
        return
    calls = []
    for index, call in enumerate(asked.calls):
        problem = call_problem(state.manifest, spec.agent or "", agent, call)
        calls.append(ToolStep(call_id=call_id(node.revision, asked.turn, index), tool=call.name, args=call.args,
                              error=problem or None, refused=True if problem else None))
    out.add(NodeToolTurnRecorded(
        dispatch_id=asked.dispatch_id, node=spec.id, attempt=asked.attempt, turn=asked.turn, thought=asked.thought,
        calls=calls, provider=asked.provider, model=asked.model, usage=asked.usage, summary=asked.summary))
    _next_call(out, spec)


def tool_returned(out: Emitter, spec: NodeSpec, dispatch_id: str | None, attempt: int, *,
                  output: dict[str, Any] | None = None, error: str | None = None,
                  refusal: ToolRefusal | None = None) -> None:
    """Record the observation of the call running now (its output, or the error the model will see; a refusal
    by the tool gate or a person keeps its rule)."""
    node = out.state.nodes[spec.id]
    assert node.call is not None
    call = node.steps[-1]["calls"][node.call]
    out.add(NodeToolReturned(node=spec.id, turn=len(node.steps) - 1, index=node.call, call_id=call["call_id"],
                             tool=call["tool"], dispatch_id=dispatch_id, attempt=attempt, output=output,
                             error=None if output is not None else error or "no result",
                             refusal=refusal if output is None else None))
    _next_call(out, spec)


def _next_call(out: Emitter, spec: NodeSpec) -> None:
    """Run the next call of the node's last tool turn; once every call is back, the model's next turn."""
    node = out.state.nodes[spec.id]
    turn = len(node.steps) - 1
    index = next_open_call(node.steps[-1])
    if index is not None:
        out.add(build_call(out.state, out.task_id, out.now, spec, index, 1, f"tool call {index + 1} of turn {turn}"))
    else:
        dispatch(out, spec, 1, f"results of tool turn {turn}")
