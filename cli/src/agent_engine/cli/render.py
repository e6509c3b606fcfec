"""Human-readable output. Anything produced by the mock provider is marked [mock]."""

from __future__ import annotations

import json
from typing import Any

from agent_engine.contracts.envelope import Envelope


def components(rows: list[dict[str, Any]]) -> None:
    print(f"{'NAME':<14}{'PID':>8}  {'STATUS':<9} {'READY':<7} WHERE")
    for row in rows:
        where = row.get("url") or row.get("log") or ""
        ready = row.get("ready")
        mark = "-" if ready is None else ("yes" if ready == "ready" else "no")
        print(f"{row['name']:<14}{row['pid'] or '-':>8}  {row['status']:<9} {mark:<7} {where}")
        if ready not in (None, "ready"):
            print(f"{'':<24}not ready: {ready}")


def _usage(usage: dict[str, Any] | None) -> str:
    if not usage:
        return ""
    return f"{usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out tokens"


def _by(data: dict[str, Any]) -> str:
    provider = data.get("provider") or ""
    if provider.startswith("tool:"):
        return f"tool {provider[5:]}"
    label = f"{provider}/{data.get('model')}" if data.get("model") else provider
    return f"{label} [mock]" if provider in ("mock", "recorded:mock") else label


def progress(event: Envelope) -> str | None:
    d = event.data
    if event.type == "node.succeeded":
        usage = _usage(d.get("usage"))
        return f"  ✓ {d['node']:<16} {_by(d):<26} attempt {d['attempt']}" + (f"  {usage}" if usage else "")
    if event.type == "node.failed":
        return f"  ✗ {d['node']:<16} {d['reason']}" + ("  (continued)" if d.get("continued") else "")
    if event.type == "node.merged":
        return f"  ⋈ {d['node']:<16} merged {len(d['arrived'])} input(s) under policy {d['policy']}"
    if event.type == "node.fanned_out":
        return f"  ⇉ {d['node']:<16} started {len(d['subtasks'])} subtask(s), collected by {d['merge']}"
    if event.type == "subtask.settled":
        return f"  · {d['node']:<16} subtask {d['index']} {d['status']}"
    if event.type == "node.revision_requested":
        return f"  ↺ {d['node']:<16} sends {d['target']} back: revision {d['revision']} of {d['max_revisions']}"
    if event.type == "node.approval_requested" and d.get("call_id"):  # a call the tool gate holds
        return (f"  ⏸ {d['node']:<16} call {d['call_id']} ({d.get('tool')}) waits for approval ({d.get('rule')}): "
                f"agentctl approve {event.task_id} {d['node']} | agentctl reject {event.task_id} {d['node']} "
                "--reason ...")
    if event.type == "node.approval_requested":
        why = f"paused ({d['reason']})" if d.get("pause") else "waits for approval"
        edit = "" if d.get("pause") == "confidence" else " [--edit ARGS]"
        return (f"  ⏸ {d['node']:<16} {why}: agentctl approve {event.task_id} {d['node']}{edit} "
                f"| agentctl reject {event.task_id} {d['node']} --reason ...")
    if event.type == "node.dispatched" and d.get("attempt", 1) > 1:
        return f"  ↻ {d['node']:<16} attempt {d['attempt']} ({d.get('reason')})"
    if event.type == "node.tool_turn_recorded":
        mark = " [mock]" if d.get("provider") == "mock" else ""
        return f"  ⚒ {d['node']:<16} turn {d['turn']}{mark}: " + ", ".join(_call(c) for c in d["calls"])
    if event.type == "node.tool_returned":
        result = f"error: {d['error']}" if d.get("error") else _brief(d.get("output"))
        return f"    ↳ {d['call_id']:<14} {d['tool']} → {result}"
    return None


def _call(call: dict[str, Any]) -> str:
    text = f"{call['tool']}({_brief(call.get('args'), 40)})"
    return text + (f" refused: {call.get('error')}" if call.get("refused") else "")


def _brief(value: Any, width: int = 70) -> str:
    text = json.dumps(value, ensure_ascii=False) if value is not None else ""
    return text if len(text) <= width else text[:width - 1] + "…"


def _calls_summary(calls: list[dict[str, Any]]) -> str:
    """An applied input's LLM calls, in order: e.g. `429 retry, tool_use` or `invalid, valid`."""
    parts = []
    for c in calls:
        if c.get("outcome") == "failed":
            parts.append(f"{c.get('status') or c.get('error_class')} {c.get('then')}")
        else:
            parts.append(str(c.get("outcome")) + (f" (repair {c['repair']})" if c.get("repair") else ""))
    return ", ".join(parts)


