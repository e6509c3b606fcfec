"""The injection classifier: where a tenant's policy sets `input.classifier`, a request the rule set let through is
also judged by a model, asked through the agent-runner's gateway (`aerpc.agent-runner.judge`). A score at or over
the threshold refuses the request naming rule `injection.classifier` and the score, never the text.

The decision is pure (`decide`): the reply (or why there is none) in, the verdict out. `classified` does the I/O.
The model sees the input as redacted: matched PII never leaves guardrails for a model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from agent_engine.contracts.events.guardrails import RuleHit
from agent_engine.contracts.subjects import AGENT_RUNNER_RPC, rpc_subject
from agent_engine.guardrails.checks import Verdict
from agent_engine.guardrails.inputpolicy import ClassifierSpec

log = logging.getLogger("guardrails")
SUBJECT = rpc_subject(AGENT_RUNNER_RPC, "judge")
RULE = "injection.classifier"
UNAVAILABLE = "injection.classifier-unavailable"
"""Recorded when the classifier gave no usable answer (a timeout, an error, an invalid reply)."""


def question(spec: ClassifierSpec, tenant: str, verdict: Verdict) -> dict[str, Any]:
    """The judge request for a verdict the rule set accepted: its redacted input, its tenant and task."""
    assert verdict.envelope is not None
    agent = {"provider": spec.provider, "model": spec.model, "prompt": spec.prompt, "max_tokens": spec.max_tokens,
             "mock_responses": spec.mock_responses}
    return {"purpose": "classify", "tenant": tenant, "task_id": verdict.envelope.task_id,
            "call_id": verdict.envelope.id, "agent": agent, "text": verdict.redacted_input}


def score_of(reply: Any) -> tuple[float | None, str]:
    """(the score, "") from a reply; (None, why not) for an error or a reply without a score in 0..1."""
    if not isinstance(reply, dict):
        return None, "the classifier's reply is not a JSON object"
    if "error" in reply:
        return None, str(reply["error"])[:300]
    score = reply.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        return None, "the classifier's reply has no score between 0 and 1"
    return float(score), ""


def decide(spec: ClassifierSpec, verdict: Verdict, reply: Any) -> Verdict:
    """The verdict after the classifier's `reply` (None: no answer in time). Only ever refuses: a request the
    rule set refused is not asked about."""
    score, problem = score_of(reply) if reply is not None else (None, f"no answer within {spec.timeout_s:g} s")
    if score is None:
        hits = [*verdict.rules, RuleHit(rule=UNAVAILABLE)]
        if spec.on_error == "allow":
            return replace(verdict, rules=hits)
        return replace(verdict, rules=hits, reason=(
            f"the injection classifier could not judge this request ({problem}) and the policy says on_error: "
            "refuse; the request was not run"))
    score = round(score, 4)
    if score < spec.threshold:
        return verdict
    hits = [h for h in verdict.rules if not h.rule.startswith("pii.")] + [RuleHit(rule=RULE, score=score)]
    return replace(verdict, rules=hits, score=score, reason=(
        f"the input looks like a prompt injection to the classifier (score {score:g}, at or over the "
        f"{spec.threshold:g} threshold): {RULE}; the request was not run"))


async def ask(nc: Client, asked: dict[str, Any], timeout_s: float, who: str) -> Any:
    """The agent-runner's answer to a judge query (the classifier's or the grounding judge's): its JSON, None when
    none came in time, or {"error": ...} when it could not be asked."""
    try:
        msg = await nc.request(SUBJECT, json.dumps(asked).encode(), timeout=timeout_s)
        return json.loads(msg.data)
    except TimeoutError:
        return None
    except Exception as exc:  # noqa: BLE001  no responders, a closed connection, a reply that is no JSON
        return {"error": f"{who} could not be asked ({type(exc).__name__})"}


async def classified(nc: Client, spec: ClassifierSpec | None, tenant: str, verdict: Verdict) -> Verdict:
    """Ask the classifier about a request the other checks accepted (unchanged when no classifier is set)."""
    if spec is None or not verdict.accepted or verdict.envelope is None:
        return verdict
    reply = await ask(nc, question(spec, tenant, verdict), spec.timeout_s, "the classifier")
    decided = decide(spec, verdict, reply)
    if any(h.rule == UNAVAILABLE for h in decided.rules):
        log.warning("the injection classifier of tenant %s gave no answer for task %s (on_error: %s)", tenant,
                    verdict.envelope.task_id, spec.on_error)
    return decided


async def still_working(msg: Msg) -> None:
    """Restart the message's ack timer before a model is asked, so the whole AE_ACK_WAIT_S is left for the
    question (a timeout_s over it would let JetStream redeliver the message mid-question: the answer is
    de-duplicated, a second model call is not). Best effort: a connection that is down fails the answer anyway."""
    try:
        await msg.in_progress()
    except Exception as exc:  # noqa: BLE001
        log.debug("could not mark a message in progress: %s", exc)
