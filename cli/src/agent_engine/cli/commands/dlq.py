"""`agentctl dlq list` and `dlq replay`: messages a service dead-lettered."""

from __future__ import annotations

import argparse
import asyncio
import json
from contextlib import aclosing
from typing import Any

from nats.js.errors import NotFoundError

from agent_engine.cli.client import CliError, connect, stored
from agent_engine.cli.options import Subparsers, add_json, print_json
from agent_engine.contracts.subjects import DLQ_STREAM, dlq_subject
from agent_engine.runtime.bus import ERROR_HEADER as ERROR
from agent_engine.runtime.bus import ORIGINAL_SUBJECT_HEADER as ORIGINAL_SUBJECT
from agent_engine.runtime.bus import REDACTED_HEADER as REDACTED


def register(sub: Subparsers) -> None:
    dlq = sub.add_parser("dlq", help="the dead-letter queue: messages a service could not handle")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dl = dlq_sub.add_parser("list", help="every dead-lettered message with its service and error")
    dl.add_argument("--service", help="only this service's (router, guardrails, agent-runner, tool-runner)")
    add_json(dl)
    dl.set_defaults(func=cmd_list)
    dr = dlq_sub.add_parser("replay", help="publish a dead-lettered message to its original subject again "
                            "(not a gate's redacted copy)")
    dr.add_argument("seq", type=int, help="its number in `agentctl dlq list`")
    dr.set_defaults(func=cmd_replay)


def cmd_list(args: argparse.Namespace) -> int:
    entries = asyncio.run(entries_of(args.service))
    if args.json:
        print_json(entries)
    elif not entries:
        print("the dead-letter queue is empty")
    else:
        for e in entries:
            print(f"#{e['seq']:<6} {e['time'][:23]}  {e['service']:<13} {e['original_subject'] or '(stub)'}  "
                  f"{e['error']}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    subject = asyncio.run(replay(args.seq))
    print(f"replayed #{args.seq} to {subject} and removed it from the dead-letter queue")
    return 0


async def entries_of(service: str | None) -> list[dict[str, Any]]:
    async with connect() as engine:
        js = engine.js
        if (await js.stream_info(DLQ_STREAM)).state.messages == 0:
            return []
        entries = []
        async with aclosing(stored(js, dlq_subject(">"))) as msgs:
            async for msg in msgs:
                headers = msg.headers or {}
                tokens = msg.subject.split(".")  # aedlq.<service>[.<tenant>]
                if service and tokens[1] != service:
                    continue
                entries.append({"seq": msg.metadata.sequence.stream, "time": str(msg.metadata.timestamp),
                                "service": tokens[1], "tenant": tokens[2] if len(tokens) > 2 else None,
                                "original_subject": headers.get(ORIGINAL_SUBJECT),
                                "error": headers.get(ERROR) or _stub_error(msg.data), "bytes": len(msg.data)})
        return entries


def _stub_error(data: bytes) -> str:
    try:
        return str(json.loads(data).get("error", ""))
    except (ValueError, AttributeError):
        return ""


async def replay(seq: int) -> str:
    async with connect() as engine:
        try:
            msg = await engine.js.get_msg(DLQ_STREAM, seq)
        except NotFoundError:
            raise CliError(f"no dead-lettered message #{seq} (`agentctl dlq list`)") from None
        headers = dict(msg.headers or {})
        subject = headers.pop(ORIGINAL_SUBJECT, None)
        if not subject:
            raise CliError(f"#{seq} is a stub of a record too large to publish; there is nothing to replay")
        redacted = headers.pop(REDACTED, None)
        if redacted is not None and redacted != "none":
            raise CliError(
                f"#{seq} is a copy with personal data redacted ({redacted}); the original was not kept, so replaying "
                "it would hand the redacted values on as if they were the real ones. The router dispatches the node "
                "again when its deadline passes")
        headers.pop(ERROR, None)
        await engine.js.publish(subject, msg.data or b"", headers=headers or None)
        await engine.js.delete_msg(DLQ_STREAM, seq)
        return str(subject)
