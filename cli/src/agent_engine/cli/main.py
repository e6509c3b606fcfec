"""agentctl: the operator CLI. `agentctl --help` lists the commands; each has its own --help."""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import getpass
import json
import os
import re
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from agent_engine.cli import render
from agent_engine.cli.client import (
    CliError,
    TaskEvents,
    connected,
    publish_request,
    request_envelope,
    rpc,
)
from agent_engine.cli.stack import Stack
from agent_engine.contracts.envelope import TENANT_PATTERN, Envelope
from agent_engine.contracts.events import NodeApprovalDecided, TaskCancelRequested, TaskForkRequested
from agent_engine.contracts.manifest import ToolSpec
from agent_engine.contracts.subjects import (
    AGENT_RUNNER_RPC,
    DLQ_PREFIX,
    DLQ_STREAM,
    PREFIX,
    ROUTER_RPC,
    STREAM,
    TELEMETRY_RPC,
)
from agent_engine.runtime import manifests, workflows
from agent_engine.runtime.bus import MSG_ID, TASK_ID_HEADER

DEFAULT_TENANT = "default"


# --- stack ------------------------------------------------------------------------------------

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
        print(json.dumps(rows, indent=2))
    else:
        render.components(rows)
    return 0


# --- workflows --------------------------------------------------------------------------------

def load_valid(directory: str) -> manifests.Loaded:
    loaded = manifests.load(Path(directory))
    if loaded.errors:
        for error in loaded.errors:
            print(f"{directory.rstrip('/')}/{error}", file=sys.stderr)
        raise CliError(f"{directory}: {len(loaded.errors)} error(s); nothing was pushed or run")
    return loaded


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_valid(args.dir)
    assert loaded.manifest is not None
    print(f"{args.dir}: workflow '{loaded.manifest.name}' is valid "
          f"({len(loaded.manifest.nodes)} nodes, revision {loaded.revision[:12]})")
    return 0


async def push(loaded: manifests.Loaded, tenant: str) -> None:
    assert loaded.manifest is not None
    async with connected() as (_, js):
        kv = await workflows.bucket(js)
        changed = await workflows.push(kv, tenant, loaded.revision, loaded.manifest)
    state = "pushed" if changed else "unchanged"
    print(f"{state}: workflow '{loaded.manifest.name}' revision {loaded.revision[:12]} (tenant {tenant})",
          file=sys.stderr)


def cmd_push(args: argparse.Namespace) -> int:
    asyncio.run(push(load_valid(args.dir), args.tenant))
    return 0


# --- submit and run ---------------------------------------------------------------------------

