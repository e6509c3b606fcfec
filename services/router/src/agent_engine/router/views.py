"""What `agentctl task show` prints: a task's state as plain JSON."""

from __future__ import annotations

from typing import Any

from agent_engine.contracts.envelope import Envelope
from agent_engine.router import ENGINE_VERSION
from agent_engine.router.core import fold, replay, usage_total
from agent_engine.router.graph import downstream, split_body
from agent_engine.router.state import NodeState, TaskState


def _scope(state: TaskState) -> list[str]:
    """The nodes a task runs: all of its workflow, or for a subtask the body of its SPLIT."""
    if state.manifest is None:
        return list(state.nodes)
    if state.entry is None:
        return [n.id for n in state.manifest.nodes]
    body = downstream(state.manifest, state.entry, stop=state.stop_at) - {state.stop_at}
    return [n.id for n in state.manifest.nodes if n.id in body]


def _subtasks(state: TaskState) -> list[dict[str, Any]]:
    rows = []
    for split, fanout in state.fanouts.items():
        for index, task_id in enumerate(fanout.subtasks):
            unknown = ("not recorded", None, "the parent ended first") if state.terminal else ("running", None, "")
            status, _, reason = fanout.results.get(index, unknown)
            rows.append({"node": split, "index": index, "task_id": task_id, "status": status, "reason": reason})
    return rows


def _tool_calls(node: NodeState) -> list[dict[str, Any]]:
    """An agent node's tool calls in the order they ran: ok, error, refused (never ran) or running."""
    rows = []
    for turn in node.steps:
        for call in turn["calls"]:
            status = ("refused" if call.get("refused") else "ok" if call.get("output") is not None
                      else "error" if call.get("error") is not None else "running")
            rows.append({"turn": turn["turn"], "call_id": call["call_id"], "tool": call["tool"], "args": call["args"],
                         "status": status, "error": call.get("error")})
    return rows


def show(records: list[Envelope]) -> dict[str, Any]:
    state = fold(records)
    manifest = state.manifest
    delegated = {n for split in state.fanouts for n in split_body(manifest, split)} if manifest else set()
    nodes = []
    for node_id in _scope(state):
        node = state.nodes.get(node_id) or NodeState()  # a queued task has no node states yet
        spec = manifest.node(node_id) if manifest else None
        duration = None
        began = node.began_at or node.dispatched_at
        if began and node.finished_at:
            duration = round((node.finished_at - began).total_seconds() * 1000, 1)
        row: dict[str, Any] = {
            "node": node_id, "role": spec.role if spec else None, "kind": spec.kind if spec else None,
            "status": "subtasks" if node_id in delegated and node.status == "pending"
            else "skipped" if state.terminal and node.status == "pending" else node.status,
            "attempts": node.attempts, "revision": node.revision,
            "started_at": node.dispatched_at, "finished_at": node.finished_at, "duration_ms": duration,
            "provider": node.provider, "model": node.model,
            "usage": node.usage.model_dump() if node.usage else None,
            "output": node.output, "error": node.error,
        }
        if node.paused:  # waiting for a person: after failures (`error` is the last), or on this held output
            row["paused"] = node.paused
            if node.held:
                row["held_output"] = node.held.get("output")
        if node.steps:
            row["turns"] = len(node.steps)
            row["tool_calls"] = _tool_calls(node)
        nodes.append(row)
    first = records[0]
    return {
        "task_id": state.task_id or first.task_id, "tenant": state.tenant, "status": state.status,
        "workflow": state.workflow or first.data.get("input", {}).get("data", {}).get("workflow"),
        "revision": state.revision, "engine_version": state.engine_version,
        "contract_version": state.contract_version,
        "started_at": state.started_at, "finished_at": state.finished_at,
        "exit_node": state.exit_node, "reason": state.reason,
        "usage": usage_total(state).model_dump(), "events": state.version, "nodes": nodes,
        "lineage": state.lineage.model_dump() if state.lineage else None,
        "subtasks": _subtasks(state), "revisions": dict(state.revisions),
        "duplicate_of": state.duplicate_of,
    }


def replay_report(records: list[Envelope]) -> dict[str, Any]:
    """Re-run the recorded inputs through this router's decide/evolve and compare with what is stored."""
    stored = [r.to_wire() for r in records]
    replayed = [r.to_wire() for r in replay(records)]
    differences = []
    for index in range(max(len(stored), len(replayed))):
        was = stored[index] if index < len(stored) else None
        now = replayed[index] if index < len(replayed) else None
        if was != now:
            fields = sorted(k for k in set(was or {}) | set(now or {}) if (was or {}).get(k) != (now or {}).get(k))
            differences.append({"index": index, "stored_type": was and was["type"],
                                "replayed_type": now and now["type"], "fields": fields,
                                "stored": was, "replayed": now})
    return {"task_id": records[0].task_id, "engine_version": ENGINE_VERSION, "stored": len(stored),
            "replayed": len(replayed), "identical": not differences, "differences": differences}
