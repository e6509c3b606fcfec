"""Fork: a new task that starts from a source task's records 1..N and runs on from there.

The cut never splits a decision: it extends to the last record of the same input. A task that is a
subtask or a fork, one not running at the cut, or a cut inside a SPLIT whose subtasks were running
cannot be forked. Unless the fork is live, an agent node the source recorded an answer for reuses it
(dispatch.py builds it as that answer) instead of asking a model again; what was running at the cut
runs again. fork_plan says beforehand which steps with side effects may run again. The fork's state
is folded from the copied history (folds.py). Page: docs/workflows/fork.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import TaskForked, TaskForkRequested, TaskRejected
from agent_engine.router.emitter import Emitter
from agent_engine.router.folds import evolve, fold
from agent_engine.router.records import INPUT_RECORD, RouterInput
from agent_engine.router.state import TaskState
from agent_engine.router.walk import dispatch


def on_fork(out: Emitter, inp: RouterInput, request: TaskForkRequested) -> None:
    if out.state.status != "new":
        return  # the fork exists already: a redelivered request
    records = list(inp.source or ())
    problem, cut = fork_cut(records, inp.event.tenant, request.at)
    if problem:
        out.add(TaskRejected(stage="router", reason=f"cannot fork task {request.source_task_id}: {problem}"))
        return
    out.add(TaskForked(source_task_id=request.source_task_id, at=cut, live=request.live,
                       history=[r.to_wire() for r in records[:cut]],
                       recorded={} if request.live else recorded_outputs(records)))
    state = out.state
    assert state.manifest is not None
    for node_id, node in state.nodes.items():  # what was running at the cut runs again in the fork
        if node.status == "dispatched":
            dispatch(out, state.manifest.node(node_id), node.attempts, f"fork of {request.source_task_id}")


def fork_cut(records: list[Envelope], tenant: str, at: int) -> tuple[str, int]:
    """Why a fork of `records` after record `at` cannot be made for `tenant` ("" if it can), and where its
    copied history ends: a cut never splits a decision, it extends to the last record of the same input."""
    if not records or any(r.tenant != tenant for r in records):
        return "no such task", 0  # the same answer for another tenant's task: nothing about it is told
    if not 1 <= at <= len(records):
        return f"it has {len(records)} records; --at must be between 1 and {len(records)}", 0
    cut = next((i for i in range(at, len(records)) if records[i].type == INPUT_RECORD), len(records))
    source = fold(records)
    at_cut = fold(records[:cut])
    if source.lineage is not None and source.lineage.kind == "subtask":
        return f"it is a subtask; fork its root task {source.lineage.root_id} instead", 0
    if source.lineage is not None and source.lineage.kind == "fork":
        return f"it is a fork; fork the original task {source.lineage.parent_id} instead", 0
    if at_cut.status not in ("running", "waiting"):
        return f"after record {cut} the task was {at_cut.status}: nothing would run", 0
    if at_cut.open_subtasks():
        return f"record {cut} falls inside a SPLIT whose subtasks were running; fork before it or after its MERGE", 0
    return "", cut


@dataclass(frozen=True)
class ForkPlan:
    """What a fork would do, before it is asked for: where its history ends, and the steps with side
    effects that may run again (tool nodes, and agent nodes whose model may call such tools, unless the
    fork reuses the output the source recorded for them)."""

    problem: str
    cut: int = 0
    risky: tuple[str, ...] = ()


def fork_plan(records: list[Envelope], tenant: str, at: int, live: bool) -> ForkPlan:
    problem, cut = fork_cut(records, tenant, at)
    if problem:
        return ForkPlan(problem)
    state = fold(records[:cut])
    assert state.manifest is not None
    manifest = state.manifest
    recorded = {} if live else recorded_outputs(records)
    risky = []
    for spec in manifest.nodes:
        node = state.nodes.get(spec.id)
        if node is None or node.status in ("succeeded", "skipped"):
            continue
        tool = manifest.tools.get(spec.tool or "")
        if spec.kind == "tool" and tool is not None and tool.has_side_effects:
            risky.append(spec.id)
        elif spec.kind == "agent" and f"{spec.id}@{node.revision}" not in recorded:
            agent = manifest.agents.get(spec.agent or "")
            names = [t for t in (agent.tools if agent else []) if t in manifest.tools
                     and manifest.tools[t].has_side_effects]
            if names:
                risky.append(f"{spec.id} (its model may call {', '.join(names)})")
    return ForkPlan("", cut, tuple(risky))


def recorded_outputs(records: list[Envelope]) -> dict[str, dict[str, Any]]:
    """Every agent output the source recorded, keyed by node and revision."""
    recorded: dict[str, dict[str, Any]] = {}
    state = TaskState()
    for record in records:
        state = evolve(state, record)
        if record.type == "node.succeeded" and state.manifest is not None:
            node = record.data["node"]
            if state.manifest.node(node).kind == "agent":
                recorded[f"{node}@{state.nodes[node].revision}"] = {
                    "output": record.data["output"], "provider": record.data.get("provider"),
                    "model": record.data.get("model")}
    return recorded
