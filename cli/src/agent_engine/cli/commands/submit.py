"""`agentctl submit` and `agentctl run`: start a task (run also validates, pushes and follows it);
`follow_task` prints a task's progress until it ends (`task fork` follows its new task with it too)."""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from agent_engine.cli import render
from agent_engine.cli.client import CliError, Engine, TaskEvents, connect
from agent_engine.cli.commands.workflow import load_valid, push
from agent_engine.cli.options import Subparsers, add_tenant, parse_input
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import NodeApprovalDecided, TaskRequested
from agent_engine.contracts.manifest import USD_PATTERN
from agent_engine.contracts.subjects import ROUTER_RPC


def register(sub: Subparsers) -> None:
    def task_args(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--input", help="task input: a JSON object, or @FILE")
        cmd.add_argument("--idempotency-key", help="a second request with the same key (within the router's window, "
                         "24 h by default) starts nothing: the first task's id is printed")
        cmd.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for news (default 60)")
        cmd.add_argument("--priority", type=int, default=0, choices=range(-100, 101), metavar="-100..100",
                         help="when the tenant is at its limit of running tasks, higher priorities start first")
        cmd.add_argument("--data-subject", metavar="ID", help="the person the task's data is about: its records "
                         "are sealed under that person's key (`agentctl tenant forget T --person ID` erases them)")
        cmd.add_argument("--session", metavar="ID", help="the session (a chat, a conversation) the task belongs to: "
                         "guardrails' per-session rate limit counts requests by it")
        cmd.add_argument("--budget-usd", metavar="USD", help="the most the task may spend on LLM calls, e.g. 0.25 "
                         "(with a workflow budget the lower applies; docs/guardrails.md, Budgets)")
        add_tenant(cmd)

    sm = sub.add_parser("submit", help="submit a task; prints only its id on stdout; non-zero if rejected")
    sm.add_argument("workflow")
    task_args(sm)
    sm.set_defaults(func=cmd_submit)
    rn = sub.add_parser("run", help="validate, push, submit and follow a workflow; exit 0 only on success")
    rn.add_argument("dir")
    rn.add_argument("--approve-tools", action="store_true",
                    help="approve every tool call guardrails' tool gate holds for approval, as this credential, as "
                    "soon as it waits (offline runs and demos; each approval is recorded with your name)")
    task_args(rn)
    rn.set_defaults(func=cmd_run)


def cmd_submit(args: argparse.Namespace) -> int:
    return asyncio.run(submit(args.workflow, parse_input(args.input), args.tenant, args.idempotency_key,
                              args.timeout, priority=args.priority, data_subject=args.data_subject,
                              session=args.session, budget_usd=args.budget_usd))


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load_valid(args.dir)
    task_input = parse_input(args.input)
    assert loaded.manifest is not None
    name = loaded.manifest.name

    async def go() -> int:
        await push(loaded, args.tenant)
        return await submit(name, task_input, args.tenant, args.idempotency_key, args.timeout,
                            follow=True, priority=args.priority, data_subject=args.data_subject,
                            approve_tools=args.approve_tools, session=args.session, budget_usd=args.budget_usd)
    return asyncio.run(go())


async def submit(workflow: str, task_input: dict[str, Any], tenant: str | None, key: str | None,
                 timeout: float, follow: bool = False, quiet: bool = False, priority: int = 0,
                 data_subject: str | None = None, approve_tools: bool = False, session: str | None = None,
                 budget_usd: str | None = None) -> int:
    if data_subject is not None and not 1 <= len(data_subject) <= 256:
        raise CliError("--data-subject must be 1 to 256 characters")
    if session is not None and not 1 <= len(session) <= 256:
        raise CliError("--session must be 1 to 256 characters")
    if budget_usd is not None and not re.fullmatch(USD_PATTERN, budget_usd):
        raise CliError(f"--budget-usd {budget_usd!r} is not an amount in USD: write a decimal such as 0.25")
    async with connect() as engine:
        tenant = engine.tenant(tenant)
        # a fresh task id and request id every time: with a key, the router answers a repeat with
        # task.deduplicated naming the task the key's first request started
        task_id = str(uuid.uuid4())
        request = TaskRequested(workflow=workflow, input=task_input, idempotency_key=key,
                                requested_by=engine.sender, priority=priority, data_subject=data_subject,
                                session=session, budget_usd=budget_usd)
        async with engine.request(request, tenant=tenant, task_id=task_id) as events:
            while True:
                event = await events.next(timeout)
                if event.type == "task.deduplicated":
                    return await _deduplicated(engine, event, tenant, timeout, follow, quiet)
                if event.type == "task.rejected":
                    print(task_id)
                    return _rejected(event)
                if event.type == "task.queued":
                    print(f"task {task_id} queued: {event.data.get('reason')}", file=sys.stderr)
                    if not follow:
                        print(task_id)
                        return 0
                    continue
                if event.type == "task.started":
                    if not follow:
                        print(task_id)
                        return 0
                    print(f"task {task_id} started: workflow {workflow} "
                          f"revision {event.data['revision'][:12]}", file=sys.stderr)
                    return await follow_task(events, timeout, quiet,
                                             approver=_tool_approver(engine, tenant) if approve_tools else None)


RATE_LIMITED_EXIT = 75
"""EX_TEMPFAIL: the request was refused for now; the same request may succeed after the wait printed."""


def _rejected(event: Envelope) -> int:
    """Say why on stderr: exit 2, or 75 when a rate limit refused it (with the seconds to wait)."""
    reason = str(event.data.get("reason"))
    retry = event.data.get("retry_after_s")
    if isinstance(retry, int | float):
        wait = max(1, math.ceil(retry))
        detail = reason.removeprefix("rate limited: ").split("; retry after")[0]
        print(f"rate limited by {event.data.get('stage')}: {detail}; retry after {wait} s", file=sys.stderr)
        return RATE_LIMITED_EXIT
    print(f"rejected by {event.data.get('stage')}: {reason}", file=sys.stderr)
    return 2


async def _deduplicated(engine: Engine, event: Envelope, tenant: str, timeout: float, follow: bool,
                        quiet: bool) -> int:
    """The key names a task already: print its id (not this request's), and follow it when asked to."""
    original = str(event.data["original_task_id"])
    print(original, flush=True)
    print(f"task exists for idempotency key '{event.data.get('idempotency_key')}': {original} "
          f"(this request started nothing)", file=sys.stderr)
    if not follow:
        return 0
    async with engine.follow(tenant, original) as events:  # subscribed before asking, so no end is missed
        status = (await engine.query(ROUTER_RPC, "task.show", {"task_id": original}))["status"]
        if status in ("succeeded", "failed", "cancelled", "rejected"):
            print(f"task {original} {status} already", flush=True)
            return 0 if status == "succeeded" else 1
        return await follow_task(events, timeout, quiet)


Approver = Callable[[Envelope], Awaitable[None]]


def _tool_approver(engine: Engine, tenant: str) -> Approver:
    """`run --approve-tools`: approve each tool call the tool gate holds (a request naming a policy `rule`), under
    the credential's own name, as a person running `agentctl approve` would. A node's own `approval: required`
    is left to a person."""
    async def approve(event: Envelope) -> None:
        if event.type != "node.approval_requested" or not event.data.get("rule"):
            return
        await engine.send(NodeApprovalDecided(node=event.data["node"], decision="approve", decided_by=engine.sender,
                                              reason="agentctl run --approve-tools"),
                          tenant=tenant, task_id=event.task_id)
        print(f"  ✓ {event.data['node']:<16} approved {event.data.get('tool')} ({event.data.get('rule')}) as "
              f"{engine.sender}: --approve-tools", flush=True)
    return approve


async def follow_task(events: TaskEvents, timeout: float, quiet: bool, first: Envelope | None = None,
                      approver: Approver | None = None) -> int:
    """Print each step of the task until it ends: exit 0 when it succeeded, else 1. `approver` sees every event
    (run --approve-tools)."""
    started = time.monotonic()
    while True:
        event = await events.next(timeout)
        if first is not None and event.id == first.id:
            continue
        if not quiet:
            line = render.progress(event)
            if line:
                print(line, flush=True)
        if approver is not None:
            await approver(event)
        if event.type == "task.cancelled":
            print(f"task {event.task_id} cancelled: {event.data.get('reason', '')}", flush=True)
            return 1
        if event.type in ("task.succeeded", "task.failed"):
            elapsed = time.monotonic() - started
            status = event.data["status"]
            print(f"task {event.task_id} {status} in {elapsed:.2f}s: {event.data.get('reason', '')}", flush=True)
            return 0 if status == "succeeded" else 1
