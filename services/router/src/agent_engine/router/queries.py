"""The router's queries (core NATS request/reply on `aerpc.router.<action>`, or tenant-scoped on
`aerpc.tenant.<tenant>.router.<action>`): a task's state, its stored
records, a replay check and a fork plan. Every request gets an answer; one scoped to a tenant learns
nothing of another tenant's tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.subjects import ROUTER_RPC, rpc_scope
from agent_engine.router import views
from agent_engine.router.core import fork_plan, restore
from agent_engine.router.datakeys import KeyDestroyed
from agent_engine.runtime.queries import answer_query, read_query

log = logging.getLogger("router")
Records = Callable[[str], list[Envelope]]
"""The stored records of a task id (a blocking store read)."""


def _history(records: list[Envelope], _: dict[str, Any]) -> dict[str, Any]:
    """The stored records, each input whole: one that left its output to a decision shows it again (records.py)."""
    return {"events": [r.to_wire() for r in restore(records, strict=False)]}


def _fork_plan(records: list[Envelope], body: dict[str, Any]) -> dict[str, Any]:
    at, live = body.get("at"), body.get("live", False)
    if not isinstance(at, int) or isinstance(at, bool) or not isinstance(live, bool):
        return {"error": "'at' must be a record number (an integer) and 'live' true or false"}
    plan = fork_plan(records, records[0].tenant, at, live)
    if plan.problem:
        return {"error": f"cannot fork task {records[0].task_id}: {plan.problem}"}
    return {"task_id": records[0].task_id, "tenant": records[0].tenant, "cut": plan.cut, "risky": list(plan.risky)}


ACTIONS: dict[str, Callable[[list[Envelope], dict[str, Any]], dict[str, Any]]] = {
    "task.show": lambda records, _: views.show(records),
    "task.history": _history,
    "task.replay": lambda records, _: views.replay_report(records),
    "task.fork_plan": _fork_plan,
}


async def answer(records_of: Records, action: str, raw: bytes, scope: str | None = None) -> dict[str, Any]:
    """The answer to one query: `{"task_id": ..., "tenant"?: ...}` plus what the action takes. `scope` is the
    tenant of a tenant-scoped subject: it wins over the body's, so a tenant's credential (which may publish
    only there) learns nothing of another tenant's tasks."""
    query, problem = read_query(raw, task_required=True)
    if problem:
        return {"error": problem}
    handler = ACTIONS.get(action)
    if handler is None:
        return {"error": f"unknown router query '{action}'; known: {', '.join(ACTIONS)}"}
    task_id, tenant = query["task_id"], scope or query.get("tenant")
    try:
        records = await asyncio.to_thread(records_of, task_id)
    except KeyDestroyed as exc:
        if tenant is None or exc.tenant == tenant:
            return {"error": f"task '{task_id}' was erased: its tenant or data subject was forgotten and the key "
                             "its records were sealed under is destroyed", "erased": True, "task_id": task_id}
        records = []
    if not records or (tenant is not None and records[0].tenant != tenant):
        scope = f" for tenant '{tenant}'" if tenant else ""
        return {"error": f"no task '{task_id}' in the router's store{scope}"}
    return handler(records, query)


async def serve(msg: Msg, records_of: Records, max_payload: int, transient: Callable[[BaseException], bool]) -> None:
    """Answer one query message; a published (not requested) one gets no answer, nothing raises."""
    scope, action = rpc_scope(ROUTER_RPC, msg.subject)
    try:
        reply = await answer(records_of, action, msg.data, scope)
    except Exception as exc:
        if not transient(exc):
            log.exception("query on %s failed", msg.subject)
        reply = {"error": f"the router could not answer: {type(exc).__name__}: {exc}"}
    try:
        await answer_query(msg, reply, max_payload, scope)
    except Exception as exc:  # noqa: BLE001  the asker has gone, or the bus: nothing to do
        log.warning("could not answer the query on %s: %s", msg.subject, exc)
