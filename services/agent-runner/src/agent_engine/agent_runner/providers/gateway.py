"""The provider gateway: for one conversation turn, try the agent's model, then its fallbacks.

Per model: retry transient failures (429, 5xx, 529, connection errors) honouring retry-after, with
exponential backoff, within a wait budget per turn; skip the model while its circuit is open.
Every failed attempt is reported (the runner records it as `llm.call_failed`).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from agent_engine.agent_runner.providers.base import (
    MOCK,
    LlmRequest,
    LlmResult,
    Provider,
    ProviderError,
    estimate_tokens,
)
from agent_engine.agent_runner.providers.breaker import BreakerPolicy, Breakers
from agent_engine.agent_runner.providers.chatspan import chat_span, record_chat
from agent_engine.agent_runner.providers.mock import MODEL as MOCK_MODEL
from agent_engine.agent_runner.providers.mock import MockProvider
from agent_engine.agent_runner.scores import Scoreboard, by_score
from agent_engine.contracts.events import DispatchedAgent
from agent_engine.runtime.secrets import CredentialError, Secret, secret
from agent_engine.runtime.settings import env_float

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
NOT_CONFIGURED = {
    "anthropic": "neither ANTHROPIC_API_KEY nor ANTHROPIC_API_KEY_FILE is set in the agent-runner's environment",
    "openai": "neither AE_OPENAI_BASE_URL nor OPENAI_API_KEY / OPENAI_API_KEY_FILE is set in the agent-runner's "
              "environment",
}
Then = Literal["retry", "fallback", "give_up"]


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    """Retries per model per turn after the first call (AE_LLM_MAX_RETRIES)."""
    backoff_s: float = 0.5
    """First backoff when the provider gives no retry-after; doubles per retry (AE_LLM_BACKOFF_S)."""
    backoff_max_s: float = 8.0
    """Cap of one computed backoff (AE_LLM_BACKOFF_MAX_S); a provider's retry-after is honoured as given."""
    budget_s: float = 30.0
    """Most the gateway waits in total for one turn, over all models (AE_LLM_RETRY_BUDGET_S); a wait that
    would exceed it is not taken: the gateway falls back instead."""

    def delay(self, call: int, retry_after_s: float | None, rng: random.Random) -> float:
        if retry_after_s is not None:
            return retry_after_s
        return float(min(self.backoff_max_s, self.backoff_s * 2.0 ** (call - 1)) * (0.5 + rng.random() / 2))


@dataclass(frozen=True)
class Route:
    provider: str
    model: str
    position: int
    """0: the agent's own model; n: its n-th fallback."""


@dataclass(frozen=True)
class CallFailure:
    """One failed attempt, as the runner records it (`llm.call_failed`)."""

    route: Route
    call: int
    repair: int
    error: ProviderError
    then: Then
    delay_s: float | None = None


Report = Callable[[CallFailure], None]


