"""`agentctl approve` and `agentctl reject`: decide a node that waits for approval."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Literal

from agent_engine.cli.client import CliError, connect
from agent_engine.cli.options import Subparsers, parse_input
from agent_engine.contracts.events import NodeApprovalDecided
from agent_engine.contracts.subjects import ROUTER_RPC

THEN = {"confidence": "its held output is accepted", "guardrail": "its held output is accepted",
        "failures": "it is dispatched again with fresh attempts"}
"""What approving a node that paused for a person does, by why it paused."""


def register(sub: Subparsers) -> None:
    ap = sub.add_parser("approve", help="let a node that waits for a person go on: it runs (optionally with edited "
                        "arguments), or its held output is accepted")
    ap.add_argument("task_id")
    ap.add_argument("node")
    ap.add_argument("--edit", help="replacement tool arguments: a JSON object, or @FILE; checked against the "
                    "tool's args_schema")
    rj = sub.add_parser("reject", help="refuse a node that waits for a person: it fails (a tool call "
                        "held for its model gets the refusal instead)")
    rj.add_argument("task_id")
    rj.add_argument("node")
    rj.add_argument("--reason", required=True, help="why, recorded in the task's history")
    for cmd, func in ((ap, cmd_approve), (rj, cmd_reject)):
        cmd.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the router (default 30)")
        cmd.set_defaults(func=func)


def cmd_approve(args: argparse.Namespace) -> int:
    edited = parse_input(args.edit) if args.edit else None
    return asyncio.run(decide(args.task_id, args.node, "approve", "", edited, args.timeout))


def cmd_reject(args: argparse.Namespace) -> int:
    return asyncio.run(decide(args.task_id, args.node, "reject", args.reason, None, args.timeout))


async def decide(task_id: str, node: str, decision: Literal["approve", "reject"], reason: str,
                 edited: dict[str, Any] | None, timeout: float) -> int:
    """Decide as the credential agentctl acts with: its name is what the task records (the server lets a
    credential send decisions under its own name only)."""
    async with connect() as engine:
        shown = await engine.query(ROUTER_RPC, "task.show", {"task_id": task_id})
        waiting = [n["node"] for n in shown["nodes"] if n["status"] == "awaiting_approval"]
        paused = next((n.get("paused") for n in shown["nodes"] if n["node"] == node), None)
        if node not in waiting:
            raise CliError(f"node '{node}' of task {task_id} is not waiting for approval "
                           f"(task {shown['status']}; waiting: {', '.join(waiting) or 'none'})")
        request = NodeApprovalDecided(node=node, decision=decision, decided_by=engine.sender, reason=reason,
                                      args=edited)
        async with engine.request(request, tenant=shown["tenant"], task_id=task_id) as events:
            while True:
                event = await events.next(timeout)
                if event.data.get("node") != node:
                    continue
                if event.type == "node.approval_refused":
                    print(f"refused: {event.data['reason']}", file=sys.stderr)
                    return 2
                if event.type == "node.approved":
                    edited_note = " with edited arguments" if event.data.get("edited") else ""
                    then = THEN.get(paused or "", "it is dispatched")
                    print(f"approved node '{node}' of task {task_id}{edited_note}; {then}")
                    return 0
                if event.type == "node.tool_returned":  # a held call of an agent's model: it hears of the refusal
                    print(f"rejected call {event.data.get('call_id')} of node '{node}' of task {task_id}: its model "
                          "sees the refusal as the call's result")
                    return 0
                if event.type == "node.failed":
                    print(f"rejected node '{node}' of task {task_id}: the task fails")
                    return 0
