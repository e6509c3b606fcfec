"""LLM providers behind one gateway: Anthropic (official SDK), OpenAI-compatible (httpx), and the mock."""

from agent_engine.agent_runner.providers.base import (
    MOCK,
    LlmRequest,
    LlmResult,
    Provider,
    ProviderError,
    TokenCounter,
    ToolCall,
    ToolResult,
    Turn,
    estimate_tokens,
)
from agent_engine.agent_runner.providers.gateway import CallFailure, Gateway, RetryPolicy, Route
from agent_engine.agent_runner.providers.mock import MockProvider, minimal_instance

__all__ = ["MOCK", "CallFailure", "Gateway", "LlmRequest", "LlmResult", "MockProvider", "Provider",
           "ProviderError", "RetryPolicy", "Route", "TokenCounter", "ToolCall", "ToolResult", "Turn", "estimate_tokens",
           "minimal_instance"]
