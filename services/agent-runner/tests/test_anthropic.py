"""The Anthropic adapter through the real `anthropic` SDK, against a local Messages API server."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from fake_llm import FakeServer, Reply, anthropic_error, anthropic_message, overloaded, rate_limited

from agent_engine.agent_runner.providers import Gateway, LlmRequest, ProviderError, ToolCall, Turn
from agent_engine.agent_runner.providers.anthropic import AnthropicProvider
from agent_engine.agent_runner.service import AgentRunner
from agent_engine.contracts.events import DispatchedAgent, Usage

# The SDK warns that claude-sonnet-4-5 nears end-of-life; these tests are about our handling, not the model.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


def request(**agent: Any) -> LlmRequest:
    return LlmRequest(DispatchedAgent(name="a", **agent), "Be brief.", (Turn("user", "Go."),), 1)


class Sleeps(list[float]):
    """Stands in for asyncio.sleep in the gateway: records each wait instead of taking it."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def gateway(server: FakeServer, sleeps: Sleeps | None = None, **kwargs: Any) -> Gateway:
    return Gateway({"anthropic": lambda: AnthropicProvider("test-key", server.url)},
                   sleep=sleeps if sleeps is not None else Sleeps(), **kwargs)


async def test_text_reply_usage_with_cache_tokens_and_the_request_sent(fake_anthropic: FakeServer) -> None:
    result = await AnthropicProvider("test-key", fake_anthropic.url).complete(request(max_tokens=321),
                                                                              "claude-sonnet-4-5")

    assert result.text == '{"goal": "x"}'
    assert (result.provider, result.model, result.stop_reason) == ("anthropic", "claude-sonnet-4-5", "end_turn")
    # OTel GenAI rule: input tokens include the cache reads (3) and writes (2) Anthropic reports apart
    assert result.usage == Usage(input_tokens=15, output_tokens=5, cache_read_tokens=3, cache_write_tokens=2)
    [sent] = fake_anthropic.requests
    assert sent["path"] == "/v1/messages"
    headers = sent["headers"]
    assert headers.get("x-api-key") == "test-key" or headers.get("authorization") == "Bearer test-key", headers
    assert sent["json"]["system"] == "Be brief."
    assert sent["json"]["model"] == "claude-sonnet-4-5"
    assert sent["json"]["max_tokens"] == 321
    assert sent["json"]["messages"] == [{"role": "user", "content": "Go."}]


async def test_tool_use_blocks_become_tool_calls(fake_anthropic: FakeServer) -> None:
    fake_anthropic.body = anthropic_message("Let me look that up.", tool_use=[
        {"name": "workspace_read", "input": {"path": "notes.md"}}, {"name": "text_stats", "input": {"text": "a b"}}])
    result = await AnthropicProvider("test-key", fake_anthropic.url).complete(request(), "claude-sonnet-4-5")
    assert result.text == "Let me look that up."
    assert result.stop_reason == "tool_use"
    assert result.tool_calls == (ToolCall("toolu_0", "workspace_read", {"path": "notes.md"}),
                                 ToolCall("toolu_1", "text_stats", {"text": "a b"}))


@pytest.mark.parametrize(("reply", "error_class", "retryable"), [
    (anthropic_error(400, "invalid_request_error", "max_tokens: bad"), "BadRequestError", False),
    (anthropic_error(401, "authentication_error", "invalid x-api-key"), "AuthenticationError", False),
    (rate_limited("7"), "RateLimitError", True),
    (anthropic_error(500, "api_error", "boom"), "InternalServerError", True),
    (overloaded(), "OverloadedError", True),
])
async def test_an_error_status_is_one_request_classified(fake_anthropic: FakeServer, reply: Reply,
                                                         error_class: str, retryable: bool) -> None:
    fake_anthropic.default = reply
    with pytest.raises(ProviderError) as info:
        await AnthropicProvider("test-key", fake_anthropic.url).complete(request(), "claude-sonnet-4-5")
    err = info.value
    assert (err.error_class, err.status, err.retryable) == (error_class, reply.status, retryable)
    assert str(err).startswith(f"HTTP {reply.status}: ")
    assert err.retry_after_s == (7.0 if reply.status == 429 else None)
    assert len(fake_anthropic.requests) == 1  # the SDK's own retries are off: the gateway's count


