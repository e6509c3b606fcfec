"""Approvals: a node with `approval: required` waits for a person before its first dispatch, and a node
that paused for one (pauses.py) waits for the same decision.

Building the node's dispatch (dispatch.py) asks for the approval instead of dispatching, and the task
waits. `agentctl approve` lets the node run (a tool node's arguments possibly edited, checked against
the tool's args_schema, and recorded with who decided); `agentctl reject` fails the node with the
reason. Retries and later tool turns are not asked again. Approving a pause after failures dispatches
the node again with fresh attempts; approving a pause for confidence, or for the output gate's verdict,
settles it with the held result.

The tool gate may also hold a call (a policy's `approval`, docs/guardrails.md): `hold_for_approval` records the
request, and the decision either dispatches the call again marked approved or, for a call an agent's model asked
for, returns the rejection to the model as the call's result. Pages: docs/workflows.md (How a task runs,
8. Approval; the node field `approval`), docs/workflows/failures.md (the node states, pauses for a person).
"""

from __future__ import annotations

from typing import Any

from agent_engine.contracts.events import (
    NodeApprovalDecided,
    NodeApprovalRefused,
    NodeApprovalRequested,
    NodeApproved,
    NodeContext,
    ToolRefusal,
)
from agent_engine.contracts.manifest import NodeSpec, WorkflowManifest
from agent_engine.router.conversation import SchemaUnusable, schema_problems
from agent_engine.router.dispatch import resolve_args, upstream_outputs
from agent_engine.router.emitter import Emitter
from agent_engine.router.pauses import failures, held_result
from agent_engine.router.records import RouterInput
from agent_engine.router.state import NodeState
from agent_engine.router.tool_turns import tool_returned
from agent_engine.router.walk import dispatch, node_failed, succeed


def hold_for_approval(out: Emitter, node_id: str, node: NodeState, refusal: ToolRefusal) -> None:
    """Guardrails' tool gate holds a call for a person (a policy's `approval`): record the request, the task
    waits. For a call an agent's model asked for, the request names the call and its arguments."""
    state = out.state
    assert state.manifest is not None
    spec = state.manifest.node(node_id)
    if node.call is not None:
        call = node.steps[-1]["calls"][node.call]
        out.add(NodeApprovalRequested(node=node_id, kind="tool", args=call["args"], call_id=call["call_id"],
                                      tool=call["tool"], rule=refusal.rule))
        return
    args, _ = resolve_args(spec.args, NodeContext(input=dict(state.input), upstream=upstream_outputs(state)))
    out.add(NodeApprovalRequested(node=node_id, kind="tool", args=args, tool=spec.tool, rule=refusal.rule))


def on_approval(out: Emitter, inp: RouterInput, decided: NodeApprovalDecided) -> None:
    state = out.state
    node = state.nodes.get(decided.node)
    if state.status != "waiting" or node is None or node.status != "awaiting_approval" or state.manifest is None:
        return
    manifest = state.manifest
    spec = manifest.node(decided.node)
    if node.call is not None and node.paused == "guardrail":  # a call's result the output gate held
        _decide_held_result(out, spec, node, decided)
        return
    if node.call is not None:  # a call of an agent's model the tool gate held
        _decide_call(out, spec, node, decided)
        return
    if decided.decision == "reject":
        why = f"rejected by {decided.decided_by}" + (f": {decided.reason}" if decided.reason else "")
        node_failed(out, spec.id, node.attempts, why)
        return
    problem = edit_problem(manifest, spec, decided.args)
    if not problem and decided.args is not None and node.paused in ("confidence", "guardrail"):
        problem = "a result held for its confidence is accepted or rejected as it is; its arguments cannot be edited"
    if problem:
        out.add(NodeApprovalRefused(node=spec.id, decided_by=decided.decided_by, reason=problem))
        return
    # held by the tool gate: not a pause, and not a node's own approval (asked before its first dispatch)
    held = node.paused is None and node.attempts > 0
    out.add(NodeApproved(node=spec.id, decided_by=decided.decided_by, args=decided.args,
                         edited=decided.args is not None,
                         rule="tool.approval" if held or answers_gate(manifest, spec, node) else None))
    if node.paused in ("confidence", "guardrail"):
        succeed(out, spec, held_result(node, spec.id), accepted=True)
    elif node.paused == "failures":
        dispatch(out, spec, node.attempts + 1, f"resumed by {decided.decided_by} after {failures(node)} failures",
                 approved=True, args_override=decided.args)
    else:
        # attempt 1 for a node that waited before its first dispatch; the next attempt for one the tool gate held
        # (its held dispatch was attempt N), so the approved dispatch has an id of its own
        dispatch(out, spec, node.attempts + 1, f"approved by {decided.decided_by}", approved=True,
                 args_override=decided.args)


