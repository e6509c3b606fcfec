"""`agentctl workflow validate` and `workflow push`; `load_valid` and `push` serve `run` too."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from agent_engine.cli.client import CliError, connect
from agent_engine.cli.options import Subparsers, add_tenant
from agent_engine.runtime import manifests, workflows


def register(sub: Subparsers) -> None:
    wf = sub.add_parser("workflow", help="validate and push workflow manifests")
    wf_sub = wf.add_subparsers(dest="workflow_command", required=True, metavar="ACTION")
    v = wf_sub.add_parser("validate", help="check a workflow directory; every error names file, node and rule")
    v.add_argument("dir")
    v.set_defaults(func=cmd_validate)
    pu = wf_sub.add_parser("push", help="store a workflow revision (SHA-256 of its manifests) in the registry")
    pu.add_argument("dir")
    add_tenant(pu)
    pu.set_defaults(func=cmd_push)


def load_valid(directory: str) -> manifests.Loaded:
    """The workflow in `directory`; each error printed (file, node, rule) and a CliError if there are any."""
    loaded = manifests.load(Path(directory))
    if loaded.errors:
        for error in loaded.errors:
            print(f"{directory.rstrip('/')}/{error}", file=sys.stderr)
        raise CliError(f"{directory}: {len(loaded.errors)} error(s); nothing was pushed or run")
    return loaded


async def push(loaded: manifests.Loaded, tenant: str | None) -> None:
    assert loaded.manifest is not None
    async with connect() as engine:
        tenant = engine.tenant(tenant)
        kv = workflows.tenant_bucket(engine.js) if engine.scope else await workflows.bucket(engine.js)
        changed = await workflows.push(kv, tenant, loaded.revision, loaded.manifest)
    state = "pushed" if changed else "unchanged"
    print(f"{state}: workflow '{loaded.manifest.name}' revision {loaded.revision[:12]} (tenant {tenant})",
          file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_valid(args.dir)
    assert loaded.manifest is not None
    print(f"{args.dir}: workflow '{loaded.manifest.name}' is valid "
          f"({len(loaded.manifest.nodes)} nodes, revision {loaded.revision[:12]})")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    asyncio.run(push(load_valid(args.dir), args.tenant))
    return 0
