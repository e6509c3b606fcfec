"""`agentctl tail`: print events as they happen, or what is stored."""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.js.api import DeliverPolicy

from agent_engine.cli import render
from agent_engine.cli.client import CliError, connect
from agent_engine.cli.options import Subparsers, add_json
from agent_engine.contracts.binding import structured_body
from agent_engine.contracts.envelope import TENANT_PATTERN, Envelope
from agent_engine.contracts.subjects import STREAM, tenant_subject

DURATION = re.compile(r"^(\d+)([smhd])$")


def register(sub: Subparsers) -> None:
    tl = sub.add_parser("tail", help="print events as they happen")
    tl.add_argument("--task", help="only this task's events (prints its past events too)")
    tl.add_argument("--tenant", help="only this tenant's events")
    tl.add_argument("--type", help="only these event types; glob, e.g. 'node.*'")
    tl.add_argument("--since", help="start this long ago: 30s, 10m, 2h, 1d")
    tl.add_argument("--all", action="store_true", help="start from the first stored event")
    tl.add_argument("--no-follow", action="store_true", help="print what is stored, then exit")
    add_json(tl, help="one JSON envelope per line")
    tl.set_defaults(func=cmd_tail)


def cmd_tail(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(tail(args))
    except KeyboardInterrupt:
        return 0


def parse_since(text: str) -> datetime:
    match = DURATION.match(text)
    if not match:
        raise CliError(f"--since {text!r}: use a duration such as 30s, 10m, 2h or 1d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})


async def tail(args: argparse.Namespace) -> int:
    if args.tenant and not re.match(TENANT_PATTERN, args.tenant):
        raise CliError(f"--tenant {args.tenant!r} is not a valid tenant name")
    history = args.all or args.task or args.since or args.no_follow
    config: dict[str, Any] = {"deliver_policy": DeliverPolicy.ALL if history else DeliverPolicy.NEW}
    if args.since:
        config = {"deliver_policy": DeliverPolicy.BY_START_TIME,
                  "opt_start_time": parse_since(args.since).isoformat()}
    async with connect() as engine:
        last = (await engine.js.stream_info(STREAM)).state.last_seq
        queue: asyncio.Queue[Any] = asyncio.Queue()
        sub = await engine.js.subscribe(tenant_subject(args.tenant or "*"), ordered_consumer=True, cb=queue.put,
                                        **config)
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    if args.no_follow:
                        return 0
                    continue
                try:
                    event = Envelope.from_bytes(structured_body(msg.data, msg.headers))
                except Exception:  # noqa: BLE001
                    event = None
                if event is not None and _wanted(event, args):
                    print(event.to_bytes().decode() if args.json else render.event_line(event), flush=True)
                if args.no_follow and (msg.metadata.num_pending == 0 or msg.metadata.sequence.stream >= last):
                    return 0
        finally:
            await sub.unsubscribe()


def _wanted(event: Envelope, args: argparse.Namespace) -> bool:
    if args.task and event.task_id != args.task:
        return False
    return not (args.type and not fnmatch.fnmatch(event.type, args.type))
