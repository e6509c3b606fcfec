"""Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, ...) over httpx.

One HTTP call per `complete`; retries are the gateway's. Usage: `prompt_tokens` already includes
cached tokens (`prompt_tokens_details.cached_tokens`), which is the OpenTelemetry GenAI rule as is.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

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

NAME = "openai"


class OpenAIProvider:
    name = NAME

    def __init__(self, base_url: str, api_key: str = "", timeout_s: float = 60.0) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.client = httpx.AsyncClient(headers=headers, timeout=timeout_s)

    async def complete(self, request: LlmRequest, model: str) -> LlmResult:
        body = {"model": model, "max_tokens": request.agent.max_tokens, **chat_body(request)}
        try:
            response = await self.client.post(self.url, json=body)
        except httpx.TransportError as exc:
            kind = type(exc).__name__
            raise ProviderError(f"{kind}: {exc}", retryable=True, error_class=kind) from None
        status = response.status_code
        if status >= 400:
            kind = "RateLimitError" if status == 429 else "InternalServerError" if status >= 500 else "HTTPStatusError"
            raise ProviderError(f"HTTP {status}: {error_message(response)}", retryable=transient_status(status),
                                error_class=kind, status=status, retry_after_s=retry_after(response.headers))
        try:
            return parse(response.json(), model)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ProviderError(f"unreadable chat completion ({type(exc).__name__}: {exc}); body starts "
                                f"{response.text[:120]!r}", retryable=True, error_class="MalformedResponse",
                                status=status) from None

    async def aclose(self) -> None:
        await self.client.aclose()


def chat_body(request: LlmRequest) -> dict[str, Any]:
    """messages and tools in the chat-completions shape: an assistant message with `tool_calls`, then one
    `tool` message per result (the API has no error flag, so an error says so in its content)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
    for turn in request.turns:
        messages += [{"role": "tool", "tool_call_id": r.call_id, "content": f"ERROR: {r.content}" if r.is_error
                      else r.content} for r in turn.tool_results]
        if turn.tool_calls:
            messages.append({"role": "assistant", "content": turn.content or None, "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": safe_tool_name(c.name),
                                                              "arguments": json.dumps(c.input)}}
                for c in turn.tool_calls]})
        elif turn.content or not turn.tool_results:
            messages.append({"role": turn.role, "content": turn.content})
    sent: dict[str, Any] = {"messages": messages}
    if request.tools:
        sent["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                           "parameters": t.input_schema}} for t in request.tools]
        if not request.allow_tools:
            sent["tool_choice"] = "none"
    return sent


def parse(body: dict[str, Any], model: str) -> LlmResult:
    choice = body["choices"][0]
    message = choice["message"]
    tools = tuple(tool_call(call) for call in message.get("tool_calls") or [])
    u = body.get("usage") or {}
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    usage = Usage(input_tokens=u.get("prompt_tokens", 0), output_tokens=u.get("completion_tokens", 0),
                  cache_read_tokens=cached)
    return LlmResult(message.get("content") or "", usage, NAME, body.get("model") or model, tools,
                     stop_reason=choice.get("finish_reason"))


def tool_call(call: dict[str, Any]) -> ToolCall:
    """One `tool_calls` item; arguments that are not a JSON object make a call the runner sends back for repair."""
    name, raw = call["function"]["name"], call["function"].get("arguments") or "{}"
    try:
        args = json.loads(raw)
    except json.JSONDecodeError as exc:
        return ToolCall(call["id"], name, {}, problem=f"the arguments of tool call '{name}' are not JSON ({exc.msg}): "
                                                      f"{raw[:80]!r}")
    if not isinstance(args, dict):
        return ToolCall(call["id"], name, {}, problem=f"the arguments of tool call '{name}' are not a JSON object")
    return ToolCall(call["id"], name, args)


def error_message(response: httpx.Response) -> str:
    """The `error.message` of an OpenAI-style error body, else the start of the body."""
    try:
        error = response.json().get("error")
    except ValueError:
        error = None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:300]
    if isinstance(error, str):
        return error[:300]
    return response.text[:300] or response.reason_phrase