def event_line(event: Envelope) -> str:
    d = event.data
    summary = ""
    if event.type == "router.input":
        inner = d.get("input", {})
        summary = f"applied input {inner.get('type')} {inner.get('id', '')[:8]}"
        calls = (inner.get("data") or {}).get("llm_calls")
        if calls:
            summary += f" node={inner['data'].get('node')} llm calls: {_calls_summary(calls)}"
    elif "node" in d:
        summary = f"node={d['node']}" + (f" attempt={d['attempt']}" if "attempt" in d else "")
        if event.type in ("node.succeeded", "node.completed", "llm.called") and d.get("provider"):
            summary += f" by {_by(d)}"
        if d.get("reason") and event.type != "node.dispatched":
            summary += f" reason={d['reason']}"
        if d.get("error"):
            summary += f" error={d['error']}"
        if event.type == "llm.call_failed":
            status = f" HTTP {d['status']}" if d.get("status") else ""
            summary += (f" {d.get('provider')}/{d.get('model')} call={d.get('call')} {d.get('error_class')}{status}"
                        f" then={d.get('then')}" + (f" after {d['delay_s']}s" if d.get("delay_s") is not None else ""))
        if event.type == "llm.called" and d.get("outcome") == "invalid":
            summary += f" repair={d.get('repair', 0)} invalid: {d.get('problem', '')[:80]}"
        if event.type in ("node.tool_turn_recorded", "node.tools_requested"):
            calls = d.get("calls") or []
            summary += f" turn={d.get('turn', 0)} calls: " + ", ".join(
                _call(c) if "tool" in c else f"{c.get('name')}({_brief(c.get('args'), 40)})" for c in calls)
        if event.type == "node.tool_returned":
            summary += f" call={d['call_id']} tool={d['tool']}" + ("" if d.get("error") else
                                                                   f" output={_brief(d.get('output'), 60)}")
        if event.type == "node.dispatched" and d.get("call"):
            summary += f" runs {d['call']['call_id']} ({d.get('tool', {}).get('name')})"
    elif "reason" in d:
        summary = d["reason"]
    elif "workflow" in d:
        summary = f"workflow={d['workflow']}"
    return f"{event.time:%H:%M:%S.%f}"[:-3] + f" {event.tenant} {event.type:<22} task={event.task_id[:8]} {summary}"


def task(shown: dict[str, Any]) -> None:
    print(f"task      {shown['task_id']}  ({shown['tenant']})")
    print(f"status    {shown['status']}" + (f": {shown['reason']}" if shown.get("reason") else ""))
    print(f"workflow  {shown.get('workflow')} revision {(shown.get('revision') or '')[:12]}  "
          f"engine {shown.get('engine_version')}  contracts v{shown.get('contract_version')}")
    print(f"started   {shown.get('started_at')}  finished {shown.get('finished_at')}")
    lineage = shown.get("lineage")
    if lineage:
        print(f"lineage   {lineage['kind']} of {lineage['parent_id']} (root {lineage['root_id']}): {lineage['cause']}")
    if shown.get("revisions"):
        print("revisions " + ", ".join(f"{node} asked {n}" for node, n in shown["revisions"].items()))
    print(f"usage     {_usage(shown.get('usage'))}")
    print()
    print(f"{'NODE':<18}{'STATUS':<11}{'ATT':>3}  {'MS':>8}  BY")
    for node in shown["nodes"]:
        ms = f"{node['duration_ms']:.0f}" if node.get("duration_ms") is not None else "-"
        name = node["node"] + (f" (rev {node['revision']})" if node.get("revision") else "")
        print(f"{name:<18}{node['status']:<11}{node['attempts']:>3}  {ms:>8}  {_by(node)}"
              + (f"  error: {node['error']}" if node.get("error") else ""))
    calls = [(n["node"], c) for n in shown["nodes"] for c in n.get("tool_calls") or []]
    if calls:
        print()
        print(f"{'NODE':<18}{'CALL':<14}{'TOOL':<16}{'STATUS':<9}ARGS / ERROR")
        for node, c in calls:
            print(f"{node:<18}{c['call_id']:<14}{c['tool']:<16}{c['status']:<9}"
                  + (c["error"] if c.get("error") else _brief(c.get("args"), 60)))
    subtasks = shown.get("subtasks") or []
    if subtasks:
        print()
        print(f"{'SUBTASK':<38}{'OF':<14}{'ITEM':>5}  STATUS")
        for row in subtasks:
            print(f"{row['task_id']:<38}{row['node']:<14}{row['index']:>5}  {row['status']}"
                  + (f": {row['reason']}" if row.get("reason") and row["status"] != "succeeded" else ""))
    outputs = [n for n in shown["nodes"] if n.get("output")]
    if outputs:
        print()
        for node in outputs:
            mark = " [mock]" if node.get("provider") in ("mock", "recorded:mock") else ""
            print(f"{node['node']}{mark}: {node['output']}")


