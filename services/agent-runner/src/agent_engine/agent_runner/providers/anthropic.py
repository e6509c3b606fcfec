"""Claude through the official `anthropic` SDK, one HTTP call per `complete` (the SDK's retries are off)."""

from __future__ import annotations

from typing import Any

import anthropic

from agent_engine.agent_runner.providers.base import (
    LlmRequest,
    LlmResult,
    ProviderError,
    ToolCall,
    retry_after,
    safe_tool_name,
    transient_status,
)
from agent_engine.contracts.events import Usage

NAME = "anthropic"


class AnthropicProvider:
    name = NAME

    def __init__(self, api_key: str, base_url: str | None = None, timeout_s: float = 60.0) -> None:
        self.client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)

    async def complete(self, request: LlmRequest, model: str) -> LlmResult:
        try:
            message = await self.client.messages.create(
                model=model, max_tokens=request.agent.max_tokens, **body(request))
        except anthropic.APIStatusError as exc:
            raise status_error(exc) from None
        except anthropic.APIConnectionError as exc:
            raise ProviderError(exc.message, retryable=True, error_class=type(exc).__name__) from None
        text = "".join(block.text for block in message.content if block.type == "text")
        tools = tuple(ToolCall(block.id, block.name, dict(block.input))
                      for block in message.content if block.type == "tool_use")
        return LlmResult(text, usage(message.usage), NAME, message.model, tools, stop_reason=message.stop_reason)


    async def count_tokens(self, request: LlmRequest, model: str) -> int:
        """The Messages API's own count of the request's input tokens (it costs nothing and sends nothing on)."""
        try:
            counted = await self.client.messages.count_tokens(model=model, **body(request))
        except anthropic.APIStatusError as exc:
            raise status_error(exc) from None
        except anthropic.APIConnectionError as exc:
            raise ProviderError(exc.message, retryable=True, error_class=type(exc).__name__) from None
        return int(counted.input_tokens)


def body(request: LlmRequest) -> dict[str, Any]:
    """system, messages and tools in the Messages API's shape: tool calls are `tool_use` blocks of the assistant
    turn, their results `tool_result` blocks first in the user turn after it."""
    messages: list[dict[str, Any]] = []
    for turn in request.turns:
        if not turn.tool_calls and not turn.tool_results:
            messages.append({"role": turn.role, "content": turn.content})
            continue
        blocks: list[dict[str, Any]] = [
            {"type": "tool_result", "tool_use_id": r.call_id, "content": r.content, "is_error": r.is_error}
            for r in turn.tool_results]
        if turn.content.strip():  # the API refuses a text block of only white space
            blocks.append({"type": "text", "text": turn.content})
        blocks += [{"type": "tool_use", "id": c.id, "name": safe_tool_name(c.name), "input": c.input}
                   for c in turn.tool_calls]
        messages.append({"role": turn.role, "content": blocks})
    sent: dict[str, Any] = {"system": request.system, "messages": messages}
    if request.tools:
        sent["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                         for t in request.tools]
        if not request.allow_tools:
            sent["tool_choice"] = {"type": "none"}
    return sent


def status_error(exc: anthropic.APIStatusError) -> ProviderError:
    status = exc.status_code
    detail = f"{exc.type}: {exc.api_message}" if exc.api_message else exc.message
    return ProviderError(f"HTTP {status}: {detail}", retryable=transient_status(status),
                         error_class=type(exc).__name__, status=status, retry_after_s=retry_after(exc.response.headers))


def usage(u: Any) -> Usage:
    """OpenTelemetry GenAI rule: input tokens include cache reads and writes (Anthropic reports them apart)."""
    cache_read = u.cache_read_input_tokens or 0
    cache_write = u.cache_creation_input_tokens or 0
    return Usage(input_tokens=u.input_tokens + cache_read + cache_write, output_tokens=u.output_tokens,
                 cache_read_tokens=cache_read, cache_write_tokens=cache_write)
