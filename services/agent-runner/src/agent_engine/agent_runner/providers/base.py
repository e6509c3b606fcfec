"""What every provider shares: the request it gets, the result it returns, the error it raises.

A provider makes exactly one HTTP call per `complete` (its SDK's own retries are off): retries,
fallbacks and circuit breaking are the gateway's, so every attempt is counted and recorded.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from agent_engine.contracts.events import DispatchedAgent, ToolDef, Usage

MOCK = "mock"


@dataclass(frozen=True)
class ToolCall:
    """A tool the model asked for (Anthropic `tool_use` block, OpenAI `tool_calls` item)."""

    id: str
    name: str
    input: dict[str, Any]
    problem: str | None = None
    """Set when the provider's call could not be read (arguments that are not a JSON object): the reply is
    then invalid and goes back to the model as a repair."""


@dataclass(frozen=True)
class ToolResult:
    """What a call returned, as the model is shown it: the output as JSON text, or the error."""

    call_id: str
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class Turn:
    """One message. An assistant turn may carry the tool calls it made; the user turn after it carries
    their results (before any text). Each provider renders these in its own API's shape."""

    role: Literal["user", "assistant"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()


@dataclass(frozen=True)
class LlmRequest:
    """One conversation to send: a system prompt and the turns so far (the last is the user's)."""

    agent: DispatchedAgent
    system: str
    turns: tuple[Turn, ...]
    attempt: int
    repair: int = 0
    """0 for the first turn; n after n repair turns were appended."""
    tools: tuple[ToolDef, ...] = ()
    """The tools the model is offered (sent even when no longer allowed: the conversation may use them)."""
    allow_tools: bool = False
    """False: the provider is told the model may not call tools now (tool_choice none)."""
    turn: int = 0
    """Which model turn of the node this request is (0 until the model has used tools)."""
    purpose: Literal["answer", "summary"] = "answer"
    """summary: a side request that summarises earlier tool turns (no tools, no schema)."""
    task_input: dict[str, Any] = field(default_factory=dict, compare=False)
    """The task input, for the mock only: its scripted tool arguments may say "$input.<field>"."""

    def repaired(self, reply: str, problem: str) -> LlmRequest:
        """The same conversation plus the model's invalid reply and a user turn naming the problem."""
        again = ("Reply again: call the tools you need with valid arguments, or give your final reply as one JSON "
                 "object and nothing else" if self.allow_tools else "Reply again with one JSON object and nothing else")
        follow_up = (f"Your reply was not valid: {problem}\n\n{again}"
                     + (", valid against the JSON Schema in the system prompt." if self.agent.output_schema_json
                        else "."))
        return replace(self, turns=(*self.turns, Turn("assistant", reply.strip() or "(empty reply)"),
                                    Turn("user", follow_up)),
                       repair=self.repair + 1)

    def text(self) -> str:
        """Everything the request says, as one text (for estimates and the mock's synthetic usage)."""
        parts = [self.system] + [json.dumps(t.model_dump()) for t in self.tools]
        for turn in self.turns:
            parts.append(turn.content)
            parts += [json.dumps(c.input) for c in turn.tool_calls] + [r.content for r in turn.tool_results]
        return "".join(parts)


@dataclass(frozen=True)
class LlmResult:
    text: str
    usage: Usage
    provider: str
    model: str
    tool_calls: tuple[ToolCall, ...] = ()
    fallback: int = 0
    """Set by the gateway: position of the model that answered in the agent's chain."""
    stop_reason: str | None = field(default=None, compare=False)
    latency_ms: float | None = field(default=None, compare=False)
    """Set by the gateway: how long the provider took to answer."""


class ProviderError(Exception):
    """A call that produced no usable reply. `retryable`: the same call may succeed later."""

    def __init__(self, message: str, *, retryable: bool, error_class: str = "ProviderError",
                 status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.error_class = error_class
        self.status = status
        self.retry_after_s = retry_after_s


class Provider(Protocol):
    name: str

    async def complete(self, request: LlmRequest, model: str) -> LlmResult: ...


class TokenCounter(Protocol):
    """A provider that can count a request's input tokens exactly before sending it (Anthropic can)."""

    async def count_tokens(self, request: LlmRequest, model: str) -> int: ...


TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_TOOL_CALLS = 64
"""Calls one model turn may ask for; more is an invalid reply (the router records at most this many)."""


def safe_tool_name(name: str) -> str:
    """A recorded call's tool name as providers accept it back in a conversation: a name the model made up
    that breaks their pattern (the router refused that call, naming it) is sent as `invalid_tool_name`."""
    return name if TOOL_NAME.match(name) else "invalid_tool_name"


def transient_status(status: int) -> bool:
    """429 (rate limit), 408/409 (timeout, conflict), 5xx and Anthropic's 529 (overloaded) may pass."""
    return status in (408, 409, 429) or status >= 500


def retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, else `retry-after` (seconds or HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def estimate_tokens(text: str) -> int:
    """A stated estimate (about four characters a token), used only where no provider count exists."""
    return max(1, (len(text) + 3) // 4)
