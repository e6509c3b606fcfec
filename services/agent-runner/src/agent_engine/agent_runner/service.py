"""Turn an agent dispatch into LLM calls, a schema-checked output and priced usage records.

One dispatch may take several calls: the gateway's retries and fallbacks (each failed attempt is an
`llm.call_failed`), and repair turns when a reply is not valid (each reply is an `llm.called`).
"""

from __future__ import annotations

import json
import logging
import time

from agent_engine.agent_runner import pricing, structured
from agent_engine.agent_runner.providers import CallFailure, Gateway, LlmRequest, LlmResult, ProviderError, Turn
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import LlmCalled, LlmCallFailed, NodeCompleted, NodeDispatched, Usage
from agent_engine.runtime.runner import errored, result

SOURCE = "agent-engine/agent-runner"
log = logging.getLogger("agent-runner")


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
    return LlmRequest(agent, system.strip(), (Turn("user", prompt),), dispatch.attempt)


class AgentRunner:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def handle(self, cause: Envelope, dispatch: NodeDispatched) -> list[Envelope]:
        agent = dispatch.agent
        if agent is None:
            return [errored(cause, SOURCE, dispatch, "agent dispatch carries no agent", retryable=False)]
        started = time.perf_counter()
        events: list[Envelope] = []

        def record_failure(failure: CallFailure) -> None:
            events.append(result(cause, SOURCE, failed_call(dispatch, failure), f"llm-failed/{len(events)}"))

        request = build_request(dispatch)
        spent = Usage()
        while True:
            try:
                llm = await self.gateway.complete(request, record_failure)
            except ProviderError as exc:
                events.append(errored(cause, SOURCE, dispatch, str(exc), retryable=exc.retryable))
                return events
            output, problem = structured.check(llm.text, agent.output_schema_json)
            spent = add(spent, llm.usage)
            events.append(result(cause, SOURCE, called(dispatch, request, llm, problem),
                                 "llm" if request.repair == 0 else f"llm/{request.repair}"))
            if problem is None and output is not None:
                break
            assert problem is not None
            if request.repair >= agent.max_repairs:
                events.append(errored(cause, SOURCE, dispatch, problem + after_repairs(request.repair),
                                      retryable=True))
                return events
            request = request.repaired(llm.text, problem)
        events.append(result(cause, SOURCE, NodeCompleted(
            dispatch_id=dispatch.dispatch_id, node=dispatch.node, attempt=dispatch.attempt, output=output,
            provider=llm.provider, model=llm.model, usage=spent,
            duration_ms=round((time.perf_counter() - started) * 1000, 2)), "completed"))
        log.debug("node %s attempt %d done by %s/%s after %d repairs", dispatch.node, dispatch.attempt,
                  llm.provider, llm.model, request.repair)
        return events


def called(dispatch: NodeDispatched, request: LlmRequest, llm: LlmResult, problem: str | None) -> LlmCalled:
    price = pricing.cost(llm.model, llm.usage)
    return LlmCalled(dispatch_id=dispatch.dispatch_id, node=dispatch.node, provider=llm.provider, model=llm.model,
                     usage=llm.usage, cost_usd=str(price) if price is not None else "unpriced",
                     price_table=pricing.active().version, repair=request.repair, fallback=llm.fallback,
                     outcome="valid" if problem is None else "invalid", problem=problem)


def failed_call(dispatch: NodeDispatched, failure: CallFailure) -> LlmCallFailed:
    error = failure.error
    return LlmCallFailed(dispatch_id=dispatch.dispatch_id, node=dispatch.node, provider=failure.route.provider,
                         model=failure.route.model, error_class=error.error_class, message=str(error)[:500],
                         status=error.status, retry_after_s=error.retry_after_s, call=failure.call,
                         repair=failure.repair, fallback=failure.route.position, then=failure.then,
                         delay_s=failure.delay_s)


def after_repairs(n: int) -> str:
    return f" (after {n} repair{'s' if n > 1 else ''})" if n else ""


def add(a: Usage, b: Usage) -> Usage:
    return Usage(input_tokens=a.input_tokens + b.input_tokens, output_tokens=a.output_tokens + b.output_tokens,
                 cache_read_tokens=a.cache_read_tokens + b.cache_read_tokens,
                 cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens)
