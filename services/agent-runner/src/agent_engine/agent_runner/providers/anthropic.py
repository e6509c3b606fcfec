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
    transient_status,
)
from agent_engine.contracts.events import Usage

NAME = "anthropic"


class AnthropicProvider:
    name = NAME

    def __init__(self, api_key: str, base_url: str | None = None, timeout_s: float = 60.0) -> None:
        self.client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)

    async def complete(self, request: LlmRequest, model: str) -> LlmResult:
        messages: Any = [{"role": turn.role, "content": turn.content} for turn in request.turns]
        try:
            message = await self.client.messages.create(
                model=model, max_tokens=request.agent.max_tokens, system=request.system, messages=messages)
        except anthropic.APIStatusError as exc:
            status = exc.status_code
            detail = f"{exc.type}: {exc.api_message}" if exc.api_message else exc.message
            raise ProviderError(f"HTTP {status}: {detail}", retryable=transient_status(status),
                                error_class=type(exc).__name__, status=status,
                                retry_after_s=retry_after(exc.response.headers)) from None
        except anthropic.APIConnectionError as exc:
            raise ProviderError(exc.message, retryable=True, error_class=type(exc).__name__) from None
        text = "".join(block.text for block in message.content if block.type == "text")
        tools = tuple(ToolCall(block.id, block.name, dict(block.input))
                      for block in message.content if block.type == "tool_use")
        return LlmResult(text, usage(message.usage), NAME, message.model, tools, stop_reason=message.stop_reason)


def usage(u: Any) -> Usage:
    """OpenTelemetry GenAI rule: input tokens include cache reads and writes (Anthropic reports them apart)."""
    cache_read = u.cache_read_input_tokens or 0
    cache_write = u.cache_creation_input_tokens or 0
    return Usage(input_tokens=u.input_tokens + cache_read + cache_write, output_tokens=u.output_tokens,
                 cache_read_tokens=cache_read, cache_write_tokens=cache_write)
