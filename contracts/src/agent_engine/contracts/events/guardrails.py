"""Guardrails' verdicts: what a gate decided about a task's input, a tool call or a node's output, and why.

A verdict names the rules that matched and how often, never the text they matched: the event is kept and
shown to operators, and the matched text may be the very personal data or secret the rule is there to stop.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from agent_engine.contracts.events.base import EventData
from agent_engine.contracts.events.nodes import NodeCompleted
from agent_engine.contracts.manifest import OutputPolicy

Gate = Literal["input", "tool", "output"]
Outcome = Literal["allowed", "redacted", "refused", "approval_required", "paused"]


class RuleHit(BaseModel):
    """One rule that matched: its id (e.g. `pii.card`, `injection.ignore-previous`, `tool.path`), how many
    times, and the score it added (injection rules)."""

    rule: str = Field(min_length=1, max_length=128)
    count: int = Field(default=1, ge=1)
    score: float | None = None


class GuardrailVerdict(EventData):
    """A gate's decision. Published by guardrails for every verdict that is not a plain pass: a refusal, a
    redaction, a call held for approval. `dispatch_id` and `node` are set for the tool and output gates."""

    TYPE = "guardrail.verdict"
    gate: Gate
    outcome: Outcome
    rules: list[RuleHit] = Field(default_factory=list)
    reason: str = ""
    """Readable, for the sender and the operator; never quotes the matched text."""
    workflow: str | None = None
    node: str | None = None
    dispatch_id: str | None = None
    score: float | None = None
    """The total injection score, when the input gate scored the request."""


class NodeOutputProduced(NodeCompleted):
    """A runner's answer to a dispatch whose workflow checks outputs (`check_output`): the same fields as
    `node.completed`, sent to guardrails' output gate instead of the router. Guardrails deletes it from the
    stream once it has answered, so an output it redacts is kept nowhere unredacted."""

    TYPE = "node.output_produced"
    policy: OutputPolicy = Field(default_factory=OutputPolicy)
    """The workflow's output policy, copied from the dispatch."""


class NodeOutputChecked(NodeCompleted):
    """The output gate let an output through (`allowed`), with personal data replaced (`redacted`), or held it
    for a person (`paused`: the router waits with it for `agentctl approve`). A refusal is a `node.errored`
    instead. The router takes this, not `node.completed`, as the answer to a dispatch with `check_output`."""

    TYPE = "node.output_checked"
    outcome: Literal["allowed", "redacted", "paused"] = "allowed"
    rules: list[RuleHit] = Field(default_factory=list)
    reason: str = ""


EVENTS: tuple[type[EventData], ...] = (GuardrailVerdict, NodeOutputProduced, NodeOutputChecked)
"""The event types of this topic."""
