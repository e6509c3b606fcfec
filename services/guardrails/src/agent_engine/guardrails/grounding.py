"""The grounding judge of the output gate: where the output policy sets `judge` (the workflow's `policy.output`
or the tenant's `output` section), an agent node's output the other output checks let through is judged by a
model, asked through the agent-runner's gateway (`aerpc.agent-runner.judge`, purpose `ground`), against the
inputs the node was given. An output judged ungrounded fails the node or waits for a person (rule
`judge.grounding`, with the score; never the text).

The decision is pure (`decide`; two policies' judges combine in outputs.stricter_judge); `judged` does the I/O.
The judge sees the output as redacted. In a task with a budget the judge may spend only what the node's calls
left of the node's reservation (`allowance_of`), and its call is listed with the node's, so the router settles
both against that reservation (docs/guardrails.md, Budgets).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

from nats.aio.client import Client
from pydantic import ValidationError

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import LlmCallNote, NodeOutputProduced, RuleHit
from agent_engine.contracts.policy import JudgeRule
from agent_engine.guardrails.classifier import ask
from agent_engine.guardrails.outputs import OutputVerdict

log = logging.getLogger("guardrails.output")
RULE = "judge.grounding"
UNAVAILABLE = "judge.grounding-unavailable"
"""Recorded when the judge gave no usable answer (a timeout, an error, a reply off its schema)."""


def question(rule: JudgeRule, cause: Envelope, output: dict[str, Any], inputs: dict[str, Any],
             allowance: str | None = None) -> dict[str, Any]:
    agent = {"provider": rule.provider, "model": rule.model, "prompt": rule.prompt, "max_tokens": rule.max_tokens,
             "mock_responses": rule.mock_responses}
    asked = {"purpose": "ground", "tenant": cause.tenant, "task_id": cause.task_id, "call_id": cause.id,
             "agent": agent, "text": {"output": output, "inputs": inputs}}
    return asked if allowance is None else {**asked, "budget_usd": allowance}


def allowance_of(produced: NodeOutputProduced) -> str | None:
    """What the judge may spend: the node's reservation less what its calls cost (None: the task has no budget).
    A call the runner could not price leaves nothing, as the router then counts the whole reservation spent."""
    if produced.budget_usd is None:
        return None
    try:
        left = Decimal(produced.budget_usd)
        for call in produced.llm_calls or []:
            if call.cost_usd is not None:
                left -= Decimal(call.cost_usd)  # "unpriced" raises: nothing is left
    except InvalidOperation:
        return "0"
    return format(max(left, Decimal(0)).normalize(), "f")


def call_of(reply: Any) -> list[LlmCallNote]:
    """The judge's call as the agent-runner described it in its reply (none when no call was made)."""
    try:
        return [LlmCallNote.model_validate(reply["call"])] if isinstance(reply, dict) and "call" in reply else []
    except ValidationError:
        return []


def grounding_of(reply: Any) -> tuple[tuple[bool, float] | None, str]:
    """((grounded, score), "") from a reply; (None, why not) for an error or a reply off the schema."""
    if not isinstance(reply, dict):
        return None, "the judge's reply is not a JSON object"
    if "error" in reply:
        return None, str(reply["error"])[:300]
    grounded, score = reply.get("grounded"), reply.get("score")
    if not isinstance(grounded, bool) or isinstance(score, bool) or not isinstance(score, int | float) \
            or not 0 <= score <= 1:
        return None, "the judge's reply has no `grounded` true/false and `score` between 0 and 1"
    return (grounded, round(float(score), 4)), ""


def decide(rule: JudgeRule, verdict: OutputVerdict, reply: Any) -> OutputVerdict:
    """The output verdict after the judge's `reply` (None: no answer in time)."""
    found, problem = grounding_of(reply) if reply is not None else (None, f"no answer within {rule.timeout_s:g} s")
    if found is None:
        hits = [*verdict.rules, RuleHit(rule=UNAVAILABLE)]
        why = f"the grounding judge could not judge this output ({problem}; on_error: {rule.on_error})"
        return _acting(rule.on_error, verdict, hits, why)
    grounded, score = found
    if grounded and score >= rule.below:
        return verdict
    hits = [*verdict.rules, RuleHit(rule=RULE, score=score)]
    why = (f"the grounding judge found the output not grounded in the node's inputs (grounded: "
           f"{str(grounded).lower()}, score {score:g}, ungrounded below {rule.below:g}): {RULE}")
    return _acting(rule.action, verdict, hits, why)


def _acting(action: str, verdict: OutputVerdict, hits: list[RuleHit], why: str) -> OutputVerdict:
    earlier = f"; {verdict.reason}" if verdict.reason else ""
    if action == "fail":
        return OutputVerdict("refused", None, hits, f"output refused by guardrails: {why}{earlier}")
    if action == "pause":
        return OutputVerdict("paused", verdict.output, hits, f"output held for a person by guardrails: {why}{earlier}")
    return replace(verdict, rules=hits)  # allow: the other checks' word stands, the missing answer recorded


async def judged(nc: Client, rule: JudgeRule | None, cause: Envelope, produced: NodeOutputProduced,
                 verdict: OutputVerdict) -> OutputVerdict:
    """Ask the judge about an agent node's output the other checks did not refuse (unchanged when no judge is
    set, for a tool node's output, or when its inputs were too large to copy: judged on the output alone)."""
    if rule is None or verdict.outcome == "refused" or verdict.output is None or not produced.llm_calls:
        # no model call behind it: a tool's output is what the tool returned, with nothing to be grounded in
        return verdict
    inputs = produced.inputs if produced.inputs is not None else {"note": "the node's inputs were too large to send"}
    asked = question(rule, cause, verdict.output, inputs, allowance_of(produced))
    reply = await ask(nc, asked, rule.timeout_s, "the judge")
    decided = replace(decide(rule, verdict, reply), calls=call_of(reply))
    if any(h.rule == UNAVAILABLE for h in decided.rules):
        log.warning("the grounding judge gave no answer for node %s of task %s (on_error: %s)", produced.node,
                    cause.task_id, rule.on_error)
    return decided
