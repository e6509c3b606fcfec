"""Reading a query (core NATS request/reply) the same way in every service: a JSON object naming a task
and, optionally, the tenant asking. A query that cannot be read gets an error answer, never silence."""

from __future__ import annotations

import json
import re
from typing import Any

from agent_engine.contracts.envelope import TASK_ID_MAX, TENANT_PATTERN


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
