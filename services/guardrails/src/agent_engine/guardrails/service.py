"""Consume task.requested; publish task.accepted (redacted) or task.rejected (with the reason), then delete
the raw request from the stream, overwritten unless its answer carries all of it (overwrite.py): its unredacted
input is kept nowhere past this gate (docs/data-lifecycle.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from dataclasses import replace

from nats.aio.msg import Msg

from agent_engine.contracts.binding import structured_body
from agent_engine.contracts.envelope import TASK_ID_MAX, TENANT_PATTERN, Envelope, caused_by, command, derive_id
from agent_engine.contracts.events import TaskAccepted, TaskRejected
from agent_engine.contracts.events.guardrails import GuardrailVerdict, Outcome, RuleHit
from agent_engine.contracts.manifest import WORKFLOW_NAME_PATTERN
from agent_engine.contracts.subjects import consume_subjects, tenant_from_subject
from agent_engine.guardrails import classifier, inputschema, pii, ratelimit
from agent_engine.guardrails.checks import Policy, Verdict, check
from agent_engine.guardrails.gate import delete_answered
from agent_engine.guardrails.inputpolicy import input_rules
from agent_engine.guardrails.overwrite import must_overwrite
from agent_engine.guardrails.policy import PolicyFile
from agent_engine.guardrails.ratestore import RateStore, RateStoreUnavailable, Refusal
from agent_engine.runtime import tracing
from agent_engine.runtime.bus import TASK_ID_HEADER, Bus
from agent_engine.runtime.inbox import refuse, settle
from agent_engine.runtime.settings import Settings, env_int

SOURCE = "agent-engine/guardrails"
log = logging.getLogger("guardrails")


def policy_from_env(policy_file: PolicyFile | None = None) -> Policy:
    """AE_GUARDRAILS_REDACT (the PII kinds redacted by default) and the policy file's `input:` sections."""
    raw = os.environ.get("AE_GUARDRAILS_REDACT", ",".join(pii.DEFAULT_REDACT)).strip()
    kinds = tuple(k.strip() for k in raw.split(",") if k.strip() and raw != "none")
    unknown = [k for k in kinds if k not in pii.KINDS]
    if unknown:
        raise SystemExit(f"AE_GUARDRAILS_REDACT names unknown kinds {unknown}; known: {sorted(pii.KINDS)} or 'none'")
    defaults, tenants = input_rules(policy_file or PolicyFile(), kinds)
    return Policy(max_bytes=env_int("AE_GUARDRAILS_MAX_BYTES", 1024 * 1024), redact=kinds, input=defaults,
                  tenants=tenants)


def evaluate(msg_subject: str, raw: bytes, headers: dict[str, str], policy: Policy) -> tuple[str, Verdict] | None:
    """The tenant and the checks' verdict on one request; None when not even a tenant can be named (dead-letter
    it). Never raises on what a sender put in the request: every other request gets an answer."""
    tenant = tenant_from_subject(msg_subject)
    if tenant is None or not re.fullmatch(TENANT_PATTERN, tenant):
        return None
    try:
        verdict = check(structured_body(raw, headers), msg_subject, policy)  # binary mode read as structured
    except Exception as exc:  # a check that fails on some input must still answer the sender
        log.exception("checking a request on %s failed", msg_subject)
        verdict = Verdict(reason=f"guardrails could not check this request ({type(exc).__name__}); it was not run")
    return tenant, verdict


def decide(msg_subject: str, raw: bytes, headers: dict[str, str], seq: int, policy: Policy) -> Envelope | None:
    """The event answering one request (without rate limits, which need the bucket); None: dead-letter it."""
    evaluated = evaluate(msg_subject, raw, headers, policy)
    return None if evaluated is None else answers(msg_subject, evaluated[0], evaluated[1], headers, seq)[-1]


def answers(msg_subject: str, tenant: str, verdict: Verdict, headers: dict[str, str], seq: int) -> list[Envelope]:
    """What guardrails publishes for a verdict, in order: the guardrail.verdict event when a rule matched, then
    task.accepted or task.rejected. Every id derives from the request's, so a redelivery publishes duplicates."""
    cause = verdict.envelope
    task_id, problem = _task_id(cause, headers, seq)
    cause_id = cause.id if cause else derive_id("raw-request", msg_subject, seq)
    correlation_id = cause.correlation_id if cause else task_id
    recorded = [_verdict_event(cause, cause_id, verdict, tenant)] if cause is not None and verdict.rules else []
    if verdict.accepted and verdict.request is not None:
        data = TaskAccepted(workflow=verdict.request.workflow, input=verdict.redacted_input,
                            redactions=verdict.redactions, idempotency_key=verdict.request.idempotency_key,
                            requested_by=verdict.request.requested_by, priority=verdict.request.priority,
                            data_subject=verdict.request.data_subject, budget_usd=verdict.request.budget_usd)
        return [*recorded, _answer(cause, cause_id, data, tenant, task_id, correlation_id)]
    data_r = TaskRejected(reason=(verdict.reason or "rejected") + problem, stage="guardrails",
                          workflow=_workflow(cause), retry_after_s=verdict.retry_after_s)
    return [*recorded, _answer(cause, cause_id, data_r, tenant, task_id, correlation_id)]


