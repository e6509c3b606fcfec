"""Turn an agent dispatch into LLM calls, and the calls into one result: an output valid against the
node's schema (`node.completed`), the model's request for tools (`node.tools_requested`), or an error
(`node.errored`).

One dispatch may take several calls: the gateway's retries and fallbacks (each failed attempt is an
`llm.call_failed`), a summary of earlier tool turns when the router asks for one, and repair turns when
a reply is not valid (each reply is an `llm.called`). The result carries a note of every call, so the
task's history shows each one. The runner keeps nothing: the conversation so far comes with the dispatch.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Literal

from agent_engine.agent_runner import pricing, structured
from agent_engine.agent_runner.allowance import Allowance
from agent_engine.agent_runner.jsontext import indented
from agent_engine.agent_runner.providers import (
    CallFailure,
    Gateway,
    LlmRequest,
    LlmResult,
    ProviderError,
    ToolCall,
    ToolResult,
    Turn,
)
from agent_engine.agent_runner.providers.base import MAX_TOOL_CALLS
from agent_engine.contracts.artifacts import references
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import (
    ConversationSummary,
    LlmCalled,
    LlmCallFailed,
    LlmCallNote,
    NodeCompleted,
    NodeDispatched,
    NodeToolsRequested,
    RequestedCall,
    ToolTurn,
    Usage,
)
from agent_engine.memory import MemoryUnavailable
from agent_engine.runtime.artifacts import ArtifactError, ArtifactStore
from agent_engine.runtime.runner import errored, result

SOURCE = "agent-engine/agent-runner"
log = logging.getLogger("agent-runner")
Recall = Callable[[Envelope, NodeDispatched], Awaitable[str]]
"""The memory section of a dispatch's prompt ("" when it names no layers or nothing is saved)."""

TOOL_USE = ("You may call the tools you are offered; each call's result comes back to you in the next "
            "message. When you have what you need, give your final reply.")
Outcome = Literal["valid", "invalid", "tool_use", "summary"]
SUMMARY_SYSTEM = "You write short, faithful summaries of the tool use of an agent, for that agent to continue from."


def build_request(dispatch: NodeDispatched, memory: str = "", summary: ConversationSummary | None = None,
                  skip: int = 0) -> LlmRequest:
    """The conversation for this dispatch: the task's prompt, then the node's earlier tool turns (after
    `skip` of them, which `summary` stands for), each as the model's calls and the user turn of results."""
    agent = dispatch.agent
    assert agent is not None
    system = agent.system
    if agent.tool_defs:
        system += "\n\n" + TOOL_USE
    if agent.output_schema_json:
        system += ("\n\nReply with one JSON object and nothing else. It must be valid against this "
                   "JSON Schema:\n" + structured.compiled(agent.output_schema_json).text)
    context = dispatch.context
    prompt = (f"{agent.prompt}\n\nTask input:\n{indented(context.input)}\n\n"
              f"Outputs of earlier steps:\n{indented(context.upstream)}")
    if context.merged is not None:
        prompt += f"\n\nThe outputs you are to merge into one:\n{indented(context.merged)}"
    if context.feedback is not None:
        prompt += (f"\n\nThis is revision {context.revision}. A reviewer sent your previous work back with this "
                   f"feedback; address it:\n{indented(context.feedback)}")
    if memory:
        prompt += "\n\n" + memory
    summary = summary or context.summary
    if summary is not None:
        prompt += f"\n\nSummary of your first {summary.turns} tool turn(s), written by you earlier:\n{summary.text}"
    turns = [Turn("user", prompt)]
    for turn in (context.conversation or [])[skip:]:
        turns += tool_turn(turn)
    number = dispatch.turn or 0
    allow = bool(agent.tool_defs) and number < agent.max_tool_turns
    if agent.tool_defs and not allow:
        last = turns[-1]
        turns[-1] = replace(last, content=(last.content + "\n\n" if last.content else "") + (
            f"You have used all {agent.max_tool_turns} tool turns: give your final reply now, without calling tools."))
    return LlmRequest(agent, system.strip(), tuple(turns), dispatch.attempt, tools=tuple(agent.tool_defs or ()),
                      allow_tools=allow, turn=number, task_input=context.input)


async def with_content(store: ArtifactStore, tenant: str, dispatch: NodeDispatched) -> NodeDispatched:
    """The dispatch with each artifact reference in its context (upstream outputs, merged outputs, feedback,
    tool results) replaced by the content: the model reads the content, the router only ever held references."""
    context = dispatch.context
    if not references([context.upstream, context.merged, context.feedback, context.input,
                       [s.output for t in context.conversation or [] for s in t.calls]]):
        return dispatch
    turns = None if context.conversation is None else [
        turn.model_copy(update={"calls": [step.model_copy(update={"output": await store.resolve(tenant, step.output)})
                                          for step in turn.calls]}) for turn in context.conversation]
    fields = {name: await store.resolve(tenant, getattr(context, name))
              for name in ("input", "upstream", "merged", "feedback")}
    return dispatch.model_copy(update={"context": context.model_copy(update={**fields, "conversation": turns})})


