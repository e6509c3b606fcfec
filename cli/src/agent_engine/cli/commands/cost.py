"""`agentctl cost`: the telemetry service's token and cost ledger."""

from __future__ import annotations

import argparse

from agent_engine.cli import render
from agent_engine.cli.client import ask
from agent_engine.cli.options import Subparsers, add_json, print_json
from agent_engine.contracts.subjects import TELEMETRY_RPC


def register(sub: Subparsers) -> None:
    cost = sub.add_parser("cost", help="token and cost ledger from telemetry: with --task, each call and node; "
                          "otherwise JSON by tenant, model and day")
    cost.add_argument("--task")
    cost.add_argument("--tenant")
    add_json(cost, help="the ledger as JSON")
    cost.set_defaults(func=cmd_cost)


def cmd_cost(args: argparse.Namespace) -> int:
    ledger = ask(TELEMETRY_RPC, "ledger", {"task_id": args.task, "tenant": args.tenant})
    if args.json or not args.task:
        print_json(ledger)
    else:
        render.task_cost(ledger)
    return 0
