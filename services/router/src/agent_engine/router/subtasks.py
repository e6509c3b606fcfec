"""SPLIT subtasks as their parent sees them: which SPLIT a request names, and a subtask's end.

A SPLIT fans out one subtask per item (merge.py builds the requests, walk.py records them); each
subtask is a task of its own that starts from its request (core.py, with the other ways a task
starts) and, when its path reaches the MERGE, tells its parent how it ended (walk.finish). The parent
records the end (subtask.settled); a failed subtask fails the SPLIT and the task unless the SPLIT
continues on failure (or the subtask's own path did); then the MERGE is offered the results. Page:
docs/workflows/subtasks.md.
"""

from __future__ import annotations

from agent_engine.contracts.events import NodeFailed, SubtaskFinished, SubtaskRequested, SubtaskSettled
from agent_engine.contracts.manifest import NodeSpec
from agent_engine.contracts.validation import blocking
from agent_engine.router.budgeting import settle_subtask
from agent_engine.router.emitter import Emitter
from agent_engine.router.records import InvalidInput, RouterInput
from agent_engine.router.walk import finish, try_merge


def subtask_split(req: SubtaskRequested) -> NodeSpec:
    """The SPLIT node a subtask request names, once the request is consistent with its own manifest."""
    manifest = req.workflow_manifest
    problems = blocking(manifest)
    if problems:
        raise InvalidInput(f"subtask.requested carries a workflow manifest that is not valid: {problems[0]}")
    node = req.lineage.parent_node
    split = next((n for n in manifest.nodes if n.id == node), None)
    if req.lineage.kind != "subtask" or req.lineage.index is None or split is None or split.role != "SPLIT":
        raise InvalidInput(f"subtask.requested names node '{node}' as its SPLIT, which its manifest does not have")
    if split.split is None or split.split.merge != req.merge:
        raise InvalidInput(f"subtask.requested stops at '{req.merge}', which is not the MERGE of SPLIT node '{node}'")
    return split


def on_subtask_finished(out: Emitter, inp: RouterInput, finished: SubtaskFinished) -> None:
    settle_subtask(out, finished.subtask_id, finished.spent_usd)  # even after the task ended: nothing twice
    state = out.state
    fanout = state.fanouts.get(finished.parent_node)
    if state.status not in ("running", "waiting") or fanout is None or finished.index in fanout.results:
        return
    if not 0 <= finished.index < len(fanout.subtasks) or fanout.subtasks[finished.index] != finished.subtask_id:
        return
    out.add(SubtaskSettled(node=finished.parent_node, index=finished.index, subtask_id=finished.subtask_id,
                           status=finished.status, output=finished.output, reason=finished.reason,
                           continued=finished.continued))
    assert state.manifest is not None
    split = state.manifest.node(finished.parent_node)
    if state.nodes[fanout.merge].status != "pending":
        return  # the MERGE fired already (any/quorum) and asked the rest to stop: their ends change nothing
    if finished.status != "succeeded" and not (split.continue_on_failure or finished.continued):
        reason = f"subtask {finished.index} ({finished.subtask_id}) {finished.status}: {finished.reason}"
        out.add(NodeFailed(node=split.id, attempt=out.state.nodes[split.id].attempts, reason=reason))
        finish(out, "failed", f"node '{split.id}' failed: {reason}")
        return
    try_merge(out, fanout.merge)
