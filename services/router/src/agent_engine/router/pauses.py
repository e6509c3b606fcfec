"""Pauses for a person (G6): a node that keeps failing, whose output says it is not confident, or whose
output guardrails' output gate held, puts the task in `waiting` until `agentctl approve` or `reject`,
rather than retrying blindly or passing doubtful work downstream. Declared per node (`pause:` in the
manifest) or by the output policy. The pause is a `node.approval_requested` with its `pause` and
`reason`, so the operator tools for approvals work on it unchanged; approvals.py resumes it.
Page: docs/workflows/failures.md (Pauses for a person).
"""

from __future__ import annotations

from agent_engine.contracts.events import HeldResult, NodeApprovalRequested, NodeCompleted
from agent_engine.contracts.manifest import NodeSpec, lookup
from agent_engine.router.emitter import Emitter
from agent_engine.router.state import NodeState


def failures(node: NodeState) -> int:
    """Failed attempts in a row: those since the node last started or a person resumed it."""
    return node.attempts - node.resumed_at


def pause_after_failure(out: Emitter, spec: NodeSpec, node: NodeState, why: str) -> bool:
    """Pause instead of retrying or failing when the node's failures in a row reached its `after_failures`.
    Not for a tool call of an agent's model: its error goes back to the model, which decides."""
    limit = spec.pause.after_failures if spec.pause else None
    if limit is None or node.call is not None or failures(node) < limit:
        return False
    out.add(NodeApprovalRequested(
        node=spec.id, kind=spec.kind or "agent", pause="failures",
        reason=f"{failures(node)} failed attempts in a row (pause.after_failures = {limit}); last: {why}",
        args=dict(spec.args) if spec.kind == "tool" else None))
    return True


def doubt(spec: NodeSpec, output: dict[str, object]) -> str:
    """Why a person should look at this output first ("" when it may go on)."""
    rule = spec.pause.confidence if spec.pause else None
    if rule is None:
        return ""
    present, value = lookup(output, rule.field)
    if not present or isinstance(value, bool) or not isinstance(value, int | float):
        return f"the output has no number at '{rule.field}' (pause.confidence)"
    if value < rule.below:
        return f"'{rule.field}' is {value:g}, below {rule.below:g} (pause.confidence)"
    return ""


def pause_for_doubt(out: Emitter, spec: NodeSpec, completed: NodeCompleted) -> bool:
    """Hold a result of low confidence for a person instead of settling the node with it."""
    why = doubt(spec, completed.output)
    if not why:
        return False
    held = HeldResult(dispatch_id=completed.dispatch_id, attempt=completed.attempt, output=completed.output,
                      provider=completed.provider, model=completed.model, usage=completed.usage)
    out.add(NodeApprovalRequested(node=spec.id, kind=spec.kind or "agent", pause="confidence", reason=why,
                                  held=held))
    return True


def pause_for_verdict(out: Emitter, spec: NodeSpec, node: NodeState, checked: NodeCompleted) -> None:
    """Hold an output guardrails' output gate paused on (a topic rule, personal data under `pii: pause`): the
    node's output, or the result of a tool call its model asked for, which the model sees only once approved."""
    reason = getattr(checked, "reason", "") or "guardrails' output gate held this output"
    held = HeldResult(dispatch_id=checked.dispatch_id, attempt=checked.attempt, output=checked.output,
                      provider=checked.provider, model=checked.model, usage=checked.usage)
    call = node.steps[-1]["calls"][node.call] if node.call is not None else None
    out.add(NodeApprovalRequested(node=spec.id, kind=spec.kind or "agent", pause="guardrail", reason=reason,
                                  held=held, call_id=call["call_id"] if call else None,
                                  tool=call["tool"] if call else None))


def held_result(node: NodeState, node_id: str) -> NodeCompleted:
    """The result a pause for confidence holds, as the runner's answer that approving settles the node with."""
    assert node.held is not None
    held = HeldResult.model_validate(node.held)
    return NodeCompleted(dispatch_id=held.dispatch_id, node=node_id, attempt=held.attempt, output=held.output,
                         provider=held.provider, model=held.model, usage=held.usage)
