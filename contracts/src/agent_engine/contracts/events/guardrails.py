"""Guardrails' verdicts: what a gate decided about a task's input, a tool call or a node's output, and why.

A verdict names the rules that matched and how often, never the text they matched: the event is kept and
shown to operators, and the matched text may be the very personal data or secret the rule is there to stop.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from agent_engine.contracts.events.base import EventData

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


EVENTS: tuple[type[EventData], ...] = (GuardrailVerdict,)
"""The event types of this topic."""
