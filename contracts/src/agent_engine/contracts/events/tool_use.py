"""An agent node whose model asks for tools: the turn it asked in, the calls the router runs, their results.

Also the parts of a dispatch that carry a conversation (`ToolDef`, `ToolTurn`, `ConversationSummary`, ...).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from agent_engine.contracts.events.base import EventData
from agent_engine.contracts.events.usage import LlmCallNote, Usage


class ToolDef(BaseModel):
    """A tool as a model is offered it: the name in tools.yaml, what it does, the arguments it takes."""

    name: str
    description: str = ""
    input_schema: dict[str, Any]


class ToolStep(BaseModel):
    """One action of an agent's tool turn (a call the model asked for) and, once back, its observation."""

    call_id: str
    """Derived by the router ("t<turn>-c<index>", "r<revision>-" first after a revision); the model is shown it."""
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    output: dict[str, Any] | None = None
    error: str | None = None
    refused: bool | None = None
    """True when the router refused the call before it ran (unknown tool, arguments that break its schema);
    `error` says why, and the model sees it as the call's result."""


class ToolTurn(BaseModel):
    """A model turn that asked for tools: its text (the thought), and the calls with their results."""

    turn: int
    thought: str = ""
    calls: list[ToolStep]


class ConversationSummary(BaseModel):
    """What the model wrote to stand for a node's first `turns` tool turns, once they grew too long."""

    turns: int = Field(ge=1)
    text: str


class ToolRefusal(BaseModel):
    """Why guardrails' tool gate did not let a call run: the rule (`tool.path`, `tool.args.<id>`, ...) and a
    reason the model and the operator can read. `approval` marks a call held for a person, not refused."""

    rule: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="", max_length=2000)
    approval: bool | None = None


class ToolCallRef(BaseModel):
    """Which call of which turn a tool dispatch runs for an agent node."""

    call_id: str
    turn: int
    index: int


class RequestedCall(BaseModel):
    """A tool call as the model asked for it."""

    id: str = ""
    """The provider's id for the call (Anthropic `toolu_...`, OpenAI `call_...`), kept for the record."""
    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class NodeToolsRequested(EventData):
    """Agent-runner to router: instead of answering, the model asked for tools in turn `turn` of the node.
    The router records the turn, runs the calls through the tool-runner and dispatches the next turn."""

    TYPE = "node.tools_requested"
    dispatch_id: str
    node: str
    attempt: int
    turn: int = 0
    thought: str = ""
    """The text the model wrote alongside its calls."""
    calls: list[RequestedCall] = Field(min_length=1, max_length=64)
    provider: str | None = None
    model: str | None = None
    usage: Usage | None = None
    duration_ms: float = 0.0
    llm_calls: list[LlmCallNote] | None = None
    summary: ConversationSummary | None = None
    """Made in this dispatch when the context asked for one (`summarise`): later turns carry it instead."""


class NodeToolTurnRecorded(EventData):
    """The router accepted a model's tool turn (once per turn): thought, calls, and the calls it refused
    before they ran (`refused`, with the reason as `error`)."""

    TYPE = "node.tool_turn_recorded"
    dispatch_id: str
    node: str
    attempt: int
    turn: int
    thought: str = ""
    calls: list[ToolStep]
    provider: str | None = None
    model: str | None = None
    usage: Usage | None = None
    summary: ConversationSummary | None = None


class NodeToolReturned(EventData):
    """The observation of one call of a tool turn: its output, or the error the model will see."""

    TYPE = "node.tool_returned"
    node: str
    turn: int
    index: int
    call_id: str
    tool: str
    dispatch_id: str | None = None
    attempt: int = 0
    output: dict[str, Any] | None = None
    error: str | None = None
    refusal: ToolRefusal | None = None
    """Set when the tool gate refused the call (or a person rejected it): the rule and the reason."""


EVENTS: tuple[type[EventData], ...] = (
    NodeToolsRequested,
    NodeToolTurnRecorded,
    NodeToolReturned,
)
"""The event types of this topic."""
