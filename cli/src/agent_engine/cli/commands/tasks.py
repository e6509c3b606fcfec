"""`agentctl task show|history|cancel|replay|fork`: one task, as the router stored it; `task list` (tasklist.py)
finds tasks."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

from agent_engine.cli import render
from agent_engine.cli.client import CliError, ask, connect
from agent_engine.cli.commands.submit import follow_task
from agent_engine.cli.commands.tasklist import add_list
from agent_engine.cli.options import Subparsers, add_json, print_json
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import TaskCancelRequested, TaskForkRequested
from agent_engine.contracts.subjects import ROUTER_RPC

TERMINAL = ("succeeded", "failed", "rejected", "cancelled")


def register(sub: Subparsers) -> None:
    task = sub.add_parser("task", help="find tasks (list) and inspect one task")
    task_sub = task.add_subparsers(dest="task_command", required=True, metavar="ACTION")
    add_list(task_sub)
    sh = task_sub.add_parser("show", help="status, nodes, attempts, timings, outputs, token usage")
    sh.add_argument("task_id")
    add_json(sh)
    sh.set_defaults(func=cmd_show)
    hi = task_sub.add_parser("history", help="every stored event of the task, in order")
    hi.add_argument("task_id")
    add_json(hi)
    hi.set_defaults(func=cmd_history)

    cn = task_sub.add_parser("cancel", help="stop a running task; results still on their way are recorded and "
                             "ignored")
    cn.add_argument("task_id")
    cn.add_argument("--reason", default="", help="why, recorded in the task's history")
    cn.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the router (default 30)")
    cn.set_defaults(func=cmd_cancel)
    rp = task_sub.add_parser("replay", help="re-run the recorded inputs through the running router and show any "
                             "difference from the stored events; exit 0 when identical")
    rp.add_argument("task_id")
    add_json(rp)
    rp.set_defaults(func=cmd_replay)
    fk = task_sub.add_parser("fork", help="start a new task from this task's history up to record AT; agent steps "
                             "after it reuse the recorded outputs unless --live; follows the new task")
    fk.add_argument("task_id")
    fk.add_argument("--at", type=int, required=True, metavar="EVENT_SEQ",
                    help="the last record to copy, numbered as `agentctl task history` prints them (from 1)")
    fk.add_argument("--live", action="store_true", help="call the models again instead of reusing their outputs")
    fk.add_argument("--yes", action="store_true", help="go ahead although tool steps with side effects may run again")
    fk.add_argument("--dry-run", action="store_true", help="only print what the fork would copy and run again")
    fk.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for news (default 60)")
    fk.set_defaults(func=cmd_fork)


def cmd_show(args: argparse.Namespace) -> int:
    shown = ask(ROUTER_RPC, "task.show", {"task_id": args.task_id})
    if args.json:
        print_json(shown)
    else:
        render.task(shown)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    events = ask(ROUTER_RPC, "task.history", {"task_id": args.task_id})["events"]
    if args.json:
        print_json(events)
    else:
        for seq, raw in enumerate(events, start=1):
            print(f"{seq:>4} " + render.event_line(Envelope.model_validate(raw)))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    report = ask(ROUTER_RPC, "task.replay", {"task_id": args.task_id}, timeout=30)
    if args.json:
        print_json(report)
    else:
        render.replay(report)
    return 0 if report["identical"] else 1


def cmd_cancel(args: argparse.Namespace) -> int:
    return asyncio.run(cancel(args.task_id, args.reason, args.timeout))


async def cancel(task_id: str, reason: str, timeout: float) -> int:
    async with connect() as engine:
        shown = await engine.query(ROUTER_RPC, "task.show", {"task_id": task_id})
        if shown["status"] in TERMINAL:
            raise CliError(f"task {task_id} is already {shown['status']}; nothing to cancel")
        request = TaskCancelRequested(reason=reason, requested_by=engine.sender)
        async with engine.request(request, tenant=shown["tenant"], task_id=task_id) as events:
            while True:
                event = await events.next(timeout)
                if event.type == "task.cancelled":
                    running = ", ".join(event.data.get("open_nodes", [])) or "none"
                    print(f"task {task_id} cancelled (nodes running at the time: {running})")
                    return 0
                if event.type in ("task.succeeded", "task.failed"):
                    print(f"task {task_id} {event.data['status']} before the cancel arrived", file=sys.stderr)
                    return 1


def cmd_fork(args: argparse.Namespace) -> int:
    return asyncio.run(fork(args.task_id, args.at, args.live, args.yes, args.dry_run, args.timeout))


async def fork(task_id: str, at: int, live: bool, yes: bool, dry_run: bool, timeout: float) -> int:
    """Ask the router for the fork's plan (its cut and the side-effecting steps that may run again, or why it
    cannot be made), print it, and unless told otherwise ask for the fork and follow the new task."""
    async with connect() as engine:
        plan = await engine.query(ROUTER_RPC, "task.fork_plan", {"task_id": task_id, "at": at, "live": live})
        cut, risky = plan["cut"], plan["risky"]
        print(f"fork of {task_id}: copies records 1-{cut}"
              + (f" (to the end of the decision record {at} belongs to)" if cut != at else "")
              + ("; agent steps call the model again (--live)" if live else
                 "; agent steps reuse the outputs the task recorded"), file=sys.stderr)
        if risky:
            print("tool steps with side effects that may run again: " + ", ".join(risky), file=sys.stderr)
        if dry_run:
            return 0
        if risky and not yes:
            print("nothing was forked; pass --yes to run them", file=sys.stderr)
            return 1
        new_id = str(uuid.uuid4())
        request = TaskForkRequested(source_task_id=task_id, at=at, live=live, requested_by=engine.sender)
        async with engine.request(request, tenant=plan["tenant"], task_id=new_id) as events:
            while True:
                event = await events.next(timeout)
                if event.type == "task.rejected":
                    print(new_id)
                    raise CliError(event.data.get("reason", "rejected"))
                if event.type == "task.forked":
                    print(f"task {new_id} forked from {task_id}", file=sys.stderr)
                    return await follow_task(events, timeout, quiet=False, first=event)