def _workflow(cause: Envelope | None) -> str | None:
    workflow = cause.data.get("workflow") if cause else None
    return workflow if isinstance(workflow, str) and WORKFLOW_NAME.match(workflow) else None


def _verdict_event(cause: Envelope, cause_id: str, verdict: Verdict, tenant: str) -> Envelope:
    outcome: Outcome = "refused" if not verdict.accepted else "redacted" if verdict.redactions else "allowed"
    reason = verdict.reason or (f"redacted {', '.join(f'{n} {k}' for k, n in sorted(verdict.redactions.items()))}"
                                if verdict.redactions else "allowed: the injection classifier gave no answer "
                                "(on_error: allow)" if any(r.rule == classifier.UNAVAILABLE for r in verdict.rules)
                                else "allowed: under the injection threshold")
    data = GuardrailVerdict(gate="input", outcome=outcome, rules=verdict.rules, reason=reason,
                            workflow=_workflow(cause), score=verdict.score)
    return caused_by(cause, data, id=derive_id(cause_id, "verdict"), source=SOURCE, tenant=tenant)


async def schema_checked(schemas: inputschema.WorkflowSchemas, tenant: str, verdict: Verdict) -> Verdict:
    """The verdict, refused when the workflow declares an input schema the input (as sent) does not match."""
    if not verdict.accepted or verdict.request is None:
        return verdict
    check = await schemas.validator(tenant, verdict.request.workflow)
    found = inputschema.problems(check, verdict.request.input) if check is not None else None
    if found is None:
        return verdict
    return replace(verdict, reason=inputschema.reason(verdict.request.workflow, found),
                   rules=[RuleHit(rule=r, count=n) for r, n in sorted(found.rules.items())])


UNAVAILABLE_RETRY_S = 5.0
"""What a sender is told to wait when the rate-limit bucket cannot be used (the request is refused: fail closed)."""


async def rate_limited(store: RateStore, limits: ratelimit.RateLimits, tenant: str, verdict: Verdict,
                       now: float | None = None) -> Verdict:
    """The verdict, refused when the request is over one of its tenant's, user's or session's limits. Only a
    request the checks let through counts. The answer is recorded (ratestore.py) before it is published: a
    redelivered request gets the answer it got the first time, whenever it comes back."""
    if not verdict.accepted or verdict.request is None or verdict.envelope is None:
        return verdict
    keys = ratelimit.counted(limits.of(tenant), tenant, verdict.request.requested_by, verdict.request.session)
    if not keys:
        return verdict
    request_id = verdict.envelope.id
    try:
        answer = await store.recorded(tenant, request_id)
        if answer is None:
            refusal = await store.admit(keys, request_id, time.time() if now is None else now)
            answer = await store.record(tenant, request_id, _rate_answer(refusal))
    except RateStoreUnavailable as exc:
        log.warning("rate limits of tenant %s cannot be checked (%s): refusing the request", tenant, exc)
        return replace(verdict, reason=("rate limits cannot be checked now (their store is unavailable); the request "
                                        f"was not run; retry after {UNAVAILABLE_RETRY_S:.1f} s"),
                       retry_after_s=UNAVAILABLE_RETRY_S, rules=[RuleHit(rule="rate.unavailable")])
    if answer.get("allowed"):
        return verdict
    return replace(verdict, reason=str(answer["reason"]), retry_after_s=float(answer["retry_after_s"]),
                   rules=[RuleHit(rule=str(answer["rule"]))])


def _rate_answer(refusal: Refusal | None) -> dict[str, object]:
    """What the bucket records of a request's rate-limit answer: let through, or refused with the reason, the
    retry-after and the rule (never the request's content)."""
    if refusal is None:
        return {"allowed": True}
    wait = round(refusal.retry_after_s, 3)
    return {"allowed": False, "reason": ratelimit.reason(refusal.counted.scope, refusal.counted.limit, wait),
            "retry_after_s": wait, "rule": f"rate.{refusal.counted.scope}"}


WORKFLOW_NAME = re.compile(WORKFLOW_NAME_PATTERN)
"""A rejection names the workflow only when it is a workflow name: it never echoes arbitrary input."""


def _task_id(cause: Envelope | None, headers: dict[str, str], seq: int) -> tuple[str, str]:
    """The task id a rejection answers: the envelope's; for a body that is no envelope, the Ae-Task-Id
    header when it is a valid task id; else one derived from the request's stream sequence (and why)."""
    if cause is not None:
        return cause.task_id, ""
    header = headers.get(TASK_ID_HEADER)
    if header and len(header) <= TASK_ID_MAX:
        return header, ""
    fallback = derive_id("request", seq)
    if not header:
        return fallback, ""
    return fallback, (f" (its {TASK_ID_HEADER} header is {len(header)} characters, over the {TASK_ID_MAX} a task id "
                      f"may have, so this rejection names task {fallback})")


