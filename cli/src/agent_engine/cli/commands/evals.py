"""`agentctl eval DIR`: run golden cases (evalcases.py) against the running stack and print a table of
every assertion; exit 1 when any fails.

Each case pushes its workflow, submits its input as a fresh task, waits for the task to end, then reads the
task as the router stored it (`task show`, and `task history` for the cost and provider of every LLM call,
subtasks included) and checks the assertions against that. `provider: mock` cases are replayed offline by the
mock provider, scripted per node by the workflow's mock/ files; the case also fails if any call was answered
by another provider (start the stack with AE_PROVIDER=mock for that).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

from agent_engine.cli.client import CliError, Engine, connect
from agent_engine.cli.commands.workflow import load_valid
from agent_engine.cli.evalcases import Case, CaseError, Verdict, case_files, check, load_case, outcome_of
from agent_engine.cli.options import Subparsers, add_json, add_tenant, print_json
from agent_engine.contracts.events import NodeApprovalDecided, TaskRequested
from agent_engine.contracts.subjects import ROUTER_RPC
from agent_engine.runtime import workflows

ENDS = ("task.succeeded", "task.failed", "task.cancelled", "task.rejected")
MOCK_PROVIDERS = ("mock", "recorded:mock")


def register(sub: Subparsers) -> None:
    ev = sub.add_parser("eval", help="run golden cases (DIR/*.yaml, or every examples/*/evals/ under DIR) against "
                        "the running stack; print each assertion's result; exit 1 if any fails")
    ev.add_argument("dir", help="a directory of case files, one case file, or a directory of workflows with evals/")
    ev.add_argument("--approve-tools", action="store_true", help="approve tool calls the tool gate holds, as "
                    "`agentctl run --approve-tools` does")
    add_tenant(ev)
    add_json(ev, help="the verdicts as JSON")
    ev.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        cases = [load_case(path) for path in case_files(Path(args.dir))]
    except CaseError as exc:
        raise CliError(str(exc)) from None
    verdicts = asyncio.run(run_cases(cases, args.tenant, args.approve_tools))
    failed = [v for v in verdicts if not v.passed]
    if args.json:
        print_json({"cases": len(cases), "assertions": len(verdicts), "failed": len(failed),
                    "verdicts": [v.as_json() for v in verdicts]})
    else:
        table(verdicts)
        print(f"{len(cases)} case(s), {len(verdicts)} assertion(s), {len(failed)} failed")
    return 1 if failed else 0


def table(verdicts: list[Verdict]) -> None:
    width = max([len("CASE")] + [len(v.case) for v in verdicts]) + 2
    awidth = max([len("ASSERTION")] + [len(v.assertion) for v in verdicts]) + 2
    print(f"{'CASE':<{width}}{'ASSERTION':<{awidth}}{'RESULT':<8}WHY")
    for v in verdicts:
        print(f"{v.case:<{width}}{v.assertion:<{awidth}}{'pass' if v.passed else 'FAIL':<8}{v.why}")


async def run_cases(cases: list[Case], tenant: str | None, approve_tools: bool) -> list[Verdict]:
    verdicts: list[Verdict] = []
    async with connect() as engine:
        tenant = engine.tenant(tenant)
        for case in cases:
            verdicts += await run_case(engine, tenant, case, approve_tools)
    return verdicts


async def run_case(engine: Engine, tenant: str, case: Case, approve_tools: bool) -> list[Verdict]:
    loaded = load_valid(str(case.workflow))
    assert loaded.manifest is not None
    kv = workflows.tenant_bucket(engine.js) if engine.scope else await workflows.bucket(engine.js)
    await workflows.push(kv, tenant, loaded.revision, loaded.manifest)
    task_id = str(uuid.uuid4())
    request = TaskRequested(workflow=loaded.manifest.name, input=case.input, requested_by=engine.sender)
    print(f"case {case.name}: task {task_id} ({case.file})", file=sys.stderr, flush=True)
    try:
        async with engine.request(request, tenant=tenant, task_id=task_id) as events:
            while True:
                event = await events.next(case.timeout_s)
                if approve_tools and event.type == "node.approval_requested" and event.data.get("rule"):
                    await engine.send(NodeApprovalDecided(node=event.data["node"], decision="approve",
                                                          decided_by=engine.sender, reason="agentctl eval "
                                                          "--approve-tools"), tenant=tenant, task_id=task_id)
                if event.type in ENDS:
                    break
    except CliError as exc:  # the task did not end in time: every assertion of the case fails, saying so
        return [Verdict(case.name, a.label, False, str(exc)) for a in case.expect]
    if event.type == "task.rejected":
        shown: dict[str, Any] = {"status": "rejected", "reason": event.data.get("reason", ""), "nodes": []}
        calls: list[dict[str, Any]] = []
    else:
        shown = await engine.query(ROUTER_RPC, "task.show", {"task_id": task_id})
        calls = await llm_calls(engine, task_id, shown)
    outcome = outcome_of(shown, [str(c.get("cost_usd") or "0") for c in calls if c.get("outcome") != "failed"])
    verdicts = [Verdict(case.name, a.label, *check(a, outcome)) for a in case.expect]
    if case.provider == "mock":
        other = sorted({f"{c.get('provider')}/{c.get('model')}" for c in calls
                        if c.get("provider") not in MOCK_PROVIDERS})
        verdicts.append(Verdict(case.name, "provider mock", not other,
                                f"calls answered by {', '.join(other)}: start the stack with AE_PROVIDER=mock"
                                if other else f"{len(calls)} call(s), all by the mock"))
    return verdicts


async def llm_calls(engine: Engine, task_id: str, shown: dict[str, Any]) -> list[dict[str, Any]]:
    """Every LLM call of the task and its subtasks, as the runners' results the router recorded note them."""
    records = (await engine.query(ROUTER_RPC, "task.history", {"task_id": task_id}))["events"]
    calls = [note for r in records if r["type"] == "router.input"
             for note in r["data"]["input"]["data"].get("llm_calls") or []]
    for sub in shown.get("subtasks") or []:
        sub_shown = await engine.query(ROUTER_RPC, "task.show", {"task_id": sub["task_id"]})
        calls += await llm_calls(engine, sub["task_id"], sub_shown)
    return calls
