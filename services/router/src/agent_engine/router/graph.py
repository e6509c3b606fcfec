"""Pure questions about a workflow graph that routing asks: paths, segments, SPLIT bodies."""

from __future__ import annotations

from agent_engine.contracts.manifest import WorkflowManifest


def downstream(manifest: WorkflowManifest, start: str, *, stop: str | None = None) -> set[str]:
    """Nodes reachable from `start` (included), not walking past `stop` (excluded)."""
    seen = {start}
    todo = [start]
    while todo:
        for edge in manifest.successors(todo.pop()):
            if edge.to != stop and edge.to not in seen:
                seen.add(edge.to)
                todo.append(edge.to)
    return seen


def upstream(manifest: WorkflowManifest, end: str) -> set[str]:
    """Nodes from which `end` can be reached (included)."""
    seen = {end}
    todo = [end]
    while todo:
        for pred in manifest.predecessors(todo.pop()):
            if pred not in seen:
                seen.add(pred)
                todo.append(pred)
    return seen


def segment(manifest: WorkflowManifest, target: str, reviewer: str) -> set[str]:
    """The nodes a revision runs again: on some path from `target` to `reviewer`, both included."""
    return downstream(manifest, target) & upstream(manifest, reviewer)


def split_body(manifest: WorkflowManifest, split: str) -> set[str]:
    """The nodes each subtask of a SPLIT runs: after the SPLIT, before its MERGE."""
    spec = manifest.node(split)
    assert spec.split is not None
    body: set[str] = set()
    for edge in manifest.successors(split):
        body |= downstream(manifest, edge.to, stop=spec.split.merge)
    return body


def split_merges(manifest: WorkflowManifest) -> dict[str, str]:
    """MERGE node -> the SPLIT node it collects."""
    return {n.split.merge: n.id for n in manifest.nodes if n.role == "SPLIT" and n.split is not None}
