"""The gateway: model chains, retries within a budget, the circuit breaker, credentials from env or files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_llm import FakeServer, Reply, anthropic_error, anthropic_message, overloaded, rate_limited

from agent_engine.agent_runner.providers import CallFailure, Gateway, LlmRequest, ProviderError, RetryPolicy, Turn
from agent_engine.agent_runner.providers.anthropic import AnthropicProvider
from agent_engine.agent_runner.providers.breaker import BreakerPolicy, Breakers, CircuitBreaker
from agent_engine.agent_runner.providers.openai import OpenAIProvider
from agent_engine.agent_runner.service import AgentRunner
from agent_engine.contracts.events import DispatchedAgent

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

FALLBACK = [{"provider": "openai", "model": "gpt-4o-mini"}]
GOAL = {"type": "object", "required": ["goal"]}


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(**agent: Any) -> LlmRequest:
    spec = {"name": "a", "provider": "anthropic", "model": "claude-sonnet-4-5", **agent}
    return LlmRequest(DispatchedAgent(**spec), "Be brief.", (Turn("user", "Go."),), 1)


def two_providers(anthropic: FakeServer, openai: FakeServer, clock: Clock, *, failures: int = 2,
                  cooldown_s: float = 30.0, max_retries: int = 5) -> Gateway:
    return Gateway({"anthropic": lambda: AnthropicProvider("test-key", anthropic.url),
                    "openai": lambda: OpenAIProvider(openai.url)},
                   retry=RetryPolicy(max_retries=max_retries, backoff_s=0.01, backoff_max_s=0.05, budget_s=5),
                   breakers=Breakers(BreakerPolicy(failures, cooldown_s), clock), sleep=Sleeps())


def breaker_row(gw: Gateway, provider: str, model: str) -> dict[str, Any]:
    return next(b for b in gw.status()["breakers"] if (b["provider"], b["model"]) == (provider, model))


# --- the chain --------------------------------------------------------------------------------

def test_auto_is_anthropic_when_configured_else_mock() -> None:
    agent = DispatchedAgent(name="a", provider="auto", model="claude-haiku-4-5", fallbacks=FALLBACK)
    assert [(r.provider, r.model) for r in Gateway().chain(agent)] == [("mock", "mock-1")]
    configured = Gateway({"anthropic": lambda: AnthropicProvider("k")})
    assert [(r.provider, r.model, r.position) for r in configured.chain(agent)] == [
        ("anthropic", "claude-haiku-4-5", 0), ("openai", "gpt-4o-mini", 1)]


def test_forcing_the_mock_drops_the_fallbacks_too() -> None:
    agent = DispatchedAgent(name="a", provider="anthropic", fallbacks=FALLBACK)
    assert [(r.provider, r.model) for r in Gateway(force="mock").chain(agent)] == [("mock", "mock-1")]


async def test_an_unconfigured_provider_is_reported_and_the_next_model_answers() -> None:
    failures: list[CallFailure] = []
    result = await Gateway().complete(request(fallbacks=[{"provider": "mock", "model": "any"}]), failures.append)
    assert (result.provider, result.fallback) == ("mock", 1)
    [failure] = failures
    assert (failure.error.error_class, failure.then, failure.error.retryable) == ("NotConfigured", "fallback", False)
    assert "ANTHROPIC_API_KEY_FILE" in str(failure.error)


# --- retries ----------------------------------------------------------------------------------

async def test_retries_stop_after_max_retries_and_the_error_is_retryable(fake_anthropic: FakeServer) -> None:
    fake_anthropic.default = anthropic_error(500, "api_error", "boom")
    sleeps = Sleeps()
    gw = Gateway({"anthropic": lambda: AnthropicProvider("k", fake_anthropic.url)}, sleep=sleeps,
                 retry=RetryPolicy(max_retries=2, backoff_s=0.1, backoff_max_s=0.15, budget_s=10))
    failures: list[CallFailure] = []
    with pytest.raises(ProviderError, match="InternalServerError: HTTP 500: api_error: boom") as info:
        await gw.complete(request(), failures.append)
    assert info.value.retryable is True
    assert len(fake_anthropic.requests) == 3
    assert [(f.call, f.then) for f in failures] == [(1, "retry"), (2, "retry"), (3, "give_up")]
    assert 0.05 <= sleeps[0] < 0.1 and 0.075 <= sleeps[1] < 0.15  # 0.1 then 0.2 capped at 0.15, jittered


async def test_a_retry_after_beyond_the_budget_is_not_waited_for(fake_anthropic: FakeServer,
                                                                 fake_openai: FakeServer) -> None:
    fake_anthropic.default = rate_limited("60")
    gw = two_providers(fake_anthropic, fake_openai, Clock())
    failures: list[CallFailure] = []
    result = await gw.complete(request(fallbacks=FALLBACK), failures.append)
    assert result.provider == "openai"
    assert gw.sleep == []
    [failure] = failures
    assert (failure.error.retry_after_s, failure.then) == (60.0, "fallback")


async def test_a_refused_request_is_not_retried_and_does_not_count_against_the_model(
        fake_anthropic: FakeServer) -> None:
    fake_anthropic.default = anthropic_error(400, "invalid_request_error", "messages: empty")
    gw = Gateway({"anthropic": lambda: AnthropicProvider("k", fake_anthropic.url)}, sleep=Sleeps())
    with pytest.raises(ProviderError) as info:
        await gw.complete(request(), lambda f: None)
    assert info.value.retryable is False
    assert len(fake_anthropic.requests) == 1
    assert breaker_row(gw, "anthropic", "claude-sonnet-4-5")["consecutive_failures"] == 0


# --- the circuit breaker, end to end over both real clients -------------------------------------

async def test_the_breaker_opens_falls_back_half_opens_and_closes(fake_anthropic: FakeServer,
                                                                  fake_openai: FakeServer, agent_dispatch) -> None:
    clock = Clock()
    gw = two_providers(fake_anthropic, fake_openai, clock, failures=2, cooldown_s=30)
    runner = AgentRunner(gw)
    fake_anthropic.default = overloaded()

    # 1. two 529s in a row open the circuit; the fallback answers
    cause, dispatch = agent_dispatch(provider="anthropic", model="claude-sonnet-4-5", fallbacks=FALLBACK,
                                     output_schema_json=GOAL)
    events = await runner.handle(cause, dispatch)
    assert [(e.type, e.data.get("then")) for e in events] == [
        ("llm.call_failed", "retry"), ("llm.call_failed", "fallback"), ("llm.called", None), ("node.completed", None)]
    assert (events[2].data["provider"], events[2].data["fallback"]) == ("openai", 1)
    row = breaker_row(gw, "anthropic", "claude-sonnet-4-5")
    assert (row["state"], row["consecutive_failures"]) == ("open", 2)
    assert row["opened_at"] and row["last_error"].startswith("OverloadedError: HTTP 529")
    assert len(fake_anthropic.requests) == 2

    # 2. while open, the model is skipped without a request
    events = await runner.handle(*agent_dispatch(attempt=2, provider="anthropic", model="claude-sonnet-4-5",
                                                 fallbacks=FALLBACK, output_schema_json=GOAL))
    assert events[0].data["error_class"] == "CircuitOpen" and events[0].data["then"] == "fallback"
    assert events[1].data["provider"] == "openai"
    assert len(fake_anthropic.requests) == 2

    # 3. after the cool-down one probe goes out; it fails, so the circuit opens again
    clock.now += 30
    assert breaker_row(gw, "anthropic", "claude-sonnet-4-5")["state"] == "half_open"
    failures: list[CallFailure] = []
    result = await gw.complete(request(fallbacks=FALLBACK), failures.append)
    assert result.provider == "openai"
    assert len(fake_anthropic.requests) == 3
    assert [(f.error.error_class, f.then) for f in failures] == [("OverloadedError", "fallback")]
    assert breaker_row(gw, "anthropic", "claude-sonnet-4-5")["state"] == "open"

    # 4. the next probe succeeds: closed again, and the agent's own model answers
    clock.now += 30
    fake_anthropic.default = Reply(200, anthropic_message())
    result = await gw.complete(request(fallbacks=FALLBACK), failures.append)
    assert (result.provider, result.fallback) == ("anthropic", 0)
    row = breaker_row(gw, "anthropic", "claude-sonnet-4-5")
    assert (row["state"], row["consecutive_failures"], row["opened_at"]) == ("closed", 0, None)


async def test_an_open_circuit_at_the_end_of_the_chain_is_a_retryable_node_error(fake_anthropic: FakeServer,
                                                                                 agent_dispatch) -> None:
    fake_anthropic.default = overloaded()
    gw = Gateway({"anthropic": lambda: AnthropicProvider("k", fake_anthropic.url)}, sleep=Sleeps(),
                 breakers=Breakers(BreakerPolicy(failures=1, cooldown_s=60)))
    with pytest.raises(ProviderError):
        await gw.complete(request(), lambda f: None)
    events = await AgentRunner(gw).handle(*agent_dispatch(provider="anthropic", model="claude-sonnet-4-5"))
    assert [e.type for e in events] == ["llm.call_failed", "node.errored"]
    assert (events[0].data["error_class"], events[0].data["then"]) == ("CircuitOpen", "give_up")
    assert events[1].data["retryable"] is True
    assert "circuit open" in events[1].data["error"]


def test_half_open_lets_one_probe_through_at_a_time() -> None:
    clock = Clock()
    breaker = CircuitBreaker("anthropic", "m", BreakerPolicy(failures=1, cooldown_s=5), clock)
    breaker.failed("boom")
    assert not breaker.allow()
    clock.now += 5
    assert breaker.allow()
    assert not breaker.allow()  # the probe is still out
    breaker.released()  # it ended saying nothing about health (say, a 400)
    assert breaker.current() == "half_open" and breaker.allow()
    breaker.succeeded()
    assert breaker.current() == "closed" and breaker.allow() and breaker.allow()


# --- credentials and configuration ------------------------------------------------------------

def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY_FILE", "OPENAI_API_KEY", "OPENAI_API_KEY_FILE",
                 "AE_OPENAI_BASE_URL", "AE_PROVIDER"):
        monkeypatch.delenv(name, raising=False)


async def test_the_anthropic_key_may_come_from_a_file(fake_anthropic: FakeServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch)
    (tmp_path / "key").write_text("  sk-ant-file-key\n")
    monkeypatch.setenv("ANTHROPIC_API_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.url)
    gw = Gateway.from_env()
    await gw.complete(request(provider="auto"), lambda f: None)
    headers = fake_anthropic.requests[0]["headers"]
    assert "sk-ant-file-key" in (headers.get("x-api-key"), headers.get("authorization", "")[7:])
    assert gw.status()["providers"]["anthropic"] == {"configured": True, "credential": "ANTHROPIC_API_KEY_FILE"}


@pytest.mark.parametrize(("env", "message"), [
    ({"ANTHROPIC_API_KEY": "sk-1", "ANTHROPIC_API_KEY_FILE": "/x"}, "both ANTHROPIC_API_KEY and ANTHROPIC_API_KEY_FILE"),
    ({"OPENAI_API_KEY_FILE": "/nonexistent/key"}, "OPENAI_API_KEY_FILE=/nonexistent/key: cannot read the file"),
    ({"AE_LLM_RETRY_BUDGET_S": "-1"}, "AE_LLM_RETRY_BUDGET_S='-1' must be zero or more"),
    ({"AE_BREAKER_FAILURES": "0"}, "AE_BREAKER_FAILURES='0' must be more than zero"),
    ({"AE_LLM_BACKOFF_S": "soon"}, "AE_LLM_BACKOFF_S='soon' is not a number"),
])
def test_bad_configuration_stops_the_runner_naming_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                                env: dict[str, str], message: str) -> None:
    clean_env(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=message.replace("(", r"\(")):
        Gateway.from_env()


def test_an_empty_key_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env(monkeypatch)
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("ANTHROPIC_API_KEY_FILE", str(tmp_path / "empty"))
    with pytest.raises(SystemExit, match="the file is empty"):
        Gateway.from_env()


async def test_a_key_echoed_in_an_error_never_reaches_an_event(fake_anthropic: FakeServer, agent_dispatch,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-echoed-secret")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.url)
    monkeypatch.setenv("AE_LLM_MAX_RETRIES", "0")
    fake_anthropic.default = anthropic_error(401, "authentication_error", "invalid x-api-key sk-ant-echoed-secret")
    events = await AgentRunner(Gateway.from_env()).handle(*agent_dispatch(provider="anthropic"))
    text = json.dumps([e.model_dump(mode="json") for e in events])
    assert "sk-ant-echoed-secret" not in text
    assert "invalid x-api-key [redacted]" in text
