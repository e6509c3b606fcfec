"""Bounded loops, the pure parts: whether a reviewer's output sends work back, and what that resets.

A loop is not an edge: a reviewer node declares `revise` (a condition on its output, a target node
and max_revisions), so the graph stays acyclic. When the condition matches and revisions remain, the
nodes on the paths from the target to the reviewer run again (with the reviewer's output as
feedback), and so may paths a DECISION between them skipped last time. walk.py records the request
and dispatches the target. Page: docs/workflows/loops.md.
"""

from __future__ import annotations

from typing import Any

from agent_engine.contracts.events import NodeRevisionRequested
from agent_engine.contracts.manifest import NodeSpec
from agent_engine.router.graph import downstream, segment
from agent_engine.router.state import TaskState


def wants_revision(state: TaskState, spec: NodeSpec, output: dict[str, Any]) -> bool:
    """The node's revise rule matches its output and revisions remain (checked before any edge is chosen)."""
    rule = spec.revise
    if rule is None or rule.max_revisions is None:
        return False
    return rule.when.matches(output) and state.revisions.get(spec.id, 0) < rule.max_revisions


def revision_request(state: TaskState, spec: NodeSpec, output: dict[str, Any]) -> NodeRevisionRequested:
    """Send work back to the reviser's target: the nodes between run again with its output as feedback."""
    rule = spec.revise
    assert rule is not None and state.manifest is not None and rule.max_revisions is not None
    used = state.revisions.get(spec.id, 0)
    # besides the nodes between, paths a DECISION between skipped last time may be taken this time
    skipped = {n for n in downstream(state.manifest, rule.target) if state.nodes[n].status == "skipped"}
    reset = sorted(segment(state.manifest, rule.target, spec.id) | skipped)
    return NodeRevisionRequested(node=spec.id, target=rule.target, revision=used + 1,
                                 max_revisions=rule.max_revisions, feedback=output, reset=reset)
