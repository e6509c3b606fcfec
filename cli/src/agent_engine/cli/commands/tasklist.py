"""`agentctl task list`: find tasks in telemetry's task index (the `tasks.list` query), newest first."""

from __future__ import annotations

import argparse
from datetime import datetime
from decimal import Decimal
from typing import Any

from agent_engine.cli.client import ask
from agent_engine.cli.commands.tail import parse_since
from agent_engine.cli.options import print_json
from agent_engine.contracts.subjects import TELEMETRY_RPC

STATUSES = ("accepted", "queued", "running", "succeeded", "failed", "cancelled", "rejected",
            "deduplicated")
"""telemetry's taskindex.STATUSES, spelled again: the CLI does not import a service (telemetry checks them too)."""


def add_list(task_sub: Any) -> None:
    """Register `task list` under `agentctl task` (tasks.py calls this)."""
    ls = task_sub.add_parser(
        "list", help="find tasks, newest first: filter by tenant, status, workflow and start time, or search",
        description="Tasks from telemetry's task index, newest first. A tenant credential sees only its tenant. "
                    "--search matches a task id prefix, or text (any case) in the workflow name, the task's "
                    "accepted input (after the input guardrails' redactions) or its error.")
    ls.add_argument("--tenant", help="only this tenant's tasks")
    ls.add_argument("--status", choices=STATUSES, help="only tasks in this status")
    ls.add_argument("--workflow", help="only tasks of this workflow")
    ls.add_argument("--since", help="only tasks requested this long ago or later: 30s, 10m, 2h, 1d")
    ls.add_argument("--search", metavar="TEXT", help="task id prefix, or text of the workflow, input or error")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50, at most 500)")
    ls.add_argument("--json", action="store_true", help="the answer as JSON: {\"tasks\": [...]}")
    ls.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"limit": args.limit}
    for name in ("tenant", "status", "workflow", "search"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.since:
        body["since"] = parse_since(args.since).isoformat()
    answer = ask(TELEMETRY_RPC, "tasks.list", body)
    if args.json:
        print_json(answer)
    else:
        print(table(answer["tasks"]))
    return 0


def duration(task: dict[str, Any]) -> str:
    """How long the task ran, e.g. 4.2s, 3m05s, 2h10m; "-" while it has not finished."""
    if not task.get("started_at") or not task.get("finished_at"):
        return "-"
    seconds = (datetime.fromisoformat(task["finished_at"]) - datetime.fromisoformat(task["started_at"])).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def cost(value: str) -> str:
    """A cost to the cent's hundredth ($0.0012); exact figures are in --json and `agentctl cost --task`."""
    return f"${Decimal(value):.4f}"


def table(tasks: list[dict[str, Any]]) -> str:
    if not tasks:
        return "no tasks match"
    head = ("TASK", "TENANT", "WORKFLOW", "STATUS", "STARTED (UTC)", "DURATION", "COST")
    rows = [(t["task_id"], t["tenant"], t["workflow"] or "?", t["status"],
             datetime.fromisoformat(t["started_at"]).strftime("%Y-%m-%d %H:%M:%S") if t["started_at"] else "-",
             duration(t), cost(t["cost_usd"])) for t in tasks]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in (head, *rows)]
    return "\n".join(lines)
