"""Pure questions about a workflow graph that routing asks: paths, segments, SPLIT bodies.

They walk the graph with contracts' `reachable` (agent_engine.contracts.graph), the walk validation uses.
"""

from __future__ import annotations

from agent_engine.contracts.graph import predecessors, reachable, reachable_back, successors
from agent_engine.contracts.manifest import WorkflowManifest


def downstream(manifest: WorkflowManifest, start: str, *, stop: str | None = None) -> set[str]:
    """Nodes reachable from `start` (included), not walking past `stop` (excluded)."""
    return reachable(start, successors(manifest), stop=stop)


def upstream(manifest: WorkflowManifest, end: str) -> set[str]:
    """Nodes from which `end` can be reached (included)."""
    return reachable_back(end, predecessors(manifest))


def segment(manifest: WorkflowManifest, target: str, reviewer: str) -> set[str]:
    """The nodes a revision runs again: on some path from `target` to `reviewer`, both included."""
    return downstream(manifest, target) & upstream(manifest, reviewer)


def split_body(manifest: WorkflowManifest, split: str) -> set[str]:
    """The nodes each subtask of a SPLIT runs: after the SPLIT, before its MERGE."""
    spec = manifest.node(split)
    assert spec.split is not None
    out = successors(manifest)
    body: set[str] = set()
    for entry in out[split]:
        body |= reachable(entry, out, stop=spec.split.merge)
    return body


def split_merges(manifest: WorkflowManifest) -> dict[str, str]:
    """MERGE node -> the SPLIT node it collects."""
    return {n.split.merge: n.id for n in manifest.nodes if n.role == "SPLIT" and n.split is not None}
