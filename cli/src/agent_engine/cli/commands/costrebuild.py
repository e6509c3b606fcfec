"""`agentctl cost rebuild`: the platform administrator empties telemetry's ledger and has it folded again from the
event stream (telemetry's `ledger.rebuild` query): costs, tokens, budgets, the task index and the agent scores then
equal what the stream holds, to the cent. It is also how to backfill the task index and agent scores after an
upgrade from a version without them."""

from __future__ import annotations

import argparse

from agent_engine.cli.client import CliError, ask
from agent_engine.cli.options import print_json
from agent_engine.contracts.subjects import TELEMETRY_RPC


def add_rebuild(cost: argparse.ArgumentParser) -> None:
    """`rebuild` as `agentctl cost`'s optional action (cost.py calls this)."""
    cost.add_argument("action", nargs="?", choices=["rebuild"],
                      help="rebuild: empty the ledger (costs, budgets, task index, agent scores) and fold it again "
                           "from the event stream (platform credential only; also backfills the task index and "
                           "agent scores after an upgrade); waits until it has caught up")
    cost.add_argument("--force", action="store_true",
                      help="with rebuild: go ahead although the stream's retention removed its first messages "
                           "(their calls are then lost from the ledger)")
    cost.add_argument("--timeout", type=float, default=600.0,
                      help="with rebuild: seconds to wait for it to catch up (default 600)")


def cmd_rebuild(args: argparse.Namespace) -> int:
    if args.task or args.tenant:  # the ledger is rebuilt whole: a narrower rebuild would not be exact
        raise CliError("cost rebuild refolds the whole ledger: it takes no --task or --tenant")
    answer = ask(TELEMETRY_RPC, "ledger.rebuild", {"force": True} if args.force else {}, timeout=args.timeout)
    if args.json:
        print_json(answer)
    else:
        print(f"ledger rebuilt from the event stream: {answer['messages']} message(s) folded, up to stream sequence "
              f"{answer['position']}, in {answer['seconds']:g}s")
    return 0
