"""Reading a query (core NATS request/reply) the same way in every service: a JSON object naming a task
and, optionally, the tenant asking. A query that cannot be read gets an error answer, never silence."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from nats.aio.msg import Msg

from agent_engine.contracts.envelope import TASK_ID_MAX, TENANT_PATTERN
from agent_engine.contracts.subjects import service_inbox, tenant_inbox

log = logging.getLogger(__name__)


def read_query(raw: bytes, *, task_required: bool) -> tuple[dict[str, Any], str]:
    """(the query, its `task_id` and `tenant` checked where present; a problem, "" when there is none)."""
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return {}, "a query must be a JSON object in UTF-8, e.g. {\"task_id\": \"...\"}"
    if not isinstance(body, dict):
        return {}, f"a query must be a JSON object, not JSON {type(body).__name__}"
    task_id = body.get("task_id")
    if (task_id is not None or task_required) and (not isinstance(task_id, str)
                                                    or not 1 <= len(task_id) <= TASK_ID_MAX):
        return {}, f"'task_id' must be a string of 1 to {TASK_ID_MAX} characters"
    tenant = body.get("tenant")
    if tenant is not None and (not isinstance(tenant, str) or not re.fullmatch(TENANT_PATTERN, tenant)):
        return {}, f"'tenant' must be a tenant name ({TENANT_PATTERN})"
    return body, ""


def encode_reply(reply: dict[str, Any], max_payload: int) -> bytes:
    """The reply as bytes; one too large for a NATS message becomes an error naming its size (never silence)."""
    body = json.dumps(reply, default=str).encode()
    if len(body) <= max_payload:
        return body
    return json.dumps({"error": f"the answer is {len(body) / 1048576:.1f} MiB, over the {max_payload / 1048576:.1f} "
                                "MiB a NATS message may carry"}).encode()


def reply_allowed(reply: str, scope: str | None) -> bool:
    """May a service answer a query on `reply`? Only on an inbox: a service answers through its right to
    respond, and a reply subject the asker chose could otherwise name any subject (another tenant's events or
    keys, a platform-only query). A tenant-scoped query is answered only on that tenant's inboxes."""
    if scope is not None:
        return reply.startswith(tenant_inbox(scope, ""))
    return reply.startswith(("_INBOX.", service_inbox("")))


async def answer_query(msg: Msg, reply: dict[str, Any], max_payload: int, scope: str | None) -> bool:
    """Send `reply` to the asker when its reply subject is an inbox it may own (`reply_allowed`); False when
    there was no one to answer, or the reply subject was refused (logged, never sent)."""
    if not msg.reply:
        return False
    if not reply_allowed(msg.reply, scope):
        log.warning("refused to answer a query on %s: its reply subject %s is not an inbox of %s", msg.subject,
                    msg.reply[:200], f"tenant {scope}" if scope else "a client")
        return False
    await msg.respond(encode_reply(reply, max_payload))
    return True