def tool_turn(turn: ToolTurn) -> list[Turn]:
    """A recorded tool turn as two messages: the model's calls, and their results (refusals are errors too)."""
    calls = tuple(ToolCall(c.call_id, c.tool, c.args) for c in turn.calls)
    results = tuple(ToolResult(c.call_id, json.dumps(c.output) if c.output is not None else c.error or "no result",
                               is_error=c.output is None) for c in turn.calls)
    return [Turn("assistant", turn.thought, tool_calls=calls), Turn("user", "", tool_results=results)]


def summary_request(dispatch: NodeDispatched, count: int) -> LlmRequest:
    """A side request: summarise the first `count` turns of the conversation (and the summary before them)."""
    assert dispatch.agent is not None
    context = dispatch.context
    text = ("Summarise the tool use below for yourself: what you looked up or did, what each call returned "
            "that matters for the task, and any errors. Keep facts, names and numbers; drop repetition. "
            "Reply with the summary only.\n\n")
    if context.summary is not None:
        text += f"Summary of the turns before these:\n{context.summary.text}\n\n"
    turns = [t.model_dump(exclude_none=True) for t in (context.conversation or [])[:count]]
    text += "Tool turns:\n" + indented(turns)
    return LlmRequest(dispatch.agent, SUMMARY_SYSTEM, (Turn("user", text),), dispatch.attempt,
                      turn=dispatch.turn or 0, purpose="summary")


