"""`agentctl up`, `down`, `ps`: the local stack (embedded NATS and PostgreSQL, the five services and the
credential authority)."""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path

from agent_engine.cli import render
from agent_engine.cli.client import CliError
from agent_engine.cli.options import Subparsers, add_json, print_json
from agent_engine.cli.stack import Stack


def register(sub: Subparsers) -> None:
    up = sub.add_parser("up", help="start NATS, PostgreSQL, the five services, the web dashboard "
                        "(its URL in `ps`) and the credential authority (idempotent)")
    up.add_argument("--detach", "-d", action="store_true", help="leave the stack running and return")
    up.add_argument("--workspace", help="the only directory the tool-runner's file tools may read "
                    "(default: $AE_HOME/workspace)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop everything `up` started").set_defaults(func=cmd_down)
    ps = sub.add_parser("ps", help="each component's name, pid, status and readiness (what its /readyz says)")
    add_json(ps)
    ps.set_defaults(func=cmd_ps)


def cmd_up(args: argparse.Namespace) -> int:
    stack = Stack.load()
    try:
        workspace = Path(args.workspace) if args.workspace else stack.root / "workspace"
        workspace.mkdir(parents=True, exist_ok=True)
        started = stack.up(workspace.resolve())
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    print(f"stack in {stack.root}: " + (f"started {', '.join(started)}" if started else "already running"))
    render.components(stack.components())
    if args.detach:
        return 0
    print("running in the foreground; Ctrl-C stops the stack (use --detach to leave it running)")
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    while not stop["now"]:
        time.sleep(0.5)
    print("stopping: " + ", ".join(Stack.load().down()))
    return 0


def cmd_down(_: argparse.Namespace) -> int:
    stopped = Stack.load().down()
    print("stopped " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    rows = Stack.load().components()
    if args.json:
        print_json(rows)
    else:
        render.components(rows)
    return 0
