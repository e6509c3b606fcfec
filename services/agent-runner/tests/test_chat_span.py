"""The `chat {model}` span's attributes (providers/chatspan.py): the call's shape always, its content only when
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_engine.agent_runner.providers.base import LlmRequest, LlmResult, ProviderError, ToolCall, Turn
from agent_engine.agent_runner.providers.chatspan import chat_span, record_chat
from agent_engine.contracts.events import DispatchedAgent, Usage
from agent_engine.runtime import tracing

PROMPT = "Summarise the secret plan"
ANSWER = '{"summary": "the plan"}'


def _request() -> LlmRequest:
    return LlmRequest(DispatchedAgent(name="writer", model="claude-x", max_tokens=300), "You write.",
                      (Turn("user", PROMPT),), 1, repair=1)


def _result() -> LlmResult:
    return LlmResult(ANSWER, Usage(input_tokens=120, output_tokens=30, cache_read_tokens=80, cache_write_tokens=10),
                     "anthropic", "claude-x-2026", (ToolCall("c1", "search", {"q": "plan"}),), stop_reason="end_turn")


@pytest.fixture
def spans(tmp_path: Path) -> Iterator[Any]:
    path = tmp_path / "t.jsonl"
    tracing.setup("agent-runner", {"AE_TRACE_FILE": str(path)})

    def read() -> dict[str, dict[str, Any]]:
        tracing.flush()
        return {s["name"]: s for s in map(json.loads, path.read_text().splitlines())}

    yield read
    tracing.shutdown()


def _call(fail: ProviderError | None = None) -> None:
    with tracing.processing({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, None, "s"):
        with chat_span(_request(), "anthropic", "claude-x") as span:
            if fail is not None:
                raise fail
            record_chat(span, _request(), _result())


def test_a_chat_span_has_the_provider_models_and_tokens_but_no_content(spans: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tracing.CAPTURE_ENV, raising=False)
    _call()
    chat = spans()["chat claude-x"]
    assert chat["kind"] == "client"
    assert {k: v for k, v in chat["attributes"].items() if k.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-x",
        "gen_ai.request.max_tokens": 300, "gen_ai.agent.name": "writer", "gen_ai.response.model": "claude-x-2026",
        "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30,
        "gen_ai.usage.cache_read.input_tokens": 80, "gen_ai.usage.cache_creation.input_tokens": 10,
        "gen_ai.response.finish_reasons": ["end_turn"]}
    assert PROMPT not in json.dumps(chat) and "the plan" not in json.dumps(chat)


def test_content_goes_in_only_when_capture_is_switched_on(spans: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracing.CAPTURE_ENV, "true")
    _call()
    attributes = spans()["chat claude-x"]["attributes"]
    assert attributes["gen_ai.system_instructions"] == "You write."
    assert json.loads(attributes["gen_ai.input.messages"])[0]["content"] == PROMPT
    output = json.loads(attributes["gen_ai.output.messages"])[0]
    assert output["content"] == ANSWER and output["tool_calls"][0]["name"] == "search"


def test_a_failed_call_names_its_error(spans: Any) -> None:
    with pytest.raises(ProviderError):
        _call(ProviderError("slow down", retryable=True, error_class="RateLimited", status=429))
    chat = spans()["chat claude-x"]
    assert chat["status"] == "error" and chat["attributes"]["error.type"] == "RateLimited"
    assert chat["attributes"]["http.response.status_code"] == 429
