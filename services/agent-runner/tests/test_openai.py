"""The OpenAI-compatible adapter (httpx) against a local chat-completions server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_llm import FakeServer, Reply, openai_completion, openai_error

from agent_engine.agent_runner import pricing
from agent_engine.agent_runner.providers import Gateway, LlmRequest, ProviderError, ToolCall, Turn
from agent_engine.agent_runner.providers.openai import OpenAIProvider
from agent_engine.agent_runner.service import AgentRunner
from agent_engine.contracts.events import DispatchedAgent, Usage


def request(**agent: Any) -> LlmRequest:
    return LlmRequest(DispatchedAgent(name="a", provider="openai", model="gpt-4o-mini", **agent), "Be brief.",
                      (Turn("user", "Go."),), 1)


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


async def test_text_reply_usage_and_the_request_sent(fake_openai: FakeServer) -> None:
    provider = OpenAIProvider(fake_openai.url + "/v1/", "sk-test")
    result = await provider.complete(request(max_tokens=77), "gpt-4o-mini")
    await provider.aclose()

    assert result.text == '{"goal": "x"}'
    assert (result.provider, result.model, result.stop_reason) == ("openai", "gpt-4o-mini", "stop")
    # prompt_tokens already include the 8 cached ones: input stays 20 (the OTel GenAI rule as is)
    assert result.usage == Usage(input_tokens=20, output_tokens=7, cache_read_tokens=8, cache_write_tokens=0)
    [sent] = fake_openai.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer sk-test"
    assert sent["json"] == {"model": "gpt-4o-mini", "max_tokens": 77, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Go."}]}


async def test_a_local_server_needs_no_key_and_usage_may_lack_cache_details(fake_openai: FakeServer) -> None:
    fake_openai.body = openai_completion("{}", model="llama3.1:8b", cached=None)
    result = await OpenAIProvider(fake_openai.url).complete(request(), "llama3.1:8b")
    assert "authorization" not in fake_openai.requests[0]["headers"]
    assert result.usage == Usage(input_tokens=20, output_tokens=7)
    assert result.model == "llama3.1:8b"


async def test_tool_calls_are_mapped(fake_openai: FakeServer) -> None:
    fake_openai.body = openai_completion(None, tool_calls=[{"name": "text_stats", "input": {"text": "a b"}}])
    result = await OpenAIProvider(fake_openai.url).complete(request(), "gpt-4o-mini")
    assert (result.text, result.stop_reason) == ("", "tool_calls")
    assert result.tool_calls == (ToolCall("call_0", "text_stats", {"text": "a b"}),)


@pytest.mark.parametrize(("reply", "error_class", "retryable", "retry_after_s"), [
    (openai_error(429, "Rate limit reached for gpt-4o-mini", retry_after="2"), "RateLimitError", True, 2.0),
    (openai_error(500, "The server had an error"), "InternalServerError", True, None),
    (openai_error(503, "overloaded", retry_after_ms="250"), "InternalServerError", True, 0.25),
    (openai_error(400, "Invalid 'messages'"), "HTTPStatusError", False, None),
    (Reply(404, "<html>not here</html>"), "HTTPStatusError", False, None),
])
async def test_an_error_status_is_classified_with_the_servers_message(
        fake_openai: FakeServer, reply: Reply, error_class: str, retryable: bool, retry_after_s: float | None) -> None:
    fake_openai.default = reply
    with pytest.raises(ProviderError) as info:
        await OpenAIProvider(fake_openai.url).complete(request(), "gpt-4o-mini")
    err = info.value
    assert (err.error_class, err.status, err.retryable, err.retry_after_s) == (
        error_class, reply.status, retryable, retry_after_s)
    expected = reply.body if isinstance(reply.body, str) else reply.body["error"]["message"]
    assert str(err) == f"HTTP {reply.status}: {expected}"


async def test_a_malformed_body_is_a_retryable_error_quoting_it(fake_openai: FakeServer) -> None:
    fake_openai.default = Reply(200, '{"choices": [')
    with pytest.raises(ProviderError, match=r"unreadable chat completion .*body starts '\{\"choices\": \['") as info:
        await OpenAIProvider(fake_openai.url).complete(request(), "gpt-4o-mini")
    assert (info.value.error_class, info.value.retryable) == ("MalformedResponse", True)


async def test_429_then_500_then_success_through_the_gateway(fake_openai: FakeServer, agent_dispatch) -> None:
    fake_openai.then(openai_error(429, "slow down", retry_after="3"), openai_error(500, "oops"))
    sleeps = Sleeps()
    gw = Gateway({"openai": lambda: OpenAIProvider(fake_openai.url)}, sleep=sleeps)
    cause, dispatch = agent_dispatch(provider="openai", model="gpt-4o-mini",
                                     output_schema_json={"type": "object", "required": ["goal"]})

    events = await AgentRunner(gw).handle(cause, dispatch)

    assert [e.type for e in events] == ["llm.call_failed", "llm.call_failed", "llm.called", "node.completed"]
    assert [(e.data["status"], e.data["call"], e.data["then"]) for e in events[:2]] == [(429, 1, "retry"),
                                                                                      (500, 2, "retry")]
    assert sleeps[0] == 3.0  # the server's retry-after
    assert 0.5 <= sleeps[1] / (0.5 * 2) < 1  # no retry-after: second backoff, 0.5 s doubled, with jitter
    assert len({e.id for e in events}) == 4
    call = events[2].data
    assert (call["price_table"], call["cost_usd"]) == ("2026-11-01", str(pricing.cost("gpt-4o-mini", Usage(**call["usage"]))))
    assert call["cost_usd"] != "unpriced"  # gpt-4o-mini is in the bundled price table


async def test_from_env_reads_the_key_file_and_never_shows_it(fake_openai: FakeServer, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "openai.key"
    key_file.write_text("sk-from-file-0123456789\n")
    monkeypatch.setenv("AE_OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("OPENAI_API_KEY_FILE", str(key_file))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    gw = Gateway.from_env()

    await gw.complete(request(), lambda failure: None)

    assert fake_openai.requests[0]["headers"]["authorization"] == "Bearer sk-from-file-0123456789"
    status = gw.status()
    assert status["providers"]["openai"] == {"configured": True, "credential": "OPENAI_API_KEY_FILE"}
    assert "sk-from-file" not in json.dumps(status)
    await gw.aclose()