class AgentRunner:
    def __init__(self, gateway: Gateway, memory: Recall | None = None, artifacts: ArtifactStore | None = None) -> None:
        self.gateway = gateway
        self.memory = memory
        self.artifacts = artifacts
        """Fetches the content of artifact references in a dispatch's context (docs/observability.md)."""

    async def handle(self, cause: Envelope, dispatch: NodeDispatched) -> list[Envelope]:
        agent = dispatch.agent
        if agent is None:
            return [errored(cause, SOURCE, dispatch, "agent dispatch carries no agent", retryable=False)]
        started = time.perf_counter()
        events: list[Envelope] = []
        notes: list[LlmCallNote] = []
        turn = dispatch.turn or 0

        def record_failure(failure: CallFailure) -> None:
            data = failed_call(dispatch, failure, turn)
            events.append(result(cause, SOURCE, data, f"llm-failed/{len(events)}"))
            notes.append(LlmCallNote(provider=data.provider, model=data.model, outcome="failed", repair=data.repair,
                                     fallback=data.fallback, problem=data.message, error_class=data.error_class,
                                     status=data.status, then=data.then, delay_s=data.delay_s))

        allowance = Allowance(dispatch.budget_usd, pricing.active(), [r.model for r in self.gateway.chain(agent)])

        def record_call(request: LlmRequest, llm: LlmResult, outcome: Outcome, problem: str | None,
                        suffix: str) -> None:
            data = called(dispatch, request, llm, outcome, problem)
            allowance.spend(data.cost_usd)
            events.append(result(cause, SOURCE, data, suffix))
            notes.append(LlmCallNote(provider=data.provider, model=data.model, outcome=outcome,
                                     repair=data.repair, fallback=data.fallback, usage=data.usage,
                                     cost_usd=data.cost_usd, problem=problem))

        def fail(error: str, retryable: bool) -> list[Envelope]:
            events.append(errored(cause, SOURCE, dispatch, error, retryable=retryable, llm_calls=notes))
            return events

        unusable = structured.schema_problem(agent.output_schema_json)
        if unusable:
            return fail(unusable, False)
        if self.artifacts is not None:
            try:
                dispatch = await with_content(self.artifacts, cause.tenant, dispatch)
            except ArtifactError as exc:  # gone (the tenant was erased) or damaged: trying again cannot help
                return fail(f"an upstream artifact could not be read: {exc}", False)
        view = dispatch.context.memory
        try:
            memory = await self.memory(cause, dispatch) if self.memory and view else ""
        except MemoryUnavailable as exc:  # the router retries with the node's backoff; nothing was called
            return fail(f"memory layers {view.layers if view else []} could not be read: {exc}", True)
        spent = Usage()
        summary, skip = None, dispatch.context.summarise or 0
        if skip:
            ask = summary_request(dispatch, skip)
            refused = allowance.refusal(ask)
            if refused:
                return fail(refused, False)
            try:
                llm = await self.gateway.complete(ask, record_failure, cause.tenant)
            except ProviderError as exc:
                return fail(f"summarising the first {skip} tool turn(s) failed: {exc}", exc.retryable)
            record_call(ask, llm, "summary", None, "llm-summary")
            spent += llm.usage
            done = dispatch.context.summary.turns if dispatch.context.summary else 0
            summary = ConversationSummary(turns=done + skip, text=llm.text.strip() or "(the model wrote no summary)")
        request = build_request(dispatch, memory, summary, skip)
        while True:
            refused = await self.over_budget(dispatch, request) or allowance.refusal(request)  # again before
            if refused:  # each repair: the prompt grew
                return fail(refused, False)
            try:
                llm = await self.gateway.complete(request, record_failure, cause.tenant)
            except ProviderError as exc:
                return fail(str(exc), exc.retryable)
            spent += llm.usage
            suffix = "llm" if request.repair == 0 else f"llm/{request.repair}"
            unreadable = next((c.problem for c in llm.tool_calls if c.problem), None)
            if len(llm.tool_calls) > MAX_TOOL_CALLS:
                unreadable = (f"the reply asks for {len(llm.tool_calls)} tool calls; at most {MAX_TOOL_CALLS} may be "
                              "asked for in one turn")
            if llm.tool_calls and request.allow_tools and unreadable is None:
                record_call(request, llm, "tool_use", None, suffix)
                events.append(result(cause, SOURCE, NodeToolsRequested(
                    dispatch_id=dispatch.dispatch_id, node=dispatch.node, attempt=dispatch.attempt, turn=turn,
                    thought=llm.text, calls=[RequestedCall(id=c.id, name=c.name, args=c.input) for c in llm.tool_calls],
                    provider=llm.provider, model=llm.model, usage=spent, llm_calls=notes, summary=summary,
                    duration_ms=elapsed(started)), "tools"))
                return events
            problem: str | None
            if unreadable is not None:
                output, problem = None, unreadable
            elif llm.tool_calls:
                why = (f"no tool turns are left (max_tool_turns = {agent.max_tool_turns})" if agent.tool_defs
                       else "this agent has no tools")
                output, problem = None, f"{why}: give your final reply without calling tools"
            else:
                output, problem = structured.check(llm.text, agent.output_schema_json)
            record_call(request, llm, "valid" if problem is None else "invalid", problem, suffix)
            if problem is None and output is not None:
                break
            assert problem is not None
            if request.repair >= agent.max_repairs:
                return fail(problem + after_repairs(request.repair), True)
            request = request.repaired(llm.text, problem)
        events.append(result(cause, SOURCE, NodeCompleted(
            dispatch_id=dispatch.dispatch_id, node=dispatch.node, attempt=dispatch.attempt, output=output,
            provider=llm.provider, model=llm.model, usage=spent, duration_ms=elapsed(started), llm_calls=notes),
            "completed"))
        log.debug("node %s attempt %d turn %d done by %s/%s after %d repairs", dispatch.node, dispatch.attempt,
                  turn, llm.provider, llm.model, request.repair)
        return events

    async def over_budget(self, dispatch: NodeDispatched, request: LlmRequest) -> str:
        """Why the prompt may not be sent: over the node's token budget, counted exactly where the provider
        can count (Anthropic), else estimated ("" when within it, or when there is no budget)."""
        budget = dispatch.context.token_budget
        if budget is None:
            return ""
        count, how = await self.gateway.count_tokens(request)
        if count <= budget:
            return ""
        return (f"the prompt for node '{dispatch.node}' is {count} tokens ({how}), over its budget "
                f"sees.max_tokens = {budget}")


def called(dispatch: NodeDispatched, request: LlmRequest, llm: LlmResult, outcome: Outcome,
           problem: str | None) -> LlmCalled:
    price = pricing.cost(llm.model, llm.usage)
    return LlmCalled(dispatch_id=dispatch.dispatch_id, node=dispatch.node, provider=llm.provider, model=llm.model,
                     usage=llm.usage, cost_usd=str(price) if price is not None else "unpriced",
                     price_table=pricing.active().version, repair=request.repair, fallback=llm.fallback,
                     outcome=outcome, problem=problem, turn=request.turn, agent=request.agent.name or None,
                     latency_ms=llm.latency_ms)


def failed_call(dispatch: NodeDispatched, failure: CallFailure, turn: int = 0) -> LlmCallFailed:
    error = failure.error
    return LlmCallFailed(dispatch_id=dispatch.dispatch_id, node=dispatch.node, provider=failure.route.provider,
                         model=failure.route.model, error_class=error.error_class, message=str(error)[:500],
                         status=error.status, retry_after_s=error.retry_after_s, call=failure.call,
                         repair=failure.repair, fallback=failure.route.position, then=failure.then,
                         delay_s=failure.delay_s, turn=turn,
                         agent=(dispatch.agent.name if dispatch.agent else None) or None)


def after_repairs(n: int) -> str:
    return f" (after {n} repair{'s' if n > 1 else ''})" if n else ""


def elapsed(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)