async def test_an_unreachable_server_is_a_retryable_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ProviderError) as info:
            await AnthropicProvider("test-key", f"http://127.0.0.1:{port}").complete(request(), "claude-sonnet-4-5")
    assert (info.value.error_class, info.value.retryable, info.value.status) == ("APIConnectionError", True, None)


async def test_a_429_is_retried_after_the_time_the_server_asks(fake_anthropic: FakeServer, agent_dispatch) -> None:
    fake_anthropic.then(rate_limited("1.5"))
    sleeps = Sleeps()
    cause, dispatch = agent_dispatch(provider="anthropic", model="claude-sonnet-4-5",
                                     output_schema_json={"type": "object", "required": ["goal"]})

    failed, llm, done = await AgentRunner(gateway(fake_anthropic, sleeps)).handle(cause, dispatch)

    assert sleeps == [1.5]
    assert len(fake_anthropic.requests) == 2
    assert failed.type == "llm.call_failed"
    assert {k: failed.data[k] for k in ("provider", "model", "error_class", "status", "retry_after_s", "call",
                                        "then", "delay_s")} == {
        "provider": "anthropic", "model": "claude-sonnet-4-5", "error_class": "RateLimitError", "status": 429,
        "retry_after_s": 1.5, "call": 1, "then": "retry", "delay_s": 1.5}
    assert (llm.type, llm.data["outcome"]) == ("llm.called", "valid")
    assert done.type == "node.completed"


async def test_retry_after_ms_is_honoured_and_really_waited(fake_anthropic: FakeServer) -> None:
    import time

    fake_anthropic.then(anthropic_error(529, "overloaded_error", "Overloaded", retry_after_ms="120"))
    gw = Gateway({"anthropic": lambda: AnthropicProvider("test-key", fake_anthropic.url)})
    failures: list[Any] = []
    started = time.monotonic()
    result = await gw.complete(request(provider="anthropic"), failures.append)
    assert time.monotonic() - started >= 0.12
    assert result.text == '{"goal": "x"}'
    [failure] = failures
    assert (failure.error.error_class, failure.error.retry_after_s, failure.then) == ("OverloadedError", 0.12, "retry")


async def test_a_reply_that_is_not_json_is_repaired_in_the_same_conversation(fake_anthropic: FakeServer,
                                                                             agent_dispatch) -> None:
    fake_anthropic.then(Reply(200, anthropic_message("Sure! The goal is to compare engines.", input_tokens=100,
                                                     output_tokens=20, cache_read=0, cache_write=0)))
    fake_anthropic.body = anthropic_message('{"goal": "compare", "constraints": []}', input_tokens=150,
                                            output_tokens=12, cache_read=0, cache_write=0)
    cause, dispatch = agent_dispatch(provider="anthropic", model="claude-sonnet-4-5")

    first, second, done = await AgentRunner(gateway(fake_anthropic)).handle(cause, dispatch)

    assert (first.data["repair"], first.data["outcome"]) == (0, "invalid")
    assert first.data["problem"].startswith("model reply is not a JSON object")
    assert (second.data["repair"], second.data["outcome"]) == (1, "valid")
    assert (first.data["cost_usd"], second.data["cost_usd"]) == ("0.0006", "0.00063")  # 100*3+20*15, 150*3+12*15
    assert done.data["output"] == {"goal": "compare", "constraints": []}
    assert done.data["usage"]["input_tokens"] == 250 and done.data["usage"]["output_tokens"] == 32
    repair_turns = fake_anthropic.requests[1]["json"]["messages"]
    assert [m["role"] for m in repair_turns] == ["user", "assistant", "user"]
    assert repair_turns[1]["content"] == "Sure! The goal is to compare engines."
    assert repair_turns[2]["content"].startswith("Your reply was not valid: model reply is not a JSON object")
