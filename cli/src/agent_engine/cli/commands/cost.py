"""`agentctl cost`: the telemetry service's token and cost ledger; `agentctl budget`: its budget lines (what is
reserved and spent against a task's budget, and a tenant's by UTC day)."""

from __future__ import annotations

import argparse

from agent_engine.cli import render
from agent_engine.cli.client import ask
from agent_engine.cli.commands.costrebuild import add_rebuild, cmd_rebuild
from agent_engine.cli.options import Subparsers, add_json, print_json
from agent_engine.contracts.subjects import TELEMETRY_RPC


def register(sub: Subparsers) -> None:
    cost = sub.add_parser("cost", help="token and cost ledger from telemetry: with --task, each call and node; "
                          "otherwise JSON by tenant, model and day (with --tenant, that tenant's line and its own "
                          "calls by model and by day); `cost rebuild` refolds it from the stream")
    add_rebuild(cost)
    cost.add_argument("--task")
    cost.add_argument("--tenant")
    add_json(cost, help="the ledger as JSON")
    cost.set_defaults(func=cmd_cost)
    budget = sub.add_parser("budget", help="budgets from telemetry's ledger: with --task, the task's limit, reserved "
                            "and spent, and each reservation and settlement; with --tenant, reserved and spent by "
                            "UTC day")
    target = budget.add_mutually_exclusive_group(required=True)
    target.add_argument("--task")
    target.add_argument("--tenant")
    add_json(budget, help="the budget line as JSON")
    budget.set_defaults(func=cmd_budget)


def cmd_cost(args: argparse.Namespace) -> int:
    if args.action == "rebuild":
        return cmd_rebuild(args)
    ledger = ask(TELEMETRY_RPC, "ledger", {"task_id": args.task, "tenant": args.tenant})
    if args.json or not args.task:
        print_json(ledger)
    else:
        render.task_cost(ledger)
    return 0


def cmd_budget(args: argparse.Namespace) -> int:
    ledger = ask(TELEMETRY_RPC, "ledger", {"task_id": args.task, "tenant": args.tenant})
    answer = ({"task_id": args.task, "budget": ledger.get("budget")} if args.task
              else {"tenant": args.tenant, "budget_days": ledger.get("budget_days", {})})
    if args.json:
        print_json(answer)
    elif args.task:
        render.task_budget(args.task, ledger.get("budget"))
    else:
        render.tenant_budget(args.tenant, ledger.get("budget_days") or {})
    return 0
