"""`agentctl artifact get ID [-o FILE]` and `agentctl artifact list --task ID`: content kept outside events.

Large node outputs and tool results are stored content-addressed in the tenant's object store bucket and
the events carry references (docs/observability.md, "Artifacts"); an output the output gate checks is stored as
its dispatch's own copy, found by a longer id (its locator, `sha256:<hex>.<32 hex>`). `get` reads one with the
caller's credential, so a tenant reads its own tenant's artifacts only (the server refuses any other); `list`
collects the references in a task's stored history, each with the id `get` takes. `get` writes the bytes on chunk
by chunk as it reads them (an artifact may be 64 MiB), never holding the whole.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from nats.errors import Error as NatsError

from agent_engine.cli.client import CliError, ask, connect
from agent_engine.cli.options import Subparsers, add_json, print_json
from agent_engine.contracts.artifacts import LOCATOR_PATTERN, locator, references
from agent_engine.contracts.subjects import ROUTER_RPC
from agent_engine.runtime.artifacts import ArtifactError, ArtifactStore


def register(sub: Subparsers) -> None:
    group = sub.add_parser("artifact", help="large outputs and tool results kept outside events: get one, list a "
                           "task's")
    cmds = group.add_subparsers(dest="artifact_command", required=True, metavar="ACTION")
    get = cmds.add_parser("get", help="an artifact's exact bytes, to stdout or a file",
                          description="Write the artifact's bytes (checked against its sha256 id) to stdout, or "
                          "to FILE with -o, chunk by chunk as they are read. Damaged content fails with its last "
                          "chunk unwritten, and FILE is then left as it was. A tenant credential reads its own "
                          "tenant's artifacts only.")
    get.add_argument("id", metavar="ID", help="sha256:<64 hex>, or for an output the output gate checked "
                     "sha256:<64 hex>.<32 hex>, as `artifact list --task` shows it")
    get.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    get.add_argument("--tenant", help="the tenant whose artifact it is (default: the credential's, else 'default')")
    get.set_defaults(func=cmd_get)
    ls = cmds.add_parser("list", help="the artifacts a task's events refer to")
    ls.add_argument("--task", required=True, metavar="TASK_ID")
    add_json(ls, help="one object per reference, with the event and node that carries it")
    ls.set_defaults(func=cmd_list)


def cmd_get(args: argparse.Namespace) -> int:
    if not re.fullmatch(LOCATOR_PATTERN, args.id):
        raise CliError(f"'{args.id}' is not an artifact id: sha256: and 64 lowercase hex digits (then '.' and 32 "
                       "more for an output the output gate checked), as `agentctl artifact list --task ID` shows it")

    async def go() -> int:
        async with connect() as engine:
            tenant = engine.tenant(args.tenant)
            try:
                _, chunks = await ArtifactStore(engine.js).open(tenant, args.id)
                if args.output:
                    return await to_file(chunks, Path(args.output))
                return await written(chunks, sys.stdout.buffer)
            except ArtifactError as exc:
                hint = "" if "." in args.id else (" (an output the output gate checked is its dispatch's own copy, "
                                                  "with a longer id: see `agentctl artifact list --task ID`)")
                raise CliError(f"{exc}{hint}") from None
            except NatsError as exc:  # a refused request surfaces as no answer: say what is likely
                raise CliError(f"could not read artifact {args.id} of tenant '{tenant}' ({type(exc).__name__}): a "
                               "tenant credential may read its own tenant's artifacts only") from None

    count = asyncio.run(go())
    if args.output:
        print(f"wrote {count} bytes to {args.output}", file=sys.stderr)
    return 0


async def written(chunks: AsyncIterator[bytes], out: BinaryIO) -> int:
    """Write each chunk as it comes; the number of bytes written."""
    count = 0
    async for chunk in chunks:
        out.write(chunk)
        count += len(chunk)
    out.flush()
    return count


async def to_file(chunks: AsyncIterator[bytes], path: Path) -> int:
    """Write the chunks to a new file beside `path` and put it in place only once every byte is read and
    checked, so a failed read leaves no partial file, and an existing `path` as it was."""
    fd, part = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            count = await written(chunks, out)
        umask = os.umask(0)  # the mode a plain open() would have given, not mkstemp's 0600
        os.umask(umask)
        os.chmod(part, 0o666 & ~umask)
        os.replace(part, path)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise
    return count


def listed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each reference in a task's history, once, with the first event and node that carried it, and the id
    `artifact get` takes (`locator`: the content id, or a dispatch's own copy's)."""
    rows: dict[str, dict[str, Any]] = {}
    for event in events:
        data = event.get("data") or {}
        for ref in references(data):
            rows.setdefault(locator(ref), {**ref.model_dump(), "locator": locator(ref), "event": event.get("type"),
                                           "node": _node_of(data)})
    return list(rows.values())


def _node_of(data: dict[str, Any]) -> str | None:
    """The node an event is about: its own `node`, or, for the router's record of an input (`router.input`),
    the input event's."""
    inner = data.get("input")
    node = data.get("node") or (inner.get("data") or {}).get("node") if isinstance(inner, dict) else data.get("node")
    return node if isinstance(node, str) else None


def cmd_list(args: argparse.Namespace) -> int:
    rows = listed(ask(ROUTER_RPC, "task.history", {"task_id": args.task})["events"])
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"task {args.task} refers to no artifacts")
        return 0
    width = max(len(row["locator"]) for row in rows)  # a dispatch's copy has a longer id
    print(f"{'ARTIFACT':<{width}} {'BYTES':>10}  {'NODE':<16} NAME")
    for row in rows:
        print(f"{row['locator']:<{width}} {row['size']:>10}  {row['node'] or '-'!s:<16} {row['name']}")
    return 0
