"""The tool gate: every tool dispatch of the router passes here before the tool-runner may see it.

Guardrails consumes `node.dispatched.tool` (durable `guardrails-tools`) and answers each dispatch with one of:

- `tool.call_cleared`: the dispatch plus the rules checked, the only thing the tool-runner consumes (and only
  guardrails may publish it, so the gate cannot be bypassed: runtime/auth.py);
- `node.errored` with `refusal` (not retryable): the policy refused the call, or holds it for a person's approval
  (`refusal.approval`); the router records it as the call's result, or asks for the approval;

plus, for every refusal and hold, a `guardrail.verdict` (gate `tool`) naming the rule, never an argument value.
Every answer's id derives from the dispatch's, so a redelivered dispatch gets the same answer (a duplicate).
The decision is pure (toolpolicy.py); this module reads the policy file and does the I/O.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.msg import Msg

from agent_engine.contracts.envelope import Envelope, caused_by, derive_id
from agent_engine.contracts.events import (
    GuardrailVerdict,
    NodeDispatched,
    NodeErrored,
    RuleHit,
    ToolCallCleared,
    ToolRefusal,
)
from agent_engine.contracts.policy import ToolPolicy
from agent_engine.contracts.subjects import TOOL_GATE_DURABLE, dispatch_subject
from agent_engine.guardrails.gate import Answer, serve_gate
from agent_engine.guardrails.policy import PolicyFile
from agent_engine.guardrails.toolpolicy import Decision, Layer, decide
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.settings import Settings

SOURCE = "agent-engine/guardrails"
log = logging.getLogger("guardrails.tools")


class ToolPolicies:
    """Each tenant's `tools` section of the policy file, validated at start (a mistake stops guardrails, naming
    where it is); a tenant without its own section gets the defaults'."""

    def __init__(self, policy_file: PolicyFile) -> None:
        self.default = self._read(policy_file, None)
        self.tenants = {t: self._read(policy_file, t) for t in policy_file.tenants}

    @staticmethod
    def _read(policy_file: PolicyFile, tenant: str | None) -> ToolPolicy:
        return policy_file.read("tools", tenant, ToolPolicy, limit=3)

    def layers(self, tenant: str, dispatch: NodeDispatched) -> list[Layer]:
        """The policies a call must pass: its tenant's, then its workflow's (copied into the dispatch)."""
        layers = [Layer("tenant policy", self.tenants.get(tenant, self.default))]
        if dispatch.tool is not None and dispatch.tool.policy is not None:
            layers.append(Layer("workflow policy", dispatch.tool.policy))
        return layers


def answer(envelope: Envelope, dispatch: NodeDispatched, policies: ToolPolicies) -> tuple[Decision, list[Envelope]]:
    """The gate's decision on one dispatch and the events that carry it."""
    if dispatch.tool is None:
        decision = Decision("refused", "tool.dispatch", "the tool dispatch carries no tool",
                            "the tool dispatch carries no tool")
    else:
        decision = decide(dispatch.tool, envelope.tenant, policies.layers(envelope.tenant, dispatch))
    if decision.outcome == "allowed":
        cleared = ToolCallCleared(**dispatch.model_dump(), dispatch_event=envelope.id, rules=list(decision.checked))
        return decision, [caused_by(envelope, cleared, id=derive_id(envelope.id, "cleared"), source=SOURCE)]
    held = decision.outcome == "approval_required"
    error = (f"held for approval (rule {decision.rule}): {decision.reason}" if held
             else f"refused by policy (rule {decision.rule}): {decision.reason}")
    errored = NodeErrored(dispatch_id=dispatch.dispatch_id, node=dispatch.node, attempt=dispatch.attempt, error=error,
                          retryable=False, refusal=ToolRefusal(rule=decision.rule, reason=decision.reason,
                                                               approval=True if held else None))
    verdict = GuardrailVerdict(gate="tool", outcome=decision.outcome, rules=[RuleHit(rule=decision.rule)],
                               reason=decision.summary, node=dispatch.node, dispatch_id=dispatch.dispatch_id)
    return decision, [caused_by(envelope, errored, id=derive_id(envelope.id, "refused"), source=SOURCE),
                      caused_by(envelope, verdict, id=derive_id(envelope.id, "verdict"), source=SOURCE)]


async def serve(bus: Bus, policies: ToolPolicies, settings: Settings, stop: asyncio.Event) -> None:
    async def check(msg: Msg, envelope: Envelope, dispatch: NodeDispatched) -> Answer:
        decision, events = answer(envelope, dispatch, policies)
        said = "" if decision.outcome == "allowed" else (
            f"tool call of node {dispatch.node} of task {envelope.task_id} {decision.outcome}: {decision.summary}")
        return events, said

    await serve_gate(bus, TOOL_GATE_DURABLE, [dispatch_subject("tool")], NodeDispatched, check, settings, stop,
                     logger=log)
