"""`agentctl audit verify` and `audit export`: check the router store's audit chain (docs/audit.md).

Both read PostgreSQL directly (AE_POSTGRES_URL, or the local stack's; read access is enough), so a check
of the whole store costs the router nothing and does not depend on the router telling the truth, and read
the chain's checkpoints from the JetStream stream AE_AUDIT. Exit codes: 0 verified, 2 a broken link (named),
3 the chain verifies but no checkpoint anchors it, 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from contextlib import aclosing
from pathlib import Path
from typing import Any

import psycopg
from nats.js.errors import NotFoundError

from agent_engine.cli.audit import Broken, NoChain, Report, bundle, chain_id, read_task, verify_all, verify_chain
from agent_engine.cli.client import CliError, connect, stored
from agent_engine.cli.options import Subparsers, add_json, print_json
from agent_engine.cli.stack import Stack
from agent_engine.contracts.subjects import AUDIT_STREAM, audit_subject
from agent_engine.runtime.audit import Checkpoint, aggregate_id

BROKEN, UNANCHORED = 2, 3


def register(sub: Subparsers) -> None:
    audit = sub.add_parser("audit", help="verify the store's tamper-evident audit chain; export a task's proof")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = audit_sub.add_parser("verify", help="recompute the chain and compare it with its checkpoints; "
                             "names the first broken link (exit 2)")
    which = v.add_mutually_exclusive_group()
    which.add_argument("--task", metavar="ID", help="one task (or tenant:<name>, an admission log)")
    which.add_argument("--all", action="store_true", help="every record of the store (the default)")
    add_json(v)
    v.set_defaults(func=cmd_verify)
    e = audit_sub.add_parser("export", help="write a task's records, links and checkpoint as a bundle that "
                             "scripts/verify_audit_bundle.py verifies offline")
    e.add_argument("--task", metavar="ID", required=True)
    e.add_argument("--output", "-o", metavar="FILE", help="default: audit-<task>.json")
    e.set_defaults(func=cmd_export)


def postgres_url() -> str:
    url = Stack.load().postgres_url
    if not url:
        raise CliError("no PostgreSQL to read: start the stack with `agentctl up` or set AE_POSTGRES_URL")
    return url


def cmd_verify(args: argparse.Namespace) -> int:
    with _store() as conn:
        chain = _chain(conn)
        checkpoints = asyncio.run(read_checkpoints(chain))
        try:
            if args.task:
                report = verify_chain(read_task(conn, aggregate_id(args.task), checkpoints), args.task)
            else:
                report = verify_all(conn, checkpoints)
        except NoChain as exc:
            raise CliError(str(exc)) from None
        except Broken as exc:
            if args.json:
                print_json({"ok": False, "chain": chain, "broken": str(exc)})
            else:
                print(f"broken: {exc}")
            return BROKEN
    anchored = report.records == 0 or report.checkpoint is not None or bool(checkpoints)
    if args.json:
        print_json({"ok": anchored, "chain": chain, **_as_json(report)})
    elif anchored:
        print(f"ok: {report.summary()}")
    else:
        print(f"unanchored: {report.summary()}; stream {AUDIT_STREAM} holds no checkpoint of chain {chain}, so a "
              "rewrite of the whole chain table would not show (is the router running this version?)")
    return 0 if anchored else UNANCHORED


def cmd_export(args: argparse.Namespace) -> int:
    output = Path(args.output or f"audit-{args.task.replace('/', '_').replace(':', '_')}.json")
    with _store() as conn:
        chain = _chain(conn)
        checkpoints = asyncio.run(read_checkpoints(chain))
        try:
            task = read_task(conn, aggregate_id(args.task), checkpoints)
        except NoChain as exc:
            raise CliError(str(exc)) from None
        except Broken as exc:
            print(f"broken: {exc}")
            return BROKEN
    output.write_text(json.dumps(bundle(task, args.task, chain), indent=1))
    try:
        report = verify_chain(task, args.task)
    except Broken as exc:
        print(f"wrote {output}, but it does not verify: broken: {exc}")
        return BROKEN
    anchor = (f"checkpoint {report.checkpoint.position} (stream {AUDIT_STREAM} sequence "
              f"{report.checkpoint.stream_sequence})") if report.checkpoint else "no checkpoint yet"
    print(f"wrote {output}: {report.records} records of task {args.task}, anchored at {anchor}")
    print(f"verify it anywhere: python3 scripts/verify_audit_bundle.py {output}", file=sys.stderr)
    return 0


class _store:
    """A connection to the store, errors as one readable line."""

    def __enter__(self) -> psycopg.Connection[Any]:
        url = postgres_url()
        try:
            self.conn: psycopg.Connection[Any] = psycopg.connect(url, connect_timeout=5)
        except psycopg.Error as exc:
            raise CliError(f"cannot reach PostgreSQL ({exc}); is the stack up? (`agentctl ps`)") from None
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def _chain(conn: psycopg.Connection[Any]) -> str:
    try:
        return chain_id(conn)
    except NoChain as exc:
        raise CliError(str(exc)) from None


async def read_checkpoints(chain: str) -> list[Checkpoint]:
    """Every checkpoint of `chain` on the stream, in the order they were published."""
    async with connect() as engine:
        js = engine.js
        try:
            info = await js.stream_info(AUDIT_STREAM)
        except NotFoundError:
            return []
        if info.state.messages == 0:
            return []
        found: list[Checkpoint] = []
        async with aclosing(stored(js, audit_subject(chain))) as msgs:
            async for msg in msgs:
                try:
                    found.append(Checkpoint.from_json(msg.data, msg.metadata.sequence.stream))
                except (ValueError, KeyError, TypeError) as exc:
                    print(f"agentctl: skipping unreadable checkpoint #{msg.metadata.sequence.stream}: {exc}",
                          file=sys.stderr)
        return found


def _as_json(report: Report) -> dict[str, Any]:
    return {"records": report.records, "tasks": report.aggregates, "unchained": report.unchained,
            "last_position": report.last_position, "checkpoints_matched": report.checkpoints,
            "checkpoint": None if report.checkpoint is None else {
                "position": report.checkpoint.position, "head": report.checkpoint.head,
                "time": report.checkpoint.time, "stream_sequence": report.checkpoint.stream_sequence},
            "summary": report.summary()}