def answers_gate(manifest: WorkflowManifest, spec: NodeSpec, node: NodeState) -> bool:
    """Whether approving this node's own `approval: required` also answers the tool gate's hold of its calls: a
    tool node, before its first dispatch, in a task whose pinned manifest says so (tasks pinned earlier were asked
    twice, and their replays still decide so)."""
    return (manifest.approval_answers_gate and spec.kind == "tool" and node.paused is None
            and node.attempts == 0)


def asked_once(manifest: WorkflowManifest) -> WorkflowManifest:
    """The manifest a new task pins: a tool node's own approval answers the tool gate's hold too."""
    if manifest.approval_answers_gate:
        return manifest
    return manifest.model_copy(update={"approval_answers_gate": True})


def _decide_held_result(out: Emitter, spec: NodeSpec, node: NodeState, decided: NodeApprovalDecided) -> None:
    """Approve: the model gets the held result of its call. Reject: it gets the refusal instead; the node goes on."""
    held = held_result(node, spec.id)
    if decided.decision == "reject":
        why = f"rejected by {decided.decided_by}" + (f": {decided.reason}" if decided.reason else "")
        tool_returned(out, spec, held.dispatch_id, held.attempt, error=f"the result was withheld by a person: {why}",
                      refusal=ToolRefusal(rule="output.held", reason=why))
        return
    if decided.args is not None:
        out.add(NodeApprovalRefused(node=spec.id, decided_by=decided.decided_by, reason=(
            "a result held for the output checks is accepted or rejected as it is; its arguments cannot be edited")))
        return
    out.add(NodeApproved(node=spec.id, decided_by=decided.decided_by))
    tool_returned(out, spec, held.dispatch_id, held.attempt, output=held.output)


def _decide_call(out: Emitter, spec: NodeSpec, node: NodeState, decided: NodeApprovalDecided) -> None:
    """Approve: the call is dispatched again marked approved (the gate lets it through, still checking every
    other rule). Reject: the model sees the refusal as the call's result and goes on; the node does not fail."""
    assert node.call is not None
    call = node.steps[-1]["calls"][node.call]
    if decided.decision == "reject":
        why = f"rejected by {decided.decided_by}" + (f": {decided.reason}" if decided.reason else "")
        tool_returned(out, spec, None, node.attempts, error=f"refused by a person (rule tool.approval): {why}",
                      refusal=ToolRefusal(rule="tool.approval", reason=why))
        return
    if decided.args is not None:
        out.add(NodeApprovalRefused(node=spec.id, decided_by=decided.decided_by, reason=(
            f"call {call['call_id']} of node '{spec.id}' was asked for by its model; its arguments cannot be edited, "
            "only approved or rejected")))
        return
    out.add(NodeApproved(node=spec.id, decided_by=decided.decided_by, call_id=call["call_id"], rule="tool.approval"))
    dispatch(out, spec, node.attempts + 1, f"call {call['call_id']} approved by {decided.decided_by}", approved=True)


def edit_problem(manifest: WorkflowManifest, spec: NodeSpec, args: dict[str, Any] | None) -> str:
    """Why edited arguments cannot be accepted ("" when they can)."""
    if args is None:
        return ""
    if spec.kind != "tool":
        return f"node '{spec.id}' is an agent node; only a tool node's arguments can be edited"
    schema = manifest.tools[spec.tool or ""].args_schema
    if schema is None:
        return ""
    try:
        detail = schema_problems(schema, args)
    except SchemaUnusable as exc:
        return f"the args_schema of tool '{spec.tool}' {exc}; the edit cannot be checked"
    return f"edited arguments break the args_schema of tool '{spec.tool}': {detail}" if detail else ""
