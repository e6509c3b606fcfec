"""`agentctl tenant forget NAME [--person ID] --yes`: erase a tenant's data, or one data subject's.

The router destroys the data keys (its stored records stay, sealed for good, so the audit chain over them
still verifies) and deletes the memory notes; then this command purges the tenant's (or the person's
tasks') messages from the event stream, the dead-letter queue and the tool-call log. Registered into the
`tenant` group by `register_forget`. Page: docs/data-lifecycle.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from typing import Any

from nats.js.errors import NotFoundError

from agent_engine.cli.client import CliError, Engine, connect, stored
from agent_engine.cli.options import Subparsers, add_json, print_json
from agent_engine.contracts.envelope import TENANT_PATTERN
from agent_engine.contracts.subjects import (
    DLQ_PREFIX,
    DLQ_STREAM,
    ROUTER_RPC,
    STREAM,
    TOOL_CALLS_BUCKET,
    tenant_from_subject,
    tenant_subject,
)
from agent_engine.runtime.artifacts import ArtifactStore
from agent_engine.runtime.bus import ORIGINAL_SUBJECT_HEADER as ORIGINAL_SUBJECT
from agent_engine.runtime.bus import TASK_ID_HEADER

TOOL_CALLS_STREAM = f"KV_{TOOL_CALLS_BUCKET}"
PERSON_MAX = 256


@dataclass
class Forgotten:
    tenant: str
    person: str | None
    keys_destroyed: int = 0
    tasks_erased: int = 0
    memory_notes_deleted: int = 0
    stream_messages_purged: int = 0
    dead_letters_purged: int = 0
    tool_calls_purged: int = 0
    artifacts_deleted: int = 0
    task_ids: list[str] = field(default_factory=list)


def register_forget(tenant_sub: Subparsers) -> None:
    """Add `forget` to the `tenant` command group."""
    cmd = tenant_sub.add_parser(
        "forget", help="erase a tenant's data (or one data subject's): destroy its keys, purge its messages",
        description="Destroy the tenant's data keys (or, with --person, that data subject's), so none of its "
                    "stored records can be read again, and purge its messages from the event stream, the "
                    "dead-letter queue, the tool-call log and its memory notes, and (without --person) delete its "
                    "artifacts. There is no undo.")
    cmd.add_argument("name", help="the tenant")
    cmd.add_argument("--person", metavar="ID",
                     help="only this data subject: the tasks whose request named it as `data_subject`")
    cmd.add_argument("--yes", action="store_true", help="confirm: without it nothing is done")
    add_json(cmd)
    cmd.set_defaults(func=cmd_forget)


def cmd_forget(args: argparse.Namespace) -> int:
    tenant, person = args.name, args.person
    if not re.fullmatch(TENANT_PATTERN, tenant):
        raise CliError(f"'{tenant}' is not a tenant name ({TENANT_PATTERN})")
    if person is not None and not 1 <= len(person) <= PERSON_MAX:
        raise CliError(f"--person must be 1 to {PERSON_MAX} characters")
    whose = f"data subject '{person}' of tenant '{tenant}'" if person else f"tenant '{tenant}'"
    if not args.yes:
        raise CliError(f"this destroys every stored record of {whose} for good (keys, stream messages, dead "
                       "letters, tool-call log, memory notes, artifacts); run again with --yes to do it")
    done = asyncio.run(forget(tenant, person))
    if args.json:
        print_json(asdict(done))
        return 0
    print(f"forgot {whose}:")
    for label, value in (("data keys destroyed", done.keys_destroyed),
                         ("tasks erased in the router's store", done.tasks_erased),
                         ("event stream messages purged", done.stream_messages_purged),
                         ("dead letters purged", done.dead_letters_purged),
                         ("tool-call log entries purged", done.tool_calls_purged),
                         ("memory notes deleted", done.memory_notes_deleted),
                         ("artifacts deleted", done.artifacts_deleted)):
        print(f"  {label + ':':<38}{value}")
    print("Queries about its tasks now answer 'erased'. Results of work still running when this ran are dropped "
          "by the router; run this again after a minute to purge any that reached the stream.")
    return 0


async def forget(tenant: str, person: str | None) -> Forgotten:
    async with connect() as engine:
        body: dict[str, Any] = {"tenant": tenant, "confirm": True}
        if person:
            body["person"] = person
        answer = await engine.query(ROUTER_RPC, "tenant.forget", body, timeout=120)
        done = Forgotten(tenant, person, int(answer["keys_destroyed"]), int(answer["tasks_erased"]),
                         int(answer["memory_notes_deleted"]), task_ids=list(answer.get("task_ids") or []))
        if person:
            ids = set(done.task_ids)
            mine: Callable[[str, dict[str, str], bytes], bool] = lambda _, h, d: _task_of(h, d) in ids  # noqa: E731
            done.stream_messages_purged = await _delete_matching(engine, STREAM, tenant_subject(tenant), mine)
            done.dead_letters_purged = await _delete_matching(engine, DLQ_STREAM, f"{DLQ_PREFIX}.*.{tenant}", mine)
            for task_id in sorted(ids):
                done.tool_calls_purged += await _purge(engine, TOOL_CALLS_STREAM,
                                                       f"$KV.{TOOL_CALLS_BUCKET}.{tenant}.{task_id}.>")
        else:
            done.stream_messages_purged = await _purge(engine, STREAM, tenant_subject(tenant))
            done.dead_letters_purged = await _purge(engine, DLQ_STREAM, f"{DLQ_PREFIX}.*.{tenant}")
            done.tool_calls_purged = await _purge(engine, TOOL_CALLS_STREAM, f"$KV.{TOOL_CALLS_BUCKET}.{tenant}.>")
            # its artifact bucket as a whole; with --person it stays: an artifact is stored once per tenant by
            # content, so one task's may be another's too (docs/data-lifecycle.md)
            done.artifacts_deleted = await ArtifactStore(engine.js).forget(tenant)

        def legacy(_: str, headers: dict[str, str], data: bytes) -> bool:  # dead letters without a tenant token
            if tenant_from_subject(headers.get(ORIGINAL_SUBJECT, "")) != tenant:
                return False
            return not person or _task_of(headers, data) in set(done.task_ids)

        done.dead_letters_purged += await _delete_matching(engine, DLQ_STREAM, f"{DLQ_PREFIX}.*", legacy)
        return done


async def _purge(engine: Engine, stream: str, subject: str) -> int:
    """Purge every message of `stream` on `subject`; returns how many there were."""
    try:
        info = await engine.js.stream_info(stream, subjects_filter=subject)
    except NotFoundError:
        return 0
    count = sum((info.state.subjects or {}).values())
    if count:
        await engine.js.purge_stream(stream, subject=subject)
    return count


async def _delete_matching(engine: Engine, stream: str, subject: str,
                           match: Callable[[str, dict[str, str], bytes], bool]) -> int:
    """Delete (and erase) each message of `stream` on `subject` that `match` picks; returns how many."""
    try:
        info = await engine.js.stream_info(stream, subjects_filter=subject)
    except NotFoundError:
        return 0
    if not sum((info.state.subjects or {}).values()):
        return 0
    picked: list[int] = []
    async with aclosing(stored(engine.js, subject, stream=stream, idle=2.0)) as msgs:
        async for msg in msgs:
            if match(msg.subject, dict(msg.headers or {}), msg.data or b""):
                picked.append(msg.metadata.sequence.stream)
    for seq in picked:
        try:
            await engine.js.delete_msg(stream, seq)
        except NotFoundError:  # gone already (aged out, or a concurrent purge)
            pass
    return len(picked)


def _task_of(headers: dict[str, str], data: bytes) -> str | None:
    """The task a message is about: its Ae-Task-Id header, else its envelope's task_id."""
    if headers.get(TASK_ID_HEADER):
        return headers[TASK_ID_HEADER]
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return None
    task_id = body.get("task_id") if isinstance(body, dict) else None
    return task_id if isinstance(task_id, str) else None