def _answer(cause: Envelope | None, cause_id: str, data: TaskAccepted | TaskRejected, tenant: str, task_id: str,
            correlation_id: str) -> Envelope:
    """The answer's id derives from the request's (or, for a body that is no envelope, its stream position),
    so a redelivered request gets the same answer, which JetStream drops as a duplicate. Accepted or rejected,
    it is the same id: a request redelivered after it was answered (guardrails stopped before its ack) may get
    the other answer this time (a rate limit that since freed or filled), and JetStream drops that one too, so
    a sender never sees both."""
    answer_id = derive_id(cause_id, "answer")
    if cause is not None:  # the subject's tenant, not the envelope's: the only one the sender may publish to
        return caused_by(cause, data, id=answer_id, source=SOURCE, tenant=tenant)
    return command(data, id=answer_id, source=SOURCE, tenant=tenant, task_id=task_id, correlation_id=correlation_id,
                   causation_id=cause_id)


def trace_headers(headers: dict[str, str] | None, raw: bytes) -> dict[str, str]:
    """The request's trace context: its NATS headers', else the envelope's `traceparent` attribute (a sender that
    writes the CloudEvent's tracing extension but sets no header). Read only when tracing is on. The sender's
    context, which the task's new trace links (or continues, with AE_TRACE_TRUST_INGRESS=true)."""
    headers = dict(headers or {})
    if not tracing.ENABLED or tracing.TRACEPARENT in headers:
        return headers
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # a hostile body: no context, and the gate refuses it as usual
        return headers
    if isinstance(body, dict) and isinstance(body.get(tracing.TRACEPARENT), str):
        headers[tracing.TRACEPARENT] = body[tracing.TRACEPARENT]
        if isinstance(body.get(tracing.TRACESTATE), str):
            headers[tracing.TRACESTATE] = body[tracing.TRACESTATE]
    return headers


async def serve(bus: Bus, policy: Policy, settings: Settings, stop: asyncio.Event,
                limits: ratelimit.RateLimits | None = None) -> None:
    limits = limits or ratelimit.RateLimits()
    store = await RateStore.open(bus.js) if limits.any else None
    schemas = await inputschema.WorkflowSchemas.open(bus.js)

    async def handle_one(msg: Msg) -> None:
        # the task's trace starts here, a new one linked to the sender's context: a tenant's traceparent never
        # decides which trace the engine's spans join, unless AE_TRACE_TRUST_INGRESS (docs/observability.md)
        with tracing.ingress(trace_headers(msg.headers, msg.data), None, msg.subject):
            await answer_one(msg)

    async def answer_one(msg: Msg) -> None:
        seq = msg.metadata.sequence.stream if msg.metadata else 0
        headers = dict(msg.headers or {})
        evaluated = evaluate(msg.subject, msg.data, headers, policy)
        if evaluated is None:
            await refuse(bus, msg, f"subject {msg.subject} names no valid tenant")
            return
        tenant, verdict = evaluated
        try:
            verdict = await schema_checked(schemas, tenant, verdict)
        except Exception as exc:  # noqa: BLE001  the registry unreadable: redeliver (never run unchecked)
            log.warning("could not read workflow %s of tenant %s from the registry: %s",
                        verdict.request.workflow if verdict.request else "?", tenant, type(exc).__name__)
            await settle(bus, msg, exc, max_deliver=settings.max_deliver)
            return
        if store is not None:
            verdict = await rate_limited(store, limits, tenant, verdict)
        # last: the model costs money, so only a request every other check (the rate limits too) let through
        spec = policy.rules(tenant).classifier
        if spec is not None and verdict.accepted:
            await classifier.still_working(msg)
        verdict = await classifier.classified(bus.nc, spec, tenant, verdict)
        events = answers(msg.subject, tenant, verdict, headers, seq)
        answer = events[-1]
        try:
            for event in events:  # the verdict first: an answer is never seen without the verdict behind it
                await bus.publish(event)
            if seq:  # answered: the raw request goes (a redelivery re-publishes the same answer, a duplicate)
                await delete_answered(bus, seq, overwrite=must_overwrite(msg.data, headers, answer))
        except Exception as exc:  # noqa: BLE001  the bus is down: redeliver (settle dead-letters what keeps failing)
            log.warning("could not publish the answer to a request on %s: %s", msg.subject, exc)
            await settle(bus, msg, exc, max_deliver=settings.max_deliver)
            return
        if answer.type == "task.rejected":
            log.info("rejected task %s: %s", answer.task_id, answer.data.get("reason"))
        await msg.ack()

    async def handle_batch(msgs: list[Msg]) -> None:
        await asyncio.gather(*(handle_one(m) for m in msgs))

    await bus.consume("guardrails", consume_subjects("task.requested"), handle_batch,
                      batch=settings.batch_size, ack_wait=settings.ack_wait_s, stop=stop)