def providers(status: dict[str, Any]) -> None:
    forced = f"  (AE_PROVIDER={status['force']} replaces every agent's provider)" if status.get("force") else ""
    print("providers " + ", ".join(
        f"{name}" + (f" (key from {p['credential']})" if p.get("credential") else "")
        for name, p in status["providers"].items() if p["configured"]) + forced)
    breakers = status.get("breakers") or []
    if not breakers:
        print("no model called yet by this agent-runner")
        return
    print(f"{'PROVIDER':<11}{'MODEL':<28}{'STATE':<10}{'FAILS':>5}  {'OPENED AT (UTC)':<20} LAST ERROR")
    for b in breakers:
        print(f"{b['provider']:<11}{b['model']:<28}{b['state']:<10}{b['consecutive_failures']:>5}  "
              f"{(b.get('opened_at') or '-')[:19]:<20} {(b.get('last_error') or '-')[:70]}")


def replay(report: dict[str, Any]) -> None:
    verdict = "identical" if report["identical"] else f"{len(report['differences'])} difference(s)"
    print(f"replay of task {report['task_id']} through router {report['engine_version']}: "
          f"{report['stored']} stored, {report['replayed']} replayed: {verdict}")
    for d in report["differences"]:
        print(f"  #{d['index']}: stored {d['stored_type']}, replayed {d['replayed_type']}; "
              f"differs in {', '.join(d['fields']) or '(whole record)'}")


def task_budget(task_id: str, budget: dict[str, Any] | None) -> None:
    """A task's budget: its limit, what is reserved now and spent, and each budget record."""
    if not budget:
        print(f"task {task_id}: no budget (its workflow declares none, or telemetry has not seen it yet)")
        return
    print(f"task {task_id}: limit {budget.get('limit_usd', '?')} USD, reserved {budget['reserved_usd']}, "
          f"spent {budget['spent_usd']} ({budget['reservations']} reservation(s), {budget['settlements']} settled, "
          f"{budget['exceeded']} over budget, {budget['alerts']} alert(s))")
    log = budget.get("log") or []
    if log:
        print()
        print(f"{'RECORD':<18}{'NODE':<20}{'AMOUNT USD':>14}{'COST USD':>14}  NOTE")
        for row in log:
            amount = row.get("amount_usd") or row.get("released_usd") or row.get("needed_usd") or ""
            note = row.get("outcome") or row.get("then") or ""
            print(f"{row['type'].removeprefix('budget.'):<18}{row.get('node', ''):<20}{amount:>14}"
                  f"{row.get('cost_usd', ''):>14}  {note}")


def tenant_budget(tenant: str, days: dict[str, Any]) -> None:
    """A tenant's budgeted tasks by UTC day: reservations made and spend settled that day."""
    if not days:
        print(f"tenant {tenant}: no budget records")
        return
    print(f"{'DAY':<12}{'RESERVED USD':>14}{'SPENT USD':>14}{'RESERVATIONS':>14}{'OVER':>6}")
    for day, line in days.items():
        print(f"{day:<12}{line['reserved_usd']:>14}{line['spent_usd']:>14}{line['reservations']:>14}"
              f"{line['exceeded']:>6}")


def task_cost(ledger: dict[str, Any]) -> None:
    """One task's ledger: each call, each node, and the total (exact decimals, as recorded)."""
    print(f"task {ledger['task_id']}: {ledger['calls']} call(s), {ledger['cost_usd']} USD"
          + (f", {ledger['unpriced_calls']} unpriced" if ledger.get("unpriced_calls") else ""))
    calls = ledger.get("call_log") or []
    if calls:
        print()
        print(f"{'NODE':<26}{'BY':<32}{'IN':>8}{'OUT':>8}{'CACHE R/W':>12}  COST USD")
        for call in calls:
            usage = call["usage"]
            by = _by(call)
            node = call["node"] + (f" t{call['turn']}" if call.get("turn") else "") + (
                f" (repair {call['repair']})" if call.get("repair") else "") + (
                " (summary)" if call.get("outcome") == "summary" else "")
            print(f"{node:<26}{by:<32}{usage['input_tokens']:>8}{usage['output_tokens']:>8}"
                  f"{usage['cache_read_tokens']:>6}/{usage['cache_write_tokens']:<5}  {call['cost_usd']}")
    nodes = ledger.get("nodes") or {}
    if nodes:
        print()
        print(f"{'NODE':<18}{'CALLS':>6}  COST USD")
        for node, line in nodes.items():
            print(f"{node:<18}{line['calls']:>6}  {line['cost_usd']}")
    budget = ledger.get("budget")
    if budget:
        print()
        print(f"budget: limit {budget.get('limit_usd', '?')} USD, reserved {budget['reserved_usd']}, spent "
              f"{budget['spent_usd']} (agentctl budget --task {ledger['task_id']})")