def parse_input(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    text = raw
    if raw.startswith("@"):
        path = Path(raw[1:])
        if not path.is_file():
            raise CliError(f"--input {raw}: no such file")
        text = path.read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--input is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError("--input must be a JSON object")
    return value


async def submit(workflow: str, task_input: dict[str, Any], tenant: str, key: str | None,
                 timeout: float, follow: bool = False, quiet: bool = False, priority: int = 0) -> int:
    envelope = request_envelope(tenant, workflow, task_input, key, priority)
    async with connected() as (nc, js):
        if key:
            try:
                existing = await rpc(nc, ROUTER_RPC, "task.show", {"task_id": envelope.task_id})
                print(envelope.task_id)
                print(f"task exists for idempotency key '{key}' (status {existing['status']})", file=sys.stderr)
                if existing["status"] == "rejected":
                    print(f"rejected by router: {existing['reason']}; submit with a new key to try again",
                          file=sys.stderr)
                    return 2
                if follow and existing["status"] != "succeeded":
                    print(f"not following it: `agentctl task show {envelope.task_id}` tells more", file=sys.stderr)
                    return 1
                return 0
            except CliError:
                pass
        async with TaskEvents(nc, tenant, envelope.task_id) as events:
            await publish_request(js, envelope, nc.max_payload)
            while True:
                event = await events.next(timeout)
                if event.type == "task.rejected":
                    print(envelope.task_id)
                    print(f"rejected by {event.data.get('stage')}: {event.data.get('reason')}", file=sys.stderr)
                    return 2
                if event.type == "task.queued":
                    print(f"task {envelope.task_id} queued: {event.data.get('reason')}", file=sys.stderr)
                    if not follow:
                        print(envelope.task_id)
                        return 0
                    continue
                if event.type == "task.started":
                    if not follow:
                        print(envelope.task_id)
                        return 0
                    print(f"task {envelope.task_id} started: workflow {workflow} "
                          f"revision {event.data['revision'][:12]}", file=sys.stderr)
                    return await follow_task(events, timeout, quiet)


async def follow_task(events: TaskEvents, timeout: float, quiet: bool, first: Envelope | None = None) -> int:
    started = time.monotonic()
    while True:
        event = await events.next(timeout)
        if first is not None and event.id == first.id:
            continue
        if not quiet:
            line = render.progress(event)
            if line:
                print(line, flush=True)
        if event.type == "task.cancelled":
            print(f"task {event.task_id} cancelled: {event.data.get('reason', '')}", flush=True)
            return 1
        if event.type in ("task.succeeded", "task.failed"):
            elapsed = time.monotonic() - started
            status = event.data["status"]
            print(f"task {event.task_id} {status} in {elapsed:.2f}s: {event.data.get('reason', '')}", flush=True)
            return 0 if status == "succeeded" else 1


def cmd_submit(args: argparse.Namespace) -> int:
    return asyncio.run(submit(args.workflow, parse_input(args.input), args.tenant, args.idempotency_key,
                              args.timeout, priority=args.priority))


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load_valid(args.dir)
    task_input = parse_input(args.input)
    assert loaded.manifest is not None
    name = loaded.manifest.name

    async def go() -> int:
        await push(loaded, args.tenant)
        return await submit(name, task_input, args.tenant, args.idempotency_key, args.timeout,
                            follow=True, priority=args.priority)
    return asyncio.run(go())


# --- inspect ----------------------------------------------------------------------------------

def cmd_task_show(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with connected() as (nc, _):
            return await rpc(nc, ROUTER_RPC, "task.show", {"task_id": args.task_id})
    shown = asyncio.run(go())
    if args.json:
        print(json.dumps(shown, indent=2))
    else:
        render.task(shown)
    return 0


def cmd_task_history(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with connected() as (nc, _):
            return await rpc(nc, ROUTER_RPC, "task.history", {"task_id": args.task_id})
    events = asyncio.run(go())["events"]
    if args.json:
        print(json.dumps(events, indent=2))
    else:
        for seq, raw in enumerate(events, start=1):
            print(f"{seq:>4} " + render.event_line(Envelope.model_validate(raw)))
    return 0


async def cancel(task_id: str, reason: str, timeout: float) -> int:
    async with connected() as (nc, js):
        shown = await rpc(nc, ROUTER_RPC, "task.show", {"task_id": task_id})
        if shown["status"] in ("succeeded", "failed", "rejected", "cancelled"):
            raise CliError(f"task {task_id} is already {shown['status']}; nothing to cancel")
        tenant = shown["tenant"]
        request = Envelope(id=str(uuid.uuid4()), source="agentctl", type=TaskCancelRequested.TYPE,
                           time=datetime.now(UTC), tenant=tenant, task_id=task_id, correlation_id=task_id,
                           data=TaskCancelRequested(reason=reason, requested_by="agentctl").model_dump())
        async with TaskEvents(nc, tenant, task_id) as events:
            await js.publish(f"{PREFIX}.{tenant}.{TaskCancelRequested.TYPE}", request.to_bytes(),
                             headers={MSG_ID: request.id, TASK_ID_HEADER: task_id})
            while True:
                event = await events.next(timeout)
                if event.type == "task.cancelled":
                    running = ", ".join(event.data.get("open_nodes", [])) or "none"
                    print(f"task {task_id} cancelled (nodes running at the time: {running})")
                    return 0
                if event.type in ("task.succeeded", "task.failed"):
                    print(f"task {task_id} {event.data['status']} before the cancel arrived", file=sys.stderr)
                    return 1


async def decide_approval(task_id: str, node: str, decision: str, by: str, reason: str,
                          edited: dict[str, Any] | None, timeout: float) -> int:
    async with connected() as (nc, js):
        shown = await rpc(nc, ROUTER_RPC, "task.show", {"task_id": task_id})
        waiting = [n["node"] for n in shown["nodes"] if n["status"] == "awaiting_approval"]
        if node not in waiting:
            raise CliError(f"node '{node}' of task {task_id} is not waiting for approval "
                           f"(task {shown['status']}; waiting: {', '.join(waiting) or 'none'})")
        tenant = shown["tenant"]
        data = NodeApprovalDecided(node=node, decision="approve" if decision == "approve" else "reject",
                                   decided_by=by, reason=reason, args=edited)
        request = Envelope(id=str(uuid.uuid4()), source="agentctl", type=NodeApprovalDecided.TYPE,
                           time=datetime.now(UTC), tenant=tenant, task_id=task_id, correlation_id=task_id,
                           data=data.model_dump(exclude_none=True))
        async with TaskEvents(nc, tenant, task_id) as events:
            await js.publish(f"{PREFIX}.{tenant}.{NodeApprovalDecided.TYPE}", request.to_bytes(),
                             headers={MSG_ID: request.id, TASK_ID_HEADER: task_id})
            while True:
                event = await events.next(timeout)
                if event.data.get("node") != node:
                    continue
                if event.type == "node.approval_refused":
                    print(f"refused: {event.data['reason']}", file=sys.stderr)
                    return 2
                if event.type == "node.approved":
                    edited_note = " with edited arguments" if event.data.get("edited") else ""
                    print(f"approved node '{node}' of task {task_id}{edited_note}; it is dispatched")
                    return 0
                if event.type == "node.failed":
                    print(f"rejected node '{node}' of task {task_id}: the task fails")
                    return 0


def operator() -> str:
    return os.environ.get("AE_OPERATOR") or getpass.getuser()


def cmd_approve(args: argparse.Namespace) -> int:
    edited = parse_input(args.edit) if args.edit else None
    return asyncio.run(decide_approval(args.task_id, args.node, "approve", args.by, "", edited, args.timeout))


def cmd_reject(args: argparse.Namespace) -> int:
    return asyncio.run(decide_approval(args.task_id, args.node, "reject", args.by, args.reason, None, args.timeout))


def cmd_task_cancel(args: argparse.Namespace) -> int:
    return asyncio.run(cancel(args.task_id, args.reason, args.timeout))


def fork_plan(records: list[dict[str, Any]], at: int, live: bool = False) -> tuple[int, list[str]]:
    """Where a fork's copied history ends (the router rounds to the end of a decision) and the steps with
    side effects that may run again in it: tool nodes, and agent nodes whose model may call such tools (unless
    the fork reuses the output the source recorded for them)."""
    if not 1 <= at <= len(records):
        raise CliError(f"--at must be between 1 and {len(records)} (the task's records, as `task history` numbers "
                       "them)")
    cut = next((i for i in range(at, len(records)) if records[i]["type"] == "router.input"), len(records))
    manifest: dict[str, Any] = {}
    settled: set[str] = set()
    revision: dict[str, int] = {}
    answered: set[tuple[str, int]] = set()  # (node, revision) with a recorded output: a fork reuses it
    at_cut: dict[str, int] = {}
    for index, record in enumerate(records):
        data = record.get("data", {})
        if record["type"] == "task.started" and index < cut:
            manifest = data["workflow_manifest"]
        elif record["type"] == "task.forked" and index < cut:
            raise CliError("forking a fork is not supported; fork the original task")
        elif record["type"] == "node.revision_requested":
            for node in data["reset"]:
                revision[node] = data["revision"]
                if index < cut:
                    settled.discard(node)
        elif record["type"] in ("node.succeeded", "node.skipped"):
            if record["type"] == "node.succeeded":
                answered.add((data["node"], revision.get(data["node"], 0)))
            if index < cut:
                settled.add(data["node"])
        if index == cut - 1:
            at_cut = dict(revision)
    tools = {name: ToolSpec.model_validate(t) for name, t in manifest.get("tools", {}).items()}
    agents = manifest.get("agents", {})
    risky = []
    for n in manifest.get("nodes", []):
        if n["id"] in settled:
            continue
        if n.get("kind") == "tool" and n.get("tool") in tools and tools[n["tool"]].has_side_effects:
            risky.append(n["id"])
        elif n.get("kind") == "agent" and (live or (n["id"], at_cut.get(n["id"], 0)) not in answered):
            names = [t for t in agents.get(n.get("agent"), {}).get("tools", [])
                     if t in tools and tools[t].has_side_effects]
            if names:
                risky.append(f"{n['id']} (its model may call {', '.join(names)})")
    return cut, risky


async def fork(task_id: str, at: int, live: bool, yes: bool, dry_run: bool, timeout: float) -> int:
    async with connected() as (nc, js):
        records = (await rpc(nc, ROUTER_RPC, "task.history", {"task_id": task_id}))["events"]
        cut, risky = fork_plan(records, at, live)
        tenant = records[0]["tenant"]
        print(f"fork of {task_id}: copies records 1-{cut}"
              + (f" (to the end of the decision record {at} belongs to)" if cut != at else "")
              + ("; agent steps call the model again (--live)" if live else
                 "; agent steps reuse the outputs the task recorded"), file=sys.stderr)
        if risky:
            print("tool steps with side effects that may run again: " + ", ".join(risky), file=sys.stderr)
        if dry_run:
            return 0
        if risky and not yes:
            print("nothing was forked; pass --yes to run them", file=sys.stderr)
            return 1
        new_id = str(uuid.uuid4())
        request = Envelope(id=str(uuid.uuid4()), source="agentctl", type=TaskForkRequested.TYPE,
                           time=datetime.now(UTC), tenant=tenant, task_id=new_id, correlation_id=new_id,
                           data=TaskForkRequested(source_task_id=task_id, at=at, live=live,
                                                  requested_by="agentctl").model_dump())
        async with TaskEvents(nc, tenant, new_id) as events:
            await js.publish(f"{PREFIX}.{tenant}.{TaskForkRequested.TYPE}", request.to_bytes(),
                             headers={MSG_ID: request.id, TASK_ID_HEADER: new_id})
            while True:
                event = await events.next(timeout)
                if event.type == "task.rejected":
                    print(new_id)
                    raise CliError(event.data.get("reason", "rejected"))
                if event.type == "task.forked":
                    print(f"task {new_id} forked from {task_id}", file=sys.stderr)
                    return await follow_task(events, timeout, quiet=False, first=event)


def cmd_task_fork(args: argparse.Namespace) -> int:
    return asyncio.run(fork(args.task_id, args.at, args.live, args.yes, args.dry_run, args.timeout))


def cmd_task_replay(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with connected() as (nc, _):
            return await rpc(nc, ROUTER_RPC, "task.replay", {"task_id": args.task_id}, timeout=30)
    report = asyncio.run(go())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render.replay(report)
    return 0 if report["identical"] else 1


async def dlq_entries(service: str | None) -> list[dict[str, Any]]:
    async with connected() as (_, js):
        if (await js.stream_info(DLQ_STREAM)).state.messages == 0:
            return []
        queue: asyncio.Queue[Any] = asyncio.Queue()
        sub = await js.subscribe(f"{DLQ_PREFIX}.{service or '*'}", ordered_consumer=True, cb=queue.put,
                                 deliver_policy=DeliverPolicy.ALL)
        entries = []
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    break
                headers = msg.headers or {}
                entries.append({"seq": msg.metadata.sequence.stream, "time": str(msg.metadata.timestamp),
                                "service": msg.subject.split(".", 1)[1],
                                "original_subject": headers.get("Ae-Original-Subject"),
                                "error": headers.get("Ae-Error") or _stub_error(msg.data), "bytes": len(msg.data)})
                if msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        return entries


def _stub_error(data: bytes) -> str:
    try:
        return str(json.loads(data).get("error", ""))
    except (ValueError, AttributeError):
        return ""


def cmd_dlq_list(args: argparse.Namespace) -> int:
    entries = asyncio.run(dlq_entries(args.service))
    if args.json:
        print(json.dumps(entries, indent=2))
    elif not entries:
        print("the dead-letter queue is empty")
    else:
        for e in entries:
            print(f"#{e['seq']:<6} {e['time'][:23]}  {e['service']:<13} {e['original_subject'] or '(stub)'}  "
                  f"{e['error']}")
    return 0


async def dlq_replay(seq: int) -> str:
    async with connected() as (_, js):
        try:
            msg = await js.get_msg(DLQ_STREAM, seq)
        except NotFoundError:
            raise CliError(f"no dead-lettered message #{seq} (`agentctl dlq list`)") from None
        headers = dict(msg.headers or {})
        subject = headers.pop("Ae-Original-Subject", None)
        if not subject:
            raise CliError(f"#{seq} is a stub of a record too large to publish; there is nothing to replay")
        headers.pop("Ae-Error", None)
        await js.publish(subject, msg.data or b"", headers=headers or None)
        await js.delete_msg(DLQ_STREAM, seq)
        return str(subject)


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    subject = asyncio.run(dlq_replay(args.seq))
    print(f"replayed #{args.seq} to {subject} and removed it from the dead-letter queue")
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with connected() as (nc, _):
            return await rpc(nc, TELEMETRY_RPC, "ledger", {"task_id": args.task, "tenant": args.tenant})
    ledger = asyncio.run(go())
    if args.json or not args.task:
        print(json.dumps(ledger, indent=2))
    else:
        render.task_cost(ledger)
    return 0


def cmd_providers(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with connected() as (nc, _):
            return await rpc(nc, AGENT_RUNNER_RPC, "providers", {})
    status = asyncio.run(go())
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        render.providers(status)
    return 0


DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_since(text: str) -> datetime:
    match = DURATION.match(text)
    if not match:
        raise CliError(f"--since {text!r}: use a duration such as 30s, 10m, 2h or 1d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})


async def tail(args: argparse.Namespace) -> int:
    if args.tenant and not re.match(TENANT_PATTERN, args.tenant):
        raise CliError(f"--tenant {args.tenant!r} is not a valid tenant name")
    subject = f"{PREFIX}.{args.tenant or '*'}.>"
    history = args.all or args.task or args.since or args.no_follow
    config: dict[str, Any] = {"deliver_policy": DeliverPolicy.ALL if history else DeliverPolicy.NEW}
    if args.since:
        config = {"deliver_policy": DeliverPolicy.BY_START_TIME,
                  "opt_start_time": parse_since(args.since).isoformat()}
    async with connected() as (_, js):
        last = (await js.stream_info(STREAM)).state.last_seq
        queue: asyncio.Queue[Any] = asyncio.Queue()
        sub = await js.subscribe(subject, ordered_consumer=True, cb=queue.put, **config)
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    if args.no_follow:
                        return 0
                    continue
                try:
                    event = Envelope.from_bytes(msg.data)
                except Exception:  # noqa: BLE001
                    event = None
                if event is not None and _wanted(event, args):
                    print(event.model_dump_json() if args.json else render.event_line(event), flush=True)
                if args.no_follow and (msg.metadata.num_pending == 0 or msg.metadata.sequence.stream >= last):
                    return 0
        finally:
            await sub.unsubscribe()


def _wanted(event: Envelope, args: argparse.Namespace) -> bool:
    if args.task and event.task_id != args.task:
        return False
    return not (args.type and not fnmatch.fnmatch(event.type, args.type))


def cmd_tail(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(tail(args))
    except KeyboardInterrupt:
        return 0


# --- parser -----------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentctl", description="Run, inspect and operate Agent Engine. "
                                "Commands find the running stack through AE_HOME (default ~/.agent-engine) "
                                "or AE_NATS_URL.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start NATS, PostgreSQL and the five services (idempotent)")
    up.add_argument("--detach", "-d", action="store_true", help="leave the stack running and return")
    up.add_argument("--workspace", help="the only directory the tool-runner's file tools may read "
                    "(default: $AE_HOME/workspace)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop everything `up` started").set_defaults(func=cmd_down)
    ps = sub.add_parser("ps", help="each component's name, pid and status")
    ps.add_argument("--json", action="store_true")
    ps.set_defaults(func=cmd_ps)

    def tenant(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--tenant", default=DEFAULT_TENANT, help=f"tenant (default: {DEFAULT_TENANT})")

    wf = sub.add_parser("workflow", help="validate and push workflow manifests")
    wf_sub = wf.add_subparsers(dest="workflow_command", required=True, metavar="ACTION")
    v = wf_sub.add_parser("validate", help="check a workflow directory; every error names file, node and rule")
    v.add_argument("dir")
    v.set_defaults(func=cmd_validate)
    pu = wf_sub.add_parser("push", help="store a workflow revision (SHA-256 of its manifests) in the registry")
    pu.add_argument("dir")
    tenant(pu)
    pu.set_defaults(func=cmd_push)

    def task_args(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--input", help="task input: a JSON object, or @FILE")
        cmd.add_argument("--idempotency-key", help="the same key always names the same task")
        cmd.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for news (default 60)")
        cmd.add_argument("--priority", type=int, default=0, choices=range(-100, 101), metavar="-100..100",
                         help="when the tenant is at its limit of running tasks, higher priorities start first")
        tenant(cmd)

    sm = sub.add_parser("submit", help="submit a task; prints only its id on stdout; non-zero if rejected")
    sm.add_argument("workflow")
    task_args(sm)
    sm.set_defaults(func=cmd_submit)
    rn = sub.add_parser("run", help="validate, push, submit and follow a workflow; exit 0 only on success")
    rn.add_argument("dir")
    task_args(rn)
    rn.set_defaults(func=cmd_run)

    tl = sub.add_parser("tail", help="print events as they happen")
    tl.add_argument("--task", help="only this task's events (prints its past events too)")
    tenant_arg = tl.add_argument("--tenant", help="only this tenant's events")
    del tenant_arg
    tl.add_argument("--type", help="only these event types; glob, e.g. 'node.*'")
    tl.add_argument("--since", help="start this long ago: 30s, 10m, 2h, 1d")
    tl.add_argument("--all", action="store_true", help="start from the first stored event")
    tl.add_argument("--no-follow", action="store_true", help="print what is stored, then exit")
    tl.add_argument("--json", action="store_true", help="one JSON envelope per line")
    tl.set_defaults(func=cmd_tail)

    task = sub.add_parser("task", help="inspect one task")
    task_sub = task.add_subparsers(dest="task_command", required=True, metavar="ACTION")
    sh = task_sub.add_parser("show", help="status, nodes, attempts, timings, outputs, token usage")
    sh.add_argument("task_id")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=cmd_task_show)
    hi = task_sub.add_parser("history", help="every stored event of the task, in order")
    hi.add_argument("task_id")
    hi.add_argument("--json", action="store_true")
    hi.set_defaults(func=cmd_task_history)

    cn = task_sub.add_parser("cancel", help="stop a running task; results still on their way are recorded and "
                             "ignored")
    cn.add_argument("task_id")
    cn.add_argument("--reason", default="", help="why, recorded in the task's history")
    cn.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the router (default 30)")
    cn.set_defaults(func=cmd_task_cancel)
    rp = task_sub.add_parser("replay", help="re-run the recorded inputs through the running router and show any "
                             "difference from the stored events; exit 0 when identical")
    rp.add_argument("task_id")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=cmd_task_replay)
    fk = task_sub.add_parser("fork", help="start a new task from this task's history up to record AT; agent steps "
                             "after it reuse the recorded outputs unless --live; follows the new task")
    fk.add_argument("task_id")
    fk.add_argument("--at", type=int, required=True, metavar="EVENT_SEQ",
                    help="the last record to copy, numbered as `agentctl task history` prints them (from 1)")
    fk.add_argument("--live", action="store_true", help="call the models again instead of reusing their outputs")
    fk.add_argument("--yes", action="store_true", help="go ahead although tool steps with side effects may run again")
    fk.add_argument("--dry-run", action="store_true", help="only print what the fork would copy and run again")
    fk.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for news (default 60)")
    fk.set_defaults(func=cmd_task_fork)

    ap = sub.add_parser("approve", help="let a node that waits for approval run, optionally with edited arguments")
    ap.add_argument("task_id")
    ap.add_argument("node")
    ap.add_argument("--edit", help="replacement tool arguments: a JSON object, or @FILE; checked against the "
                    "tool's args_schema")
    rj = sub.add_parser("reject", help="refuse a node that waits for approval; the task fails")
    rj.add_argument("task_id")
    rj.add_argument("node")
    rj.add_argument("--reason", required=True, help="why, recorded in the task's history")
    for cmd, func in ((ap, cmd_approve), (rj, cmd_reject)):
        cmd.add_argument("--by", default=operator(), help="who decides (default: $AE_OPERATOR or the login name)")
        cmd.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the router (default 30)")
        cmd.set_defaults(func=func)

    dlq = sub.add_parser("dlq", help="the dead-letter queue: messages a service could not handle")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dl = dlq_sub.add_parser("list", help="every dead-lettered message with its service and error")
    dl.add_argument("--service", help="only this service's (router, guardrails, agent-runner, tool-runner)")
    dl.add_argument("--json", action="store_true")
    dl.set_defaults(func=cmd_dlq_list)
    dr = dlq_sub.add_parser("replay", help="publish a dead-lettered message to its original subject again")
    dr.add_argument("seq", type=int, help="its number in `agentctl dlq list`")
    dr.set_defaults(func=cmd_dlq_replay)

    cost = sub.add_parser("cost", help="token and cost ledger from telemetry: with --task, each call and node; "
                          "otherwise JSON by tenant, model and day")
    cost.add_argument("--task")
    cost.add_argument("--tenant")
    cost.add_argument("--json", action="store_true", help="the ledger as JSON")
    cost.set_defaults(func=cmd_cost)

    pr = sub.add_parser("providers", help="the agent-runner's LLM providers and each model's circuit breaker "
                        "(closed, open, half_open)")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_providers)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
