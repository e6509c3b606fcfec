"""Guardrails' verdicts: what a gate decided about a task's input, a tool call or a node's output, and why.

A verdict names the rules that matched and how often, never the text they matched: the event is kept and
shown to operators, and the matched text may be the very personal data or secret the rule is there to stop.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from agent_engine.contracts.events.base import EventData
from agent_engine.contracts.events.nodes import NodeCompleted, NodeDispatched
from agent_engine.contracts.policy import OutputPolicy

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


MAX_JUDGED_INPUTS = 64 * 1024
"""Bytes of JSON of an agent node's inputs a runner copies for the grounding judge: more would make the output's
message large (NATS caps a message) for a check that may not be configured."""


class NodeOutputProduced(NodeCompleted):
    """A runner's answer to a dispatch whose workflow checks outputs (`check_output`): the same fields as
    `node.completed`, sent to guardrails' output gate instead of the router. Guardrails deletes it from the
    stream once it has answered, so an output it redacts is kept nowhere unredacted."""

    TYPE = "node.output_produced"
    policy: OutputPolicy = Field(default_factory=OutputPolicy)
    """The workflow's output policy, copied from the dispatch."""
    inputs: dict[str, Any] | None = Field(default=None, exclude_if=lambda v: v is None)
    """An agent node's inputs (the task input and the upstream outputs its dispatch carried), for the output
    gate's grounding judge; absent for a tool node, or when they are over `MAX_JUDGED_INPUTS` bytes of JSON."""
    budget_usd: str | None = Field(default=None, exclude_if=lambda v: v is None)
    """The dispatch's reservation (its `budget_usd`, in a task with a budget): what the node's calls and its
    grounding judge's call may cost together. The judge is asked to stay within what the node's calls left."""


class NodeOutputChecked(NodeCompleted):
    """The output gate let an output through (`allowed`), with personal data replaced (`redacted`), or held it
    for a person (`paused`: the router waits with it for `agentctl approve`). A refusal is a `node.errored`
    instead. The router takes this, not `node.completed`, as the answer to a dispatch with `check_output`."""

    TYPE = "node.output_checked"
    outcome: Literal["allowed", "redacted", "paused"] = "allowed"
    rules: list[RuleHit] = Field(default_factory=list)
    reason: str = ""


class ToolCallCleared(NodeDispatched):
    """A tool dispatch the tool gate let through: the dispatch as the router published it, plus which event it
    was and the rules checked. The ONLY thing the tool-runner consumes, and only guardrails may publish it (NATS
    permissions), so no tool runs without passing the gate. The tool-runner derives its results' ids from
    `dispatch_event`, exactly as it did from the dispatch itself, so idempotency and the call log are unchanged."""

    TYPE = "tool.call_cleared"
    dispatch_event: str = Field(min_length=1, max_length=64)
    """The id of the `node.dispatched` event this clears."""
    rules: list[str] = Field(default_factory=list)
    """The rule ids the gate checked for this call (those its tenant's and workflow's policies configure)."""


EVENTS: tuple[type[EventData], ...] = (GuardrailVerdict, ToolCallCleared, NodeOutputProduced, NodeOutputChecked)
"""The event types of this topic."""
