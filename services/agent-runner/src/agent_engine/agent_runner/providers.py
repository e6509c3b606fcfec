"""LLM providers: a deterministic mock (labelled `mock` wherever its output shows) and Anthropic.

A provider takes a prepared request and returns raw output plus usage; validation is the caller's.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent_engine.contracts.events import DispatchedAgent, Usage

MOCK = "mock"


@dataclass(frozen=True)
class LlmRequest:
    agent: DispatchedAgent
    system: str
    prompt: str
    attempt: int


@dataclass(frozen=True)
class LlmResult:
    output: dict[str, Any]
    usage: Usage
    provider: str
    model: str
    raw_text: str = field(default="", repr=False)


class ProviderError(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Provider(Protocol):
    name: str

    async def complete(self, request: LlmRequest) -> LlmResult: ...


def estimate_tokens(text: str) -> int:
    """A stated estimate (about four characters a token), used only where no provider count exists."""
    return max(1, (len(text) + 3) // 4)


class MockProvider:
    """Deterministic: scripted outputs per node from the workflow's mock/ files, else the smallest
    object valid against the node's output schema. Usage is synthetic, from text length."""

    name = MOCK

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        """Simulated latency (AE_MOCK_DELAY_S), so demos and crash tests have calls in flight."""

    async def complete(self, request: LlmRequest) -> LlmResult:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        scripted = request.agent.mock_responses
        if scripted:
            output = scripted[min(request.attempt, len(scripted)) - 1]
        else:
            output = minimal_instance(request.agent.output_schema_json or {"type": "object"})
            if not isinstance(output, dict):
                output = {"result": output}
        text = json.dumps(output, sort_keys=True)
        usage = Usage(input_tokens=estimate_tokens(request.system + request.prompt),
                      output_tokens=estimate_tokens(text))
        return LlmResult(output, usage, MOCK, "mock-1", text)


def minimal_instance(schema: dict[str, Any]) -> Any:
    """The smallest value that satisfies a (simple) JSON Schema: required properties, min lengths."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        props = schema.get("properties", {})
        return {name: minimal_instance(props.get(name, {})) for name in schema.get("required", [])}
    if kind == "array":
        return [minimal_instance(schema.get("items", {})) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "mock" + "x" * max(0, schema.get("minLength", 0) - 4)
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return None


class AnthropicProvider:
    """Claude through the official `anthropic` SDK; the key comes from the environment only."""

    name = "anthropic"

    def __init__(self, api_key: str, base_url: str | None = None) -> None:
        import anthropic

        self._anthropic = anthropic
        self.client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=2)

    async def complete(self, request: LlmRequest) -> LlmResult:
        errors = self._anthropic
        try:
            message = await self.client.messages.create(
                model=request.agent.model, max_tokens=request.agent.max_tokens, system=request.system,
                messages=[{"role": "user", "content": request.prompt}],
            )
        except (errors.RateLimitError, errors.InternalServerError, errors.APIConnectionError) as exc:
            raise ProviderError(f"anthropic: {type(exc).__name__}: {exc}", retryable=True) from None
        except errors.APIStatusError as exc:
            raise ProviderError(f"anthropic: HTTP {exc.status_code}: {exc.message}", retryable=False) from None
        text = "".join(block.text for block in message.content if block.type == "text")
        u = message.usage
        cache_read = u.cache_read_input_tokens or 0
        cache_write = u.cache_creation_input_tokens or 0
        usage = Usage(input_tokens=u.input_tokens + cache_read + cache_write, output_tokens=u.output_tokens,
                      cache_read_tokens=cache_read, cache_write_tokens=cache_write)
        return LlmResult(extract_json(text), usage, self.name, message.model, text)


def extract_json(text: str) -> dict[str, Any]:
    """The JSON object in a model's reply, with or without a fenced code block around it."""
    fenced = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", text, re.DOTALL)
    candidate = fenced.group(1) if fenced else text[text.find("{"): text.rfind("}") + 1]
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError as exc:
        raise ProviderError(f"model reply is not a JSON object: {exc.msg} (reply starts {text[:80]!r})",
                            retryable=True) from None
    if not isinstance(value, dict):
        raise ProviderError("model reply is JSON but not an object", retryable=True)
    return value
