"""Consume task.requested; publish task.accepted (redacted) or task.rejected (with the reason), then delete
the raw request from the stream: its unredacted input is kept nowhere past this gate (docs/data-lifecycle.md)."""

from __future__ import annotations

import asyncio
import logging
import os
import re

from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from agent_engine.contracts.binding import structured_body
from agent_engine.contracts.envelope import TASK_ID_MAX, TENANT_PATTERN, Envelope, caused_by, command, derive_id
from agent_engine.contracts.events import TaskAccepted, TaskRejected
from agent_engine.contracts.manifest import WORKFLOW_NAME_PATTERN
from agent_engine.contracts.subjects import STREAM, consume_subjects, tenant_from_subject
from agent_engine.guardrails.checks import PATTERNS, Policy, Verdict, check
from agent_engine.runtime.bus import TASK_ID_HEADER, Bus
from agent_engine.runtime.inbox import refuse, settle
from agent_engine.runtime.settings import Settings, env_int

SOURCE = "agent-engine/guardrails"
log = logging.getLogger("guardrails")


def policy_from_env() -> Policy:
    raw = os.environ.get("AE_GUARDRAILS_REDACT", "email,phone").strip()
    kinds = tuple(k.strip() for k in raw.split(",") if k.strip() and raw != "none")
    unknown = [k for k in kinds if k not in PATTERNS]
    if unknown:
        raise SystemExit(f"AE_GUARDRAILS_REDACT names unknown kinds {unknown}; known: {sorted(PATTERNS)} or 'none'")
    return Policy(max_bytes=env_int("AE_GUARDRAILS_MAX_BYTES", 1024 * 1024), redact=kinds)


def decide(msg_subject: str, raw: bytes, headers: dict[str, str], seq: int, policy: Policy) -> Envelope | None:
    """The event answering one request; None when not even a tenant can be named (dead-letter it).
    Never raises on what a sender put in the request: every other request gets an answer."""
    tenant = tenant_from_subject(msg_subject)
    if tenant is None or not re.fullmatch(TENANT_PATTERN, tenant):
        return None
    try:
        verdict = check(structured_body(raw, headers), msg_subject, policy)  # binary mode read as structured
    except Exception as exc:  # a check that fails on some input must still answer the sender
        log.exception("checking a request on %s failed", msg_subject)
        verdict = Verdict(reason=f"guardrails could not check this request ({type(exc).__name__}); it was not run")
    cause = verdict.envelope
    task_id, problem = _task_id(cause, headers, seq)
    cause_id = cause.id if cause else derive_id("raw-request", msg_subject, seq)
    correlation_id = cause.correlation_id if cause else task_id
    if verdict.accepted and verdict.request is not None:
        data = TaskAccepted(workflow=verdict.request.workflow, input=verdict.redacted_input,
                            redactions=verdict.redactions, idempotency_key=verdict.request.idempotency_key,
                            requested_by=verdict.request.requested_by, priority=verdict.request.priority,
                            data_subject=verdict.request.data_subject, budget_usd=verdict.request.budget_usd)
        return _answer(cause, cause_id, data, tenant, task_id, correlation_id)
    workflow = cause.data.get("workflow") if cause else None
    data_r = TaskRejected(reason=(verdict.reason or "rejected") + problem, stage="guardrails",
                          workflow=workflow if isinstance(workflow, str) and WORKFLOW_NAME.match(workflow) else None)
    return _answer(cause, cause_id, data_r, tenant, task_id, correlation_id)


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
    so a redelivered request gets the same answer, which JetStream drops as a duplicate."""
    answer_id = derive_id(cause_id, "accepted" if isinstance(data, TaskAccepted) else "rejected")
    if cause is not None:  # the subject's tenant, not the envelope's: the only one the sender may publish to
        return caused_by(cause, data, id=answer_id, source=SOURCE, tenant=tenant)
    return command(data, id=answer_id, source=SOURCE, tenant=tenant, task_id=task_id, correlation_id=correlation_id,
                   causation_id=cause_id)


async def _delete(bus: Bus, seq: int) -> None:
    try:
        await bus.js.delete_msg(STREAM, seq)
    except NotFoundError:  # deleted already (a redelivery), or aged out
        pass


async def serve(bus: Bus, policy: Policy, settings: Settings, stop: asyncio.Event) -> None:
    async def handle_one(msg: Msg) -> None:
        seq = msg.metadata.sequence.stream if msg.metadata else 0
        answer = decide(msg.subject, msg.data, dict(msg.headers or {}), seq, policy)
        if answer is None:
            await refuse(bus, msg, f"subject {msg.subject} names no valid tenant")
            return
        try:
            await bus.publish(answer)
            if seq:  # answered: the raw request goes (a redelivery re-publishes the same answer, a duplicate)
                await _delete(bus, seq)
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