@dataclass
class Gateway:
    factories: dict[str, Callable[[], Provider]] = field(default_factory=dict)
    """Configured providers, built on first use (the anthropic SDK takes a second to import)."""
    force: str = ""
    """AE_PROVIDER: replaces every agent's provider; `mock` also drops the fallbacks."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breakers: Breakers = field(default_factory=Breakers)
    secrets: dict[str, Secret] = field(default_factory=dict)
    """Credentials in use, by provider: scrubbed from every error message, named (never shown) by `status`."""
    mock: MockProvider = field(default_factory=MockProvider)
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    built: dict[str, Provider] = field(default_factory=dict)
    scores: Scoreboard | None = None
    """Telemetry's figures, for agents with `fallback_order: by_score` (scores.py); None: declared order."""

    @classmethod
    def from_env(cls) -> Gateway:
        try:
            anthropic_key, openai_key = secret("ANTHROPIC_API_KEY"), secret("OPENAI_API_KEY")
        except CredentialError as exc:
            raise SystemExit(str(exc)) from None
        timeout = positive("AE_LLM_TIMEOUT_S", 60.0)
        factories: dict[str, Callable[[], Provider]] = {}
        if anthropic_key:
            anthropic_url = os.environ.get("ANTHROPIC_BASE_URL") or None

            def anthropic() -> Provider:
                from agent_engine.agent_runner.providers.anthropic import AnthropicProvider

                return AnthropicProvider(anthropic_key.value, anthropic_url, timeout)

            factories["anthropic"] = anthropic
        openai_url = os.environ.get("AE_OPENAI_BASE_URL", "")
        if openai_url or openai_key:
            def openai() -> Provider:
                from agent_engine.agent_runner.providers.openai import OpenAIProvider

                return OpenAIProvider(openai_url or OPENAI_DEFAULT_URL, openai_key.value, timeout)

            factories["openai"] = openai
        retry = RetryPolicy(int(positive("AE_LLM_MAX_RETRIES", 3, zero=True)), positive("AE_LLM_BACKOFF_S", 0.5),
                            positive("AE_LLM_BACKOFF_MAX_S", 8.0), positive("AE_LLM_RETRY_BUDGET_S", 30.0, zero=True))
        breakers = Breakers(BreakerPolicy(int(positive("AE_BREAKER_FAILURES", 5)),
                                          positive("AE_BREAKER_COOLDOWN_S", 30.0, zero=True)))
        return cls(factories, os.environ.get("AE_PROVIDER", ""), retry, breakers,
                   {name: s for name, s in (("anthropic", anthropic_key), ("openai", openai_key)) if s},
                   MockProvider(positive("AE_MOCK_DELAY_S", 0.0, zero=True)))

    def chain(self, agent: DispatchedAgent) -> list[Route]:
        """The models to try, in order: the agent's own, then its fallbacks."""
        primary = self.force or agent.provider
        if primary == "auto":
            primary = "anthropic" if "anthropic" in self.factories else MOCK
        if primary == MOCK:
            return [Route(MOCK, MOCK_MODEL, 0)]
        fallbacks = [] if self.force == MOCK else agent.fallbacks
        return [Route(primary, agent.model, 0)] + [
            Route(f.provider, MOCK_MODEL if f.provider == MOCK else f.model, i)
            for i, f in enumerate(fallbacks, start=1)]

    def provider(self, name: str) -> Provider:
        if name == MOCK:
            return self.mock
        if name not in self.built:
            if name not in self.factories:
                reason = NOT_CONFIGURED.get(name, "it is not a provider this agent-runner knows")
                raise ProviderError(f"agent wants provider '{name}' but {reason}", retryable=False,
                                    error_class="NotConfigured")
            self.built[name] = self.factories[name]()
        return self.built[name]

    async def complete(self, request: LlmRequest, report: Report, tenant: str | None = None) -> LlmResult:
        """The first reply any model in the chain gives; ProviderError when none does. With `tenant`, an agent
        with `fallback_order: by_score` has its fallbacks ordered by that tenant's figures."""
        routes = self.chain(request.agent)
        if request.agent.fallback_order == "by_score" and self.scores is not None and tenant and len(routes) > 2:
            routes = by_score(routes, await self.scores.figures(tenant))
        waited, retryable, tried = 0.0, False, []
        for route in routes:
            then_next: Then = "give_up" if route is routes[-1] else "fallback"
            call = 0
            while True:
                call += 1
                breaker = self.breakers.get(route.provider, route.model)
                try:
                    provider = self.provider(route.provider)
                    if not breaker.allow():
                        raise ProviderError(
                            f"circuit open since {breaker.opened_at:%H:%M:%S} after {breaker.consecutive_failures} "
                            f"consecutive failures (last: {breaker.last_error}); not called", retryable=True,
                            error_class="CircuitOpen")
                except ProviderError as exc:
                    retryable |= exc.retryable
                    tried.append(f"{route.provider}/{route.model}: {exc}")
                    report(CallFailure(route, call, request.repair, exc, then_next))
                    break
                began = time.perf_counter()
                try:
                    with chat_span(request, route.provider, route.model) as span:
                        result = await provider.complete(request, route.model)
                        record_chat(span, request, result)
                except ProviderError as exc:
                    exc = ProviderError(self.scrub(str(exc)), retryable=exc.retryable, error_class=exc.error_class,
                                        status=exc.status, retry_after_s=exc.retry_after_s)
                    if exc.retryable:
                        breaker.failed(f"{exc.error_class}: {exc}"[:300])
                    else:
                        breaker.released()
                    retryable |= exc.retryable
                    delay = self.retry.delay(call, exc.retry_after_s, self.rng)
                    if (exc.retryable and call <= self.retry.max_retries and breaker.current() == "closed"
                            and waited + delay <= self.retry.budget_s):
                        report(CallFailure(route, call, request.repair, exc, "retry", round(delay, 3)))
                        await self.sleep(delay)
                        waited += delay
                        continue
                    tried.append(f"{route.provider}/{route.model}: {exc.error_class}: {exc}")
                    report(CallFailure(route, call, request.repair, exc, then_next))
                    break
                except BaseException:
                    breaker.released()
                    raise
                breaker.succeeded()
                return replace(result, fallback=route.position,
                               latency_ms=round((time.perf_counter() - began) * 1000, 2))
        if len(tried) == 1:
            raise ProviderError(tried[0], retryable=retryable)
        raise ProviderError(f"no model in the chain answered: {'; '.join(tried)}", retryable=retryable)

    async def count_tokens(self, request: LlmRequest) -> tuple[int, str]:
        """The request's input tokens for the agent's own model: counted by its provider where it can count
        (Anthropic), else a stated estimate. Returns (count, how it was obtained)."""
        route = self.chain(request.agent)[0]
        estimate = estimate_tokens(request.text())
        try:
            provider = self.provider(route.provider)
        except ProviderError:
            return estimate, "estimated: about 4 characters a token"
        counter = getattr(provider, "count_tokens", None)
        if counter is None:
            return estimate, f"estimated: about 4 characters a token; {route.provider} offers no count"
        try:
            return int(await counter(request, route.model)), f"counted by {route.provider} for {route.model}"
        except ProviderError as exc:
            failed = self.scrub(str(exc))
            return estimate, f"estimated: about 4 characters a token; {route.provider}'s count failed: {failed}"

    def scrub(self, text: str) -> str:
        for s in self.secrets.values():
            text = text.replace(s.value, "[redacted]")
        return text

    def status(self) -> dict[str, Any]:
        """What `agentctl providers` shows: providers, where their keys come from, breaker states."""
        providers: dict[str, Any] = {"mock": {"configured": True, "credential": None}}
        for name in ("anthropic", "openai"):
            key = self.secrets.get(name)
            providers[name] = {"configured": name in self.factories, "credential": key.source if key else None}
        return {
            "force": self.force or None,
            "providers": providers,
            "breakers": self.breakers.as_json(),
            "retry": self.retry.__dict__,
            "breaker_policy": self.breakers.policy.__dict__,
        }

    async def aclose(self) -> None:
        for provider in self.built.values():
            close = getattr(provider, "aclose", None) or getattr(getattr(provider, "client", None), "close", None)
            if close is not None:
                await close()


def positive(name: str, default: float, *, zero: bool = False) -> float:
    value = env_float(name, default)
    if value < 0 or (value == 0 and not zero):
        raise SystemExit(f"{name}={os.environ.get(name)!r} must be {'zero or more' if zero else 'more than zero'}")
    return value
