"""agentctl: the operator CLI. `agentctl --help` lists the commands; each has its own --help.

Each command lives in a module of agent_engine.cli.commands with its arguments (`register`) next to its
handler; this module only puts them together, in the order --help lists them, and turns errors into exit
codes.
"""

from __future__ import annotations

import argparse
import os
import sys

from agent_engine.cli.client import CliError
from agent_engine.cli.commands import (
    agents,
    approvals,
    audit,
    cost,
    dlq,
    evals,
    keyring,
    providers,
    stack,
    submit,
    tail,
    tasks,
    tenant,
    workflow,
)
from agent_engine.runtime.keyring import CREDENTIAL_ENV

COMMANDS = (stack, workflow, submit, tail, tasks, approvals, dlq, cost, providers, tenant, keyring, audit, evals,
            agents)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentctl", description="Run, inspect and operate Agent Engine. "
                                "Commands find the running stack through AE_HOME (default ~/.agent-engine) "
                                "or AE_NATS_URL.")
    p.add_argument("--credential", metavar="FILE", help="act with this credential file (default: "
                   "$AE_NATS_CREDENTIAL, else the local stack's platform credential)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.credential:
        os.environ[CREDENTIAL_ENV] = args.credential
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"agentctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
