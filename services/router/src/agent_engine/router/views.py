"""What `agentctl task show` prints: a task's state as plain JSON."""

from __future__ import annotations

from typing import Any

from agent_engine.contracts.envelope import Envelope
from agent_engine.router.core import fold, usage_total


def show(records: list[Envelope]) -> dict[str, Any]:
    state = fold(records)
    manifest = state.manifest
    nodes = []
    for node_id, node in state.nodes.items():
        spec = manifest.node(node_id) if manifest else None
        duration = None
        if node.dispatched_at and node.finished_at:
            duration = round((node.finished_at - node.dispatched_at).total_seconds() * 1000, 1)
        nodes.append({
            "node": node_id, "role": spec.role if spec else None, "kind": spec.kind if spec else None,
            "status": "skipped" if state.terminal and node.status == "pending" else node.status,
            "attempts": node.attempts,
            "started_at": node.dispatched_at, "finished_at": node.finished_at, "duration_ms": duration,
            "provider": node.provider, "model": node.model,
            "usage": node.usage.model_dump() if node.usage else None,
            "output": node.output, "error": node.error,
        })
    first = records[0]
    return {
        "task_id": state.task_id or first.task_id, "tenant": state.tenant, "status": state.status,
        "workflow": state.workflow or first.data.get("input", {}).get("data", {}).get("workflow"),
        "revision": state.revision, "engine_version": state.engine_version,
        "contract_version": state.contract_version,
        "started_at": state.started_at, "finished_at": state.finished_at,
        "exit_node": state.exit_node, "reason": state.reason,
        "usage": usage_total(state).model_dump(), "events": state.version, "nodes": nodes,
    }
