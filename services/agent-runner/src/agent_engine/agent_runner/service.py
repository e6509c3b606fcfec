"""Turn an agent dispatch into an LLM call, a schema-checked output and a priced usage record."""

from __future__ import annotations

import json
import logging
import os
import time

import jsonschema

from agent_engine.agent_runner import pricing
from agent_engine.agent_runner.providers import (
    MOCK,
    AnthropicProvider,
    LlmRequest,
    MockProvider,
    Provider,
    ProviderError,
)
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import LlmCalled, NodeCompleted, NodeDispatched
from agent_engine.runtime.runner import errored, result
from agent_engine.runtime.settings import env_float

SOURCE = "agent-engine/agent-runner"
log = logging.getLogger("agent-runner")


class Gateway:
    """Chooses the provider for an agent: `mock`, `anthropic`, or `auto` (Anthropic when a key is set)."""

    def __init__(self, force: str = "", api_key: str = "", base_url: str | None = None,
                 mock_delay_s: float = 0.0) -> None:
        self.force = force
        self.mock = MockProvider(mock_delay_s)
        self.anthropic = AnthropicProvider(api_key, base_url) if api_key else None

    @classmethod
    def from_env(cls) -> Gateway:
        return cls(os.environ.get("AE_PROVIDER", ""), os.environ.get("ANTHROPIC_API_KEY", ""),
                   os.environ.get("ANTHROPIC_BASE_URL") or None, env_float("AE_MOCK_DELAY_S", 0.0))

    def pick(self, wanted: str) -> Provider:
        wanted = self.force or wanted
        if wanted == MOCK or (wanted == "auto" and self.anthropic is None):
            return self.mock
        if self.anthropic is None:
            raise ProviderError("agent wants provider 'anthropic' but ANTHROPIC_API_KEY is not set "
                                "in the agent-runner's environment", retryable=False)
        return self.anthropic


def build_request(dispatch: NodeDispatched) -> LlmRequest:
    agent = dispatch.agent
    assert agent is not None
    system = agent.system
    if agent.output_schema_json:
        system += ("\n\nReply with one JSON object and nothing else. It must be valid against this "
                   "JSON Schema:\n" + json.dumps(agent.output_schema_json, indent=1))
    context = dispatch.context
    prompt = (f"{agent.prompt}\n\nTask input:\n{json.dumps(context.input, indent=1)}\n\n"
              f"Outputs of earlier steps:\n{json.dumps(context.upstream, indent=1)}")
    if context.merged is not None:
        prompt += f"\n\nThe outputs you are to merge into one:\n{json.dumps(context.merged, indent=1)}"
    if context.feedback is not None:
        prompt += (f"\n\nThis is revision {context.revision}. A reviewer sent your previous work back with this "
                   f"feedback; address it:\n{json.dumps(context.feedback, indent=1)}")
    return LlmRequest(agent, system.strip(), prompt, dispatch.attempt)


class AgentRunner:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def handle(self, cause: Envelope, dispatch: NodeDispatched) -> list[Envelope]:
        if dispatch.agent is None:
            return [errored(cause, SOURCE, dispatch, "agent dispatch carries no agent", retryable=False)]
        started = time.perf_counter()
        try:
            provider = self.gateway.pick(dispatch.agent.provider)
            llm = await provider.complete(build_request(dispatch))
        except ProviderError as exc:
            return [errored(cause, SOURCE, dispatch, str(exc), retryable=exc.retryable)]
        price = pricing.cost(llm.model, llm.usage)
        events = [result(cause, SOURCE, LlmCalled(
            dispatch_id=dispatch.dispatch_id, node=dispatch.node, provider=llm.provider, model=llm.model,
            usage=llm.usage, cost_usd=str(price) if price is not None else "unpriced",
            price_table=pricing.PRICE_TABLE_VERSION), "llm")]
        schema = dispatch.agent.output_schema_json
        if schema:
            problems = sorted(jsonschema.Draft202012Validator(schema).iter_errors(llm.output), key=str)
            if problems:
                detail = "; ".join(f"{'/'.join(map(str, p.absolute_path)) or '(root)'}: {p.message}"
                                   for p in problems[:5])
                events.append(errored(cause, SOURCE, dispatch, f"output does not match the node's schema: {detail}",
                                      retryable=True))
                return events
        events.append(result(cause, SOURCE, NodeCompleted(
            dispatch_id=dispatch.dispatch_id, node=dispatch.node, attempt=dispatch.attempt, output=llm.output,
            provider=llm.provider, model=llm.model, usage=llm.usage,
            duration_ms=round((time.perf_counter() - started) * 1000, 2)), "completed"))
        log.debug("node %s attempt %d done by %s/%s", dispatch.node, dispatch.attempt, llm.provider, llm.model)
        return events
