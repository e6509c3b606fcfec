"""`agentctl tail`: print events as they happen, or what is stored."""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from agent_engine.cli import render
from agent_engine.cli.client import CliError, connect
from agent_engine.cli.options import Subparsers, add_json
from agent_engine.contracts.binding import structured_body
from agent_engine.contracts.envelope import TENANT_PATTERN, Envelope
from agent_engine.contracts.subjects import STREAM, tail_consumer, tenant_subject

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
    try:
        return datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})
    except OverflowError:  # 99999999999d: before year 1, a named error rather than a traceback
        raise CliError(f"--since {text!r}: too far back") from None


async def tail(args: argparse.Namespace) -> int:
    if args.tenant and not re.match(TENANT_PATTERN, args.tenant):
        raise CliError(f"--tenant {args.tenant!r} is not a valid tenant name")
    history = args.all or args.task or args.since or args.no_follow
    config: dict[str, Any] = {"deliver_policy": DeliverPolicy.ALL if history else DeliverPolicy.NEW}
    if args.since:
        config = {"deliver_policy": DeliverPolicy.BY_START_TIME,
                  "opt_start_time": parse_since(args.since).isoformat()}
    async with connect() as engine:
        tenant = engine.tenant(args.tenant) if engine.scope or args.tenant else "*"
        last = (await engine.js.stream_info(STREAM)).state.last_seq if not engine.scope else None
        # a consumer of its own, named after the credential: a tenant's permissions allow exactly this name,
        # filtered to its own subjects (the server checks the filter), and nothing else of the stream
        cred = engine.credential
        name = tail_consumer(cred.tenant, cred.user) if cred and cred.tenant else f"tail_{uuid.uuid4().hex}"
        await engine.js.add_consumer(STREAM, ConsumerConfig(
            name=name, filter_subject=tenant_subject(tenant), ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0, **config))
        sub = await engine.js.pull_subscribe_bind(name, stream=STREAM)
        try:
            while True:
                try:
                    msgs = await sub.fetch(64, timeout=1.0)
                except (TimeoutError, NatsTimeout):
                    if args.no_follow:
                        return 0
                    continue
                for msg in msgs:
                    try:
                        event = Envelope.from_bytes(structured_body(msg.data, msg.headers))
                    except Exception:  # noqa: BLE001
                        event = None
                    if event is not None and _wanted(event, args):
                        print(event.to_bytes().decode() if args.json else render.event_line(event), flush=True)
                    seq = msg.metadata.sequence.stream
                    at_end = msg.metadata.num_pending == 0 or (last is not None and seq >= last)
                    if args.no_follow and at_end:
                        return 0
        finally:
            try:
                await engine.js.delete_consumer(STREAM, name)
            except Exception:  # noqa: BLE001  it expires on its own after a minute idle
                pass


def _wanted(event: Envelope, args: argparse.Namespace) -> bool:
    if args.task and event.task_id != args.task:
        return False
    return not (args.type and not fnmatch.fnmatch(event.type, args.type))
