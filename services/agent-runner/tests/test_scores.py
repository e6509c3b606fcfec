"""`fallback_order: by_score`: the ordering rule, the scoreboard's cache, and the gateway trying the best-scored
fallback first (against a local server that speaks the Messages API)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from fake_llm import Reply, anthropic_error, anthropic_message, fake_anthropic_server, serve

from agent_engine.agent_runner.providers import CallFailure, Gateway, LlmRequest, RetryPolicy, Turn
from agent_engine.agent_runner.providers.anthropic import AnthropicProvider
from agent_engine.agent_runner.providers.gateway import Route
from agent_engine.agent_runner.scores import Score, Scoreboard, by_score, model_figures
from agent_engine.contracts.events import DispatchedAgent

CHAIN = [Route("anthropic", "own", 0), Route("anthropic", "a", 1), Route("anthropic", "b", 2),
         Route("anthropic", "c", 3)]


def names(routes: list[Route]) -> list[str]:
    return [r.model for r in routes]


def test_fallbacks_go_by_success_rate_then_cost_and_the_agents_own_model_stays_first() -> None:
    figures = {"anthropic/own": Score(0.0, Decimal(0)), "anthropic/a": Score(0.5, Decimal("0.001")),
               "anthropic/b": Score(0.9, Decimal("0.01")), "anthropic/c": Score(0.9, Decimal("0.002"))}
    assert names(by_score(CHAIN, figures)) == ["own", "c", "b", "a"]


def test_fallbacks_without_figures_keep_their_declared_order_after_those_with_figures() -> None:
    assert names(by_score(CHAIN, {})) == ["own", "a", "b", "c"]
    assert names(by_score(CHAIN, {"anthropic/c": Score(0.1, Decimal(1))})) == ["own", "c", "a", "b"]


def test_figures_per_model_sum_every_agent_of_the_tenant() -> None:
    rows = [{"provider": "anthropic", "model": "a", "attempts": 3, "successes": 1, "answered": 2, "cost_usd": "0.04"},
            {"provider": "anthropic", "model": "a", "attempts": 1, "successes": 1, "answered": 1, "cost_usd": "0.02"},
            {"provider": "openai", "model": "b", "attempts": 2, "successes": 0, "answered": 0, "cost_usd": "0"}]
    assert model_figures(rows) == {"anthropic/a": Score(0.5, Decimal("0.02")), "openai/b": Score(0.0, Decimal(0))}


def test_the_scoreboard_asks_once_per_ttl_per_tenant_and_gives_none_when_telemetry_fails() -> None:
    asked: list[str] = []
    now = [0.0]

    async def fetch(tenant: str) -> list[dict[str, Any]]:
        asked.append(tenant)
        if tenant == "down":
            raise TimeoutError("no answer")
        return [{"provider": "p", "model": "m", "attempts": 1, "successes": 1, "answered": 1, "cost_usd": "0"}]

    board = Scoreboard(fetch, ttl_s=60, clock=lambda: now[0])

    async def go() -> None:
        assert await board.figures("t1") == {"p/m": Score(1.0, Decimal(0))}
        assert await board.figures("t1") == {"p/m": Score(1.0, Decimal(0))}
        assert await board.figures("down") == {}
        now[0] = 61
        await board.figures("t1")
    asyncio.run(go())
    assert asked == ["t1", "down", "t1"]


def test_the_gateway_tries_the_best_scored_fallback_first_and_records_latency() -> None:
    server = fake_anthropic_server()

    def respond(request: dict[str, Any]) -> Reply:
        model = request["json"]["model"]
        if model == "good":
            return Reply(200, anthropic_message(model="good"))
        return anthropic_error(404, "not_found_error", f"model: {model}")
    server.respond = respond
    agent = DispatchedAgent(name="a", provider="anthropic", model="retired", fallback_order="by_score",
                            fallbacks=[{"provider": "anthropic", "model": "broken"},
                                       {"provider": "anthropic", "model": "good"}])
    failures: list[CallFailure] = []

    async def fetch(tenant: str) -> list[dict[str, Any]]:
        return [{"provider": "anthropic", "model": "broken", "attempts": 4, "successes": 0, "answered": 0,
                 "cost_usd": "0"},
                {"provider": "anthropic", "model": "good", "attempts": 4, "successes": 4, "answered": 4,
                 "cost_usd": "0.01"}]

    with serve(server) as running:
        gateway = Gateway({"anthropic": lambda: AnthropicProvider("test-key", running.url)},
                          retry=RetryPolicy(max_retries=0), scores=Scoreboard(fetch))
        request = LlmRequest(agent, "Be brief.", (Turn("user", "Go."),), 1)
        result = asyncio.run(gateway.complete(request, failures.append, "t1"))
        asyncio.run(gateway.aclose())
        declared = asyncio.run(Gateway({"anthropic": lambda: AnthropicProvider("test-key", running.url)},
                                       retry=RetryPolicy(max_retries=0)).complete(request, failures.append, "t1"))
    assert result.model == "good" and result.fallback == 2 and result.latency_ms is not None
    assert [(f.route.model, f.then) for f in failures] == [
        ("retired", "fallback"),  # by score: the broken fallback is not tried
        ("retired", "fallback"), ("broken", "fallback")]  # declared order (no scoreboard): it is
    assert declared.model == "good"
