"""Joins, MERGE and SPLIT, the pure parts: what each path into a node is, when a MERGE fires, and what a
SPLIT's fan-out records.

An edge into a node is live (its source succeeded and, for a DECISION, chose it), failed (its source
failed and continues), dead (not taken, or its source was skipped) or pending. A MERGE node waits
for its inputs under its policy (all, any, quorum) and fires once; the inputs of a MERGE that closes
a SPLIT are the SPLIT's subtasks. These functions only say what happens; walk.py records it and
moves on. Pages: docs/workflows/roles.md (joins, skipped paths, MERGE policies),
docs/workflows/subtasks.md (fan-out, size limits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent_engine.contracts.envelope import derive_id
from agent_engine.contracts.events import Lineage, NodeFannedOut, NodeMerged, NodeSkipped, SubtaskRequested
from agent_engine.contracts.manifest import MergeSpec, NodeSpec, lookup
from agent_engine.router.dispatch import upstream_outputs
from agent_engine.router.graph import split_merges
from agent_engine.router.state import TaskState

MAX_FANOUT_BYTES = 3 * 1024 * 1024
"""The subtask requests of one SPLIT are stored in one transaction; keep it well under what psycopg's
pipeline handles (it deadlocks near 6 MB)."""

Sources = dict[str, tuple[str, dict[str, Any] | None]]


def edge(state: TaskState, pred: str, target: str) -> str:
    """The state of the edge pred -> target: live, failed (continued), dead, or pending."""
    node = state.nodes[pred]
    if node.status == "succeeded":
        return "live" if node.chosen is None or node.chosen == target else "dead"
    if node.status == "failed" and node.continued:
        return "failed"
    if node.status == "skipped":
        return "dead"
    return "pending"


def merge_sources(state: TaskState, merge_id: str, split: str | None) -> Sources:
    """Each input of a MERGE node (of SPLIT `split`, if it collects one): source -> (live | failed | dead |
    pending, output)."""
    assert state.manifest is not None
    if split is not None:
        fanout = state.fanouts.get(split)
        if fanout is None:  # the SPLIT was skipped, or failed and continued: nothing was fanned out
            return {split: ("dead" if state.nodes[split].status == "skipped" else "failed", None)}
        sources: Sources = {}
        for index in range(len(fanout.subtasks)):
            status, output, _ = fanout.results.get(index, ("pending", None, ""))
            sources[str(index)] = ("live" if status == "succeeded" else "pending" if status == "pending"
                                   else "failed", output)
        return sources
    return {p: (edge(state, p, merge_id), state.nodes[p].output) for p in state.manifest.predecessors(merge_id)}


@dataclass(frozen=True)
class Fired:
    """A MERGE node fires: what it records, and the subtasks still running that it no longer waits for."""

    merged: NodeMerged
    stop: tuple[str, ...]


def merge_now(state: TaskState, merge_id: str) -> Fired | NodeSkipped | str | None:
    """What a MERGE node does now: nothing yet (None; also once it fired or failed: a MERGE fires once),
    fire once its policy is met, be skipped when no path into it was taken, or fail (the reason) once its
    policy can no longer be met."""
    assert state.manifest is not None
    if state.nodes[merge_id].status != "pending":
        return None
    policy = state.manifest.node(merge_id).merge or MergeSpec()
    split = split_merges(state.manifest).get(merge_id)
    sources = merge_sources(state, merge_id, split)
    arrived = [s for s, (e, _) in sources.items() if e == "live"]
    failed = [s for s, (e, _) in sources.items() if e == "failed"]
    dead = [s for s, (e, _) in sources.items() if e == "dead"]
    pending = [s for s, (e, _) in sources.items() if e == "pending"]
    need = {"all": len(sources) - len(failed) - len(dead), "any": 1}.get(policy.policy, policy.quorum or 1)
    if policy.policy == "all" and pending:
        return None
    if sources and len(dead) == len(sources):
        return NodeSkipped(node=merge_id, reason="no path into it was taken")
    if len(arrived) < need:
        if len(arrived) + len(pending) >= need:
            return None
        return (f"MERGE needs {need} input(s) under policy '{policy.policy}' but only {len(arrived) + len(pending)} "
                "can arrive: "
                f"failed {failed}, not taken {dead}")
    outputs = {s: sources[s][1] or {} for s in arrived}
    combined: dict[str, Any] = {"items": list(outputs.values())} if policy.combine == "list" else outputs
    fanout = state.fanouts.get(split) if split is not None else None
    return Fired(NodeMerged(node=merge_id, policy=policy.policy, arrived=arrived, failed=failed, skipped=dead,
                            output=combined), tuple(fanout.open_subtasks() if fanout else ()))


@dataclass(frozen=True)
class FanOut:
    """A SPLIT's fan-out: its record, then one request per item, each addressed to its subtask."""

    fanned_out: NodeFannedOut
    requests: tuple[tuple[str, SubtaskRequested], ...]


def fan_out(state: TaskState, spec: NodeSpec, task_id: str) -> FanOut | str:
    """One subtask per item of the list at the SPLIT's `items` path in its output, or why the fan-out would
    be too large to record."""
    assert state.manifest is not None and spec.split is not None
    node = state.nodes[spec.id]
    _, items = lookup(node.output, spec.split.items)
    ids = [derive_id(task_id, spec.id, node.revision, "subtask", i) for i in range(len(items))]
    inherited = {k: v for k, v in upstream_outputs(state).items() if k != spec.id}
    size = len(state.manifest.model_dump_json()) + len(json.dumps(inherited)) + len(json.dumps(state.input))
    total = size * len(items) + len(json.dumps(items))
    if total > MAX_FANOUT_BYTES:
        return (f"SPLIT of {len(items)} items would record {total // 1024} KiB of subtask requests, over the "
                f"{MAX_FANOUT_BYTES // 1024} KiB one fan-out may carry; pass large data as workspace files")
    root = state.lineage.root_id if state.lineage else task_id
    requests = []
    for index, (subtask_id, item) in enumerate(zip(ids, items, strict=True)):
        lineage = Lineage(kind="subtask", parent_id=task_id, root_id=root, parent_node=spec.id, index=index,
                          cause=f"item {index} of {len(items)} of SPLIT node '{spec.id}'")
        requests.append((subtask_id, SubtaskRequested(
            lineage=lineage, merge=spec.split.merge, item=item, count=len(items), workflow=state.workflow or "",
            revision=state.revision or "", workflow_manifest=state.manifest,
            input={**state.input, "item": item, "item_index": index, "item_count": len(items)}, upstream=inherited,
        )))
    return FanOut(NodeFannedOut(node=spec.id, merge=spec.split.merge, subtasks=ids), tuple(requests))
