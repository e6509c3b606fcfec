"""`agentctl providers`: the agent-runner's LLM providers and each model's circuit breaker."""

from __future__ import annotations

import argparse

from agent_engine.cli import render
from agent_engine.cli.client import ask
from agent_engine.cli.options import Subparsers, add_json, print_json
from agent_engine.contracts.subjects import AGENT_RUNNER_RPC


def register(sub: Subparsers) -> None:
    pr = sub.add_parser("providers", help="the agent-runner's LLM providers and each model's circuit breaker "
                        "(closed, open, half_open)")
    add_json(pr)
    pr.set_defaults(func=cmd_providers)


def cmd_providers(args: argparse.Namespace) -> int:
    status = ask(AGENT_RUNNER_RPC, "providers", {})
    if args.json:
        print_json(status)
    else:
        render.providers(status)
    return 0
