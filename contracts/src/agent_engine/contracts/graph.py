"""Walking a workflow's graph: who follows whom, what is reachable, where a cycle is.

One implementation for the two places that ask: validation (contracts/validation.py) and the router's
routing questions (which nodes a revision resets, which a SPLIT's subtasks run).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from agent_engine.contracts.manifest import WorkflowManifest

Adjacency = Mapping[str, Sequence[str]]
"""Node id -> its neighbours in edge order: its successors, or its predecessors to walk backwards."""


def successors(manifest: WorkflowManifest) -> dict[str, list[str]]:
    """Each declared node -> the nodes its edges lead to, in edge order. An edge naming a node the manifest
    does not declare is left out (validation reports it as `edge-endpoint`; the router never runs such a
    manifest)."""
    known = {n.id for n in manifest.nodes}
    out: dict[str, list[str]] = {n.id: [] for n in manifest.nodes}
    for edge in manifest.edges:
        if edge.from_ in known and edge.to in known:
            out[edge.from_].append(edge.to)
    return out


def predecessors(manifest: WorkflowManifest) -> dict[str, list[str]]:
    """Each declared node -> the nodes whose edges lead to it, in edge order (edges as in `successors`)."""
    known = {n.id for n in manifest.nodes}
    inc: dict[str, list[str]] = {n.id: [] for n in manifest.nodes}
    for edge in manifest.edges:
        if edge.from_ in known and edge.to in known:
            inc[edge.to].append(edge.from_)
    return inc


def reachable(start: str, out: Adjacency, *, stop: str | None = None, ends: Collection[str] = ()) -> set[str]:
    """`start` and every node reachable from it along `out`.

    `stop` is a node the walk never enters: it is left out (unless it is `start`), and so is whatever lies
    only beyond it. `ends` are nodes the walk enters but does not leave: they are in (`start` too, if it is
    one), whatever lies only beyond them is not.
    """
    seen = {start}
    todo = [start]
    while todo:
        current = todo.pop()
        if current in ends:
            continue
        for nxt in out.get(current, ()):
            if nxt != stop and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def reachable_back(end: str, inc: Adjacency) -> set[str]:
    """`end` and every node from which it can be reached: `reachable` walked backwards, along predecessors."""
    return reachable(end, inc)


def find_cycle(ids: Sequence[str], out: Adjacency) -> list[str] | None:
    """A cycle as the path that closes it (first node repeated at the end), or None when the graph has none.
    Nodes are tried in the order of `ids`; `out` must have a key for every node it names (as `successors`
    builds it)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in ids:
        if root in state:
            continue
        # depth first without recursion (a workflow may have thousands of nodes): the path, and for each
        # node on it the successors still to visit
        path: list[str] = [root]
        todo: list[list[str]] = [list(reversed(out[root]))]
        state[root] = 1
        while path:
            if not todo[-1]:
                state[path.pop()] = 2
                todo.pop()
                continue
            nxt = todo[-1].pop()
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(list(reversed(out[nxt])))
    return None
