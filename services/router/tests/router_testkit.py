"""Builders for router core tests: small manifests, input envelopes, and a driver that applies inputs.

Everything here is plain data; no clock and no randomness, so tests are exact.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.manifest import (
    AgentSpec,
    Condition,
    EdgeSpec,
    MergeSpec,
    NodeSpec,
    SplitSpec,
    ToolSpec,
    WorkflowManifest,
)
from agent_engine.router.core import Resolved, RouterInput, apply
from agent_engine.router.state import TaskState

T0 = datetime(2025, 3, 1, 9, 0, 0, tzinfo=UTC)
TENANT = "acme"
TASK = "task-1"
CORRELATION = "corr-1"
REVISION = "rev-1"
TASK_INPUT: dict[str, Any] = {"topic": "event sourcing", "depth": {"level": 2}}
REPO_ROOT = Path(__file__).resolve().parents[3]
RESEARCH_REVIEW = REPO_ROOT / "examples" / "research-review"


# --- manifests --------------------------------------------------------------------------------

def agent(node_id: str, role: str = "LINEAR", agent_name: str = "writer", **kw: Any) -> NodeSpec:
    return NodeSpec(id=node_id, role=role, kind="agent", agent=agent_name, **kw)


def tool(node_id: str, role: str = "LINEAR", tool_name: str = "echo", args: dict[str, Any] | None = None,
         **kw: Any) -> NodeSpec:
    return NodeSpec(id=node_id, role=role, kind="tool", tool=tool_name, args=args or {}, **kw)


def exit_(node_id: str, status: str = "succeeded") -> NodeSpec:
    return NodeSpec(id=node_id, role="EXIT", status=status)


def edge(src: str, dst: str, *, field_: str | None = None, equals: Any = None, in_: list[Any] | None = None,
         default: bool = False) -> EdgeSpec:
    when = None
    if field_ is not None:
        when = Condition(field=field_, equals=equals, in_=in_)
    return EdgeSpec(from_=src, to=dst, when=when, default=default)


def chain(*ids: str) -> list[EdgeSpec]:
    return [edge(a, b) for a, b in itertools.pairwise(ids)]


AGENTS = {
    "writer": AgentSpec(provider="mock", model="m-1", system="sys", prompt="write", max_tokens=256),
    "judge": AgentSpec(provider="mock", model="m-2", prompt="judge", output_schema="verdict"),
}
TOOLS = {"echo": ToolSpec(builtin="echo", description="returns its args")}
SCHEMAS = {"verdict": {"type": "object", "properties": {"verdict": {"type": "string"}}}}


def manifest(nodes: list[NodeSpec], edges: list[EdgeSpec], **kw: Any) -> WorkflowManifest:
    kw.setdefault("agents", AGENTS)
    kw.setdefault("tools", TOOLS)
    kw.setdefault("schemas", SCHEMAS)
    return WorkflowManifest(name=kw.pop("name", "wf"), nodes=nodes, edges=edges, **kw)


def linear_workflow(**start_kw: Any) -> WorkflowManifest:
    """start (agent) -> middle (agent) -> finish (agent) -> done (EXIT succeeded)."""
    return manifest(
        [agent("start", role="START", **start_kw), agent("middle"), agent("finish"), exit_("done")],
        chain("start", "middle", "finish", "done"),
    )


def split_started() -> tuple[Run, list[Envelope]]:
    """p (START) -> s (SPLIT over `xs`) -> w -> m (MERGE) -> done, with s fanned out over two items: the
    running parent and its two subtask requests."""
    wf = manifest([agent("p", role="START"), NodeSpec(id="s", role="SPLIT", kind="tool", tool="echo",
                                                       split=SplitSpec(items="xs", merge="m")),
                   agent("w"), NodeSpec(id="m", role="MERGE", merge=MergeSpec()), exit_("done")],
                  chain("p", "s", "w", "m", "done"))
    run = started(wf)
    run.feed(completed(run.dispatch("p")))
    out = run.feed(completed(run.dispatch("s"), {"xs": [1, 2]}))
    return run, [r for r in out if r.type == "subtask.requested"]


def review_workflow(*review_edges: EdgeSpec, **review_kw: Any) -> WorkflowManifest:
    """draft (START agent) -> review (DECISION agent) -> approved (EXIT succeeded) / rejected (EXIT
    failed), by default on verdict == approve / reject. Edges may also lead to rework (agent) -> approved."""
    edges = list(review_edges) or [
        edge("review", "approved", field_="verdict", equals="approve"),
        edge("review", "rejected", field_="verdict", equals="reject"),
    ]
    nodes = [agent("draft", role="START"), agent("review", role="DECISION", agent_name="judge", **review_kw),
             exit_("approved"), exit_("rejected", "failed")]
    edges = [edge("draft", "review"), *edges]
    if any(e.to == "rework" for e in edges):
        nodes.append(agent("rework"))
        edges.append(edge("rework", "approved"))
    return manifest(nodes, edges)


def load_research_review() -> tuple[str, WorkflowManifest]:
    from agent_engine.runtime.manifests import load

    loaded = load(RESEARCH_REVIEW)
    assert loaded.manifest is not None and not loaded.errors, loaded.errors
    return loaded.revision, loaded.manifest


def research_review_input() -> dict[str, Any]:
    return json.loads((RESEARCH_REVIEW / "input.json").read_text())


# --- inputs -----------------------------------------------------------------------------------

def envelope(type_: str, data: dict[str, Any], *, id: str, time: datetime = T0, task_id: str = TASK,
             tenant: str = TENANT, correlation_id: str = CORRELATION) -> Envelope:
    return Envelope(id=id, source="test", type=type_, time=time, tenant=tenant, task_id=task_id,
                    correlation_id=correlation_id, data=data)


def accepted(wf: WorkflowManifest | None, task_input: dict[str, Any] | None = None, *, id: str = "accept-1",
             time: datetime = T0, revision: str = REVISION, workflow: str | None = None,
             **env_kw: Any) -> RouterInput:
    name = workflow or (wf.name if wf else "missing-wf")
    data = {"workflow": name, "input": dict(TASK_INPUT if task_input is None else task_input)}
    resolved = Resolved(revision, wf) if wf is not None else None
    return RouterInput(envelope("task.accepted", data, id=id, time=time, **env_kw), resolved)


def _later(dispatch: Envelope, time: datetime | None, seconds: float = 1) -> datetime:
    return time if time is not None else dispatch.time + timedelta(seconds=seconds)


def completed(dispatch: Envelope, output: dict[str, Any] | None = None, *, id: str | None = None,
              time: datetime | None = None, **extra: Any) -> RouterInput:
    d = dispatch.data
    data = {"dispatch_id": d["dispatch_id"], "node": d["node"], "attempt": d["attempt"],
            "output": {"text": f"out of {d['node']}"} if output is None else output, **extra}
    return RouterInput(envelope("node.completed", data, id=id or f"done-{d['dispatch_id']}",
                                time=_later(dispatch, time), task_id=dispatch.task_id))


def errored(dispatch: Envelope, error: str = "connection reset", *, retryable: bool = True,
            id: str | None = None, time: datetime | None = None) -> RouterInput:
    d = dispatch.data
    data = {"dispatch_id": d["dispatch_id"], "node": d["node"], "attempt": d["attempt"], "error": error,
            "retryable": retryable}
    return RouterInput(envelope("node.errored", data, id=id or f"err-{d['dispatch_id']}",
                                time=_later(dispatch, time), task_id=dispatch.task_id))


def expired(dispatch: Envelope, *, id: str | None = None, time: datetime | None = None) -> RouterInput:
    d = dispatch.data
    data = {"dispatch_id": d["dispatch_id"], "node": d["node"], "attempt": d["attempt"]}
    when = time if time is not None else datetime.fromisoformat(d["deadline"])
    return RouterInput(envelope("node.deadline_expired", data, id=id or f"late-{d['dispatch_id']}",
                                time=when, task_id=dispatch.task_id))


# --- driving ----------------------------------------------------------------------------------

def types(events: list[Envelope]) -> list[str]:
    return [e.type for e in events]


def only(events: list[Envelope], type_: str) -> Envelope:
    found = [e for e in events if e.type == type_]
    assert len(found) == 1, f"expected one {type_}, got {types(events)}"
    return found[0]


def dumps(events: list[Envelope]) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json") for e in events]


def json_round_trip(events: list[Envelope]) -> list[Envelope]:
    """What the store gives back: every record through JSON text and validated again."""
    return [Envelope.model_validate(json.loads(e.model_dump_json())) for e in events]


@dataclass
class Run:
    """Applies inputs one after another, keeping the state and every record, as the store would."""

    state: TaskState = field(default_factory=TaskState)
    records: list[Envelope] = field(default_factory=list)

    def feed(self, inp: RouterInput) -> list[Envelope]:
        self.state, out = apply(self.state, inp)
        self.records.extend(out)
        return out

    def dispatch(self, node: str | None = None) -> Envelope:
        """The node.dispatched record of the currently open dispatch (of `node`, if given)."""
        open_ids = {s.dispatch_id for n, s in self.state.open_dispatches() if node is None or n == node}
        found = [r for r in self.records if r.type == "node.dispatched" and r.data["dispatch_id"] in open_ids]
        assert len(found) == 1, f"expected one open dispatch{f' of {node}' if node else ''}, got {found}"
        return found[0]


def started(wf: WorkflowManifest, task_input: dict[str, Any] | None = None, **kw: Any) -> Run:
    run = Run()
    run.feed(accepted(wf, task_input, **kw))
    return run


class RandomRun:
    """What a property test's driver keeps: the workflow, hypothesis's data, the run, fresh ids and times,
    and the inputs applied (each must change something; redelivering one later must not)."""

    def __init__(self, wf: WorkflowManifest, data: Any) -> None:
        self.wf = wf
        self.data = data
        self.run = Run()
        self.ids = itertools.count()
        self.clock = itertools.count(1)
        self.applied: list[RouterInput] = []
        self.absorbed = 0

    def now(self) -> datetime:
        return T0 + timedelta(seconds=next(self.clock))

    def deliver(self, inp: RouterInput) -> list[Envelope]:
        out = self.run.feed(inp)
        assert out, f"a fresh {inp.event.type} changed nothing"
        self.applied.append(inp)
        return out

    def step(self) -> None:
        raise NotImplementedError

    def noise(self) -> None:
        raise NotImplementedError

    def drive(self, most_noise_after: int = 3) -> None:
        """Accept a task, then steps with up to two noise inputs before each, until the task ends; then noise."""
        self.deliver(accepted(self.wf, {"topic": "t"}, id="accept"))
        while not self.run.state.terminal:
            for _ in range(self.data.draw(st.integers(0, 2), label="noise before")):
                self.noise()
            self.step()
        for _ in range(self.data.draw(st.integers(0, most_noise_after), label="noise after")):
            self.noise()
