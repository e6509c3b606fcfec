"""LLM calls and their token usage: `llm.called` (with its price; telemetry folds it into the ledger) and
`llm.call_failed`, both published by the agent-runner, and `Usage` and `LlmCallNote`, which other payloads carry.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from agent_engine.contracts.events.base import EventData


class Usage(BaseModel):
    """Token usage of one LLM call. Following the OTel GenAI rule, input_tokens includes cache tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(input_tokens=self.input_tokens + other.input_tokens,
                     output_tokens=self.output_tokens + other.output_tokens,
                     cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
                     cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens)


class LlmCallNote(BaseModel):
    """One LLM call attempt of a dispatch, carried in the runner's result so the task's history shows every
    call, repair and retry (the same facts as the `llm.called` / `llm.call_failed` events)."""

    provider: str
    model: str
    outcome: Literal["valid", "invalid", "tool_use", "summary", "failed"]
    repair: int = 0
    fallback: int = 0
    usage: Usage | None = None
    cost_usd: str | None = None
    problem: str | None = None
    """Why a reply was invalid, or what a failed call's error was."""
    error_class: str | None = None
    status: int | None = None
    then: Literal["retry", "fallback", "give_up"] | None = None
    delay_s: float | None = None


class LlmCalled(EventData):
    """One LLM call with its usage and price. `provider == "mock"` marks synthetic output."""

    TYPE = "llm.called"
    dispatch_id: str
    node: str
    provider: str
    model: str
    usage: Usage
    cost_usd: str = "0"
    """Exact decimal as a string."""
    price_table: str = ""
    repair: int = 0
    """0 for the first reply to a dispatch; n for the reply to the n-th repair turn."""
    fallback: int = 0
    """Position of the model in the agent's chain: 0 the agent's own model, n its n-th fallback."""
    outcome: Literal["valid", "invalid", "tool_use", "summary"] | None = None
    """valid / invalid: whether the reply was a JSON object valid against the node's schema; tool_use: the model
    asked for tools; summary: the model summarised earlier tool turns (absent in older events)."""
    turn: int = 0
    """Which model turn of the node (0 until the model has used tools)."""
    problem: str | None = None
    """Why the reply was invalid; it went back to the model as the next repair turn, if any were left."""
    agent: str | None = Field(default=None, exclude_if=lambda v: v is None)
    """The agent (its name in agents.yaml) the call was made for; absent in older events and for the judge.
    `agentctl agents stats` groups by it."""
    latency_ms: float | None = Field(default=None, exclude_if=lambda v: v is None)
    """How long the provider took to answer this call (absent in older events)."""


class LlmCallFailed(EventData):
    """One LLM call attempt that failed, or a model skipped because its circuit breaker is open
    (`error_class == "CircuitOpen"`, no request sent). No usage, no cost."""

    TYPE = "llm.call_failed"
    dispatch_id: str
    node: str
    provider: str
    model: str
    error_class: str
    """E.g. RateLimitError, OverloadedError, InternalServerError, APIConnectionError, HTTPStatusError,
    ConnectError, CircuitOpen, NotConfigured."""
    message: str = ""
    status: int | None = None
    """HTTP status, when there was a response."""
    retry_after_s: float | None = None
    """What the provider asked for (retry-after / retry-after-ms headers)."""
    call: int = Field(ge=1)
    """Attempt number on this model for this turn, from 1."""
    repair: int = 0
    fallback: int = 0
    turn: int = 0
    then: Literal["retry", "fallback", "give_up"]
    """What the gateway did next: the same model again, the next model in the chain, or stop."""
    delay_s: float | None = None
    """Wait before the retry (`then == "retry"`)."""
    agent: str | None = Field(default=None, exclude_if=lambda v: v is None)
    """The agent the call was made for (absent in older events and for the judge)."""


EVENTS: tuple[type[EventData], ...] = (
    LlmCalled,
    LlmCallFailed,
)
"""The event types of this topic."""
