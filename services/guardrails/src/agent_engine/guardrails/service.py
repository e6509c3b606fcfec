"""Consume task.requested; publish task.accepted (redacted) or task.rejected (with the reason)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from datetime import UTC, datetime

from nats.aio.msg import Msg

from agent_engine.contracts.envelope import TENANT_PATTERN, Envelope, derive_id
from agent_engine.contracts.events import TaskAccepted, TaskRejected
from agent_engine.contracts.subjects import tenant_from_subject, type_subject
from agent_engine.guardrails.checks import PATTERNS, Policy, check
from agent_engine.runtime.bus import TASK_ID_HEADER, Bus, settle
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
    """The event answering one request; None when not even a tenant can be named (dead-letter it)."""
    tenant = tenant_from_subject(msg_subject)
    if tenant is None or not re.match(TENANT_PATTERN, tenant):
        return None
    verdict = check(raw, tenant, policy)
    cause = verdict.envelope
    task_id = cause.task_id if cause else headers.get(TASK_ID_HEADER) or derive_id("request", seq)
    cause_id = cause.id if cause else derive_id("raw-request", msg_subject, seq)
    now = datetime.now(UTC)
    if verdict.accepted and verdict.request is not None:
        data = TaskAccepted(workflow=verdict.request.workflow, input=verdict.redacted_input,
                            redactions=verdict.redactions, idempotency_key=verdict.request.idempotency_key,
                            requested_by=verdict.request.requested_by, priority=verdict.request.priority)
        return _answer(cause_id, "accepted", data, tenant, task_id, cause.correlation_id if cause else task_id, now)
    workflow = cause.data.get("workflow") if cause else None
    data_r = TaskRejected(reason=verdict.reason or "rejected", stage="guardrails",
                          workflow=workflow if isinstance(workflow, str) else None)
    return _answer(cause_id, "rejected", data_r, tenant, task_id, cause.correlation_id if cause else task_id, now)


def _answer(cause_id: str, suffix: str, data: TaskAccepted | TaskRejected, tenant: str, task_id: str,
            correlation_id: str, now: datetime) -> Envelope:
    return Envelope(id=derive_id(cause_id, suffix), source=SOURCE, type=data.TYPE, time=now, tenant=tenant,
                    task_id=task_id[:128], correlation_id=correlation_id, causation_id=cause_id,
                    data=data.model_dump(mode="json", exclude_none=True))


async def serve(bus: Bus, policy: Policy, settings: Settings, stop: asyncio.Event) -> None:
    async def handle_one(msg: Msg) -> None:
        seq = msg.metadata.sequence.stream if msg.metadata else 0
        error = None
        try:
            answer = decide(msg.subject, msg.data, dict(msg.headers or {}), seq, policy)
            if answer is None:
                await bus.dead_letter(msg, "subject names no valid tenant")
            else:
                await bus.publish(answer)
                if answer.type == "task.rejected":
                    log.info("rejected task %s: %s", answer.task_id, answer.data.get("reason"))
        except Exception as exc:
            log.exception("request on %s failed", msg.subject)
            error = f"{type(exc).__name__}: {exc}"
        await settle(bus, msg, error, max_deliver=settings.max_deliver)

    async def handle_batch(msgs: list[Msg]) -> None:
        await asyncio.gather(*(handle_one(m) for m in msgs))

    await bus.consume("guardrails", [type_subject("task.requested")], handle_batch,
                      batch=settings.batch_size, ack_wait=settings.ack_wait_s, stop=stop)
