"""The `chat {model}` span around one provider call, per the OpenTelemetry GenAI conventions.

Only the call's shape goes in by default (provider, models, token usage, finish reason). The prompt and the
reply go in only when OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true (the conventions' switch), as
`gen_ai.system_instructions`, `gen_ai.input.messages` and `gen_ai.output.messages`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from opentelemetry.trace import Span, SpanKind

from agent_engine.agent_runner.providers.base import LlmRequest, LlmResult, ProviderError
from agent_engine.runtime import tracing


def request_attributes(request: LlmRequest, provider: str, model: str) -> dict[str, Any]:
    return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model,
            "gen_ai.request.max_tokens": request.agent.max_tokens, "gen_ai.agent.name": request.agent.name,
            "ae.attempt": request.attempt, "ae.repair": request.repair, "ae.turn": request.turn}


def result_attributes(result: LlmResult) -> dict[str, Any]:
    usage = result.usage
    attributes: dict[str, Any] = {
        "gen_ai.response.model": result.model, "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
        "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens}
    if result.stop_reason:
        attributes["gen_ai.response.finish_reasons"] = [result.stop_reason]
    return attributes


def content_attributes(request: LlmRequest, result: LlmResult) -> dict[str, str]:
    """The messages themselves, for content capture only."""
    turns = [{"role": t.role, "content": t.content,
              "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.input} for c in t.tool_calls],
              "tool_results": [{"id": r.call_id, "content": r.content} for r in t.tool_results]}
             for t in request.turns]
    output = {"role": "assistant", "content": result.text,
              "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.input} for c in result.tool_calls]}
    return {"gen_ai.system_instructions": request.system, "gen_ai.input.messages": json.dumps(turns),
            "gen_ai.output.messages": json.dumps([output])}


@contextlib.contextmanager
def chat_span(request: LlmRequest, provider: str, model: str) -> Iterator[Span | None]:
    """A current `chat {model}` span (kind client); a ProviderError leaves its class as `error.type`."""
    if not tracing.ENABLED:  # no span, and no attributes built for one
        yield None
        return
    with tracing.operation(f"chat {model}", request_attributes(request, provider, model), SpanKind.CLIENT) as span:
        try:
            yield span
        except ProviderError as exc:
            if span is not None and exc.status is not None:
                span.set_attribute("http.response.status_code", exc.status)
            raise


def record_chat(span: Span | None, request: LlmRequest, result: LlmResult) -> None:
    if span is None:
        return
    span.set_attributes(result_attributes(result))
    if tracing.capture_content():
        span.set_attributes(content_attributes(request, result))
