"""Approvals: a node with `approval: required` waits for a person before its first dispatch, and a node
that paused for one (pauses.py) waits for the same decision.

Building the node's dispatch (dispatch.py) asks for the approval instead of dispatching, and the task
waits. `agentctl approve` lets the node run (a tool node's arguments possibly edited, checked against
the tool's args_schema, and recorded with who decided); `agentctl reject` fails the node with the
reason. Retries and later tool turns are not asked again. Approving a pause after failures dispatches
the node again with fresh attempts; approving a pause for confidence settles it with the held result.
Pages: docs/workflows.md (How a task runs, 8. Approval; the node field `approval`),
docs/workflows/failures.md (the node states, pauses for a person).
"""

from __future__ import annotations

from typing import Any

from agent_engine.contracts.events import NodeApprovalDecided, NodeApprovalRefused, NodeApproved
from agent_engine.contracts.manifest import NodeSpec, WorkflowManifest
from agent_engine.router.conversation import SchemaUnusable, schema_problems
from agent_engine.router.emitter import Emitter
from agent_engine.router.pauses import failures, held_result
from agent_engine.router.records import RouterInput
from agent_engine.router.walk import dispatch, node_failed, succeed


def on_approval(out: Emitter, inp: RouterInput, decided: NodeApprovalDecided) -> None:
    state = out.state
    node = state.nodes.get(decided.node)
    if state.status != "waiting" or node is None or node.status != "awaiting_approval" or state.manifest is None:
        return
    manifest = state.manifest
    spec = manifest.node(decided.node)
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
    out.add(NodeApproved(node=spec.id, decided_by=decided.decided_by, args=decided.args,
                         edited=decided.args is not None))
    if node.paused in ("confidence", "guardrail"):
        succeed(out, spec, held_result(node, spec.id), accepted=True)
    elif node.paused == "failures":
        dispatch(out, spec, node.attempts + 1, f"resumed by {decided.decided_by} after {failures(node)} failures",
                 approved=True, args_override=decided.args)
    else:
        dispatch(out, spec, 1, f"approved by {decided.decided_by}", approved=True, args_override=decided.args)


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
