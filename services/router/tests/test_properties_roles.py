"""Property-based tests over every node role: random valid workflows built from BRANCH / MERGE,
SPLIT / MERGE, DECISION and LINEAR blocks, run as a world of tasks (a parent and its subtasks)
that exchange subtask requests, subtask ends and cancels in random order, while runners answer
dispatches with random outcomes and inputs are redelivered.

Checked: every task reaches exactly one terminal status and nothing is dispatched after it; a MERGE
fires at most once and only when its policy is met; replay reproduces every task's records; the
state the router keeps equals the fold of what it stored.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st
from router_testkit import T0, TENANT, accepted, completed, dumps, errored, expired, json_round_trip, manifest

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
from agent_engine.contracts.validation import validate
from agent_engine.router.core import INPUT_RECORD, RouterInput, apply, fold, replay
from agent_engine.router.state import TaskState

TERMINAL = ("task.succeeded", "task.failed", "task.cancelled", "task.rejected")
OUTCOMES = {140: "retryable", 150: "fatal", 160: "deadline"}
"""Outcome rolls 40-42, 50-52 and 60-62 (keys + 100); every other roll completes the dispatch."""
CHOICES = ["a", "b"]


# --- workflows --------------------------------------------------------------------------------

@dataclass
class Graph:
    nodes: list[NodeSpec] = field(default_factory=list)
    edges: list[EdgeSpec] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def new(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}"


def _work(draw: st.DrawFn, g: Graph, role: str, **kw: Any) -> str:
    node_id = g.new(role[0].lower())
    common: dict[str, Any] = {"max_attempts": draw(st.integers(1, 3))}
    if role not in ("DECISION", "START") and draw(st.integers(0, 4)) == 0:
        common["continue_on_failure"] = True
    if draw(st.booleans()) or role == "SPLIT":
        g.nodes.append(NodeSpec(id=node_id, role=role, kind="agent", agent="worker", **common, **kw))
    else:
        g.nodes.append(NodeSpec(id=node_id, role=role, kind="tool", tool="echo", args={"n": node_id}, **common, **kw))
    return node_id


def _block(draw: st.DrawFn, g: Graph, depth: int) -> tuple[str, list[str]]:
    """Add a block of nodes; returns (its entry, the nodes whose single successor is still to connect)."""
    kinds = ["work", "work", "seq"] if depth else []
    kinds += ["branch", "split", "decision", "seq"] if depth < 2 else []
    kind = draw(st.sampled_from(kinds))
    if kind == "work":
        node = _work(draw, g, "LINEAR")
        return node, [node]
    if kind == "seq":
        first, tails = _block(draw, g, depth + 1)
        second, end = _block(draw, g, depth + 1)
        g.edges += [EdgeSpec(from_=t, to=second) for t in tails]
        return first, end
    if kind == "decision":
        node = _work(draw, g, "DECISION")
        join = _work(draw, g, "LINEAR")
        for choice in CHOICES:
            entry, tails = _block(draw, g, depth + 1)
            g.edges.append(EdgeSpec(from_=node, to=entry, when=Condition(field="choice", equals=choice)))
            g.edges += [EdgeSpec(from_=t, to=join) for t in tails]
        if draw(st.booleans()):  # an output that matches neither choice may end the task here
            g.edges.append(EdgeSpec(from_=node, to="failed_exit", default=True))
        return node, [join]
    merge_id = g.new("m")
    policy = draw(st.sampled_from(["all", "any", "quorum"]))
    if kind == "branch":
        node = _work(draw, g, "BRANCH")
        width = draw(st.integers(2, 3))
        for _ in range(width):
            entry, tails = _block(draw, g, depth + 1)
            g.edges.append(EdgeSpec(from_=node, to=entry))
            g.edges += [EdgeSpec(from_=t, to=merge_id) for t in tails]
        quorum = draw(st.integers(1, width)) if policy == "quorum" else None
    else:
        node = _work(draw, g, "SPLIT", split=SplitSpec(items="items", max_items=3, merge=merge_id))
        entry, tails = _block(draw, g, depth + 1)
        if len(tails) > 1:  # a SPLIT's MERGE has one predecessor
            last = _work(draw, g, "LINEAR")
            g.edges += [EdgeSpec(from_=t, to=last) for t in tails]
            tails = [last]
        g.edges.append(EdgeSpec(from_=node, to=entry))
        g.edges += [EdgeSpec(from_=t, to=merge_id) for t in tails]
        quorum = draw(st.integers(1, 2)) if policy == "quorum" else None
    merge = MergeSpec(policy=policy, quorum=quorum, combine=draw(st.sampled_from(["list", "keyed"])))
    if draw(st.booleans()):
        g.nodes.append(NodeSpec(id=merge_id, role="MERGE", merge=merge))
    else:
        g.nodes.append(NodeSpec(id=merge_id, role="MERGE", kind="agent", agent="worker", merge=merge,
                                max_attempts=1))
    return node, [merge_id]


@st.composite
def workflows(draw: st.DrawFn) -> WorkflowManifest:
    g = Graph()
    start = _work(draw, g, "START")
    entry, tails = _block(draw, g, 0)
    g.edges.append(EdgeSpec(from_=start, to=entry))
    g.edges += [EdgeSpec(from_=t, to="done") for t in tails]
    g.nodes += [NodeSpec(id="done", role="EXIT", status="succeeded")]
    if any(e.to == "failed_exit" for e in g.edges):
        g.nodes.append(NodeSpec(id="failed_exit", role="EXIT", status="failed"))
    return manifest(g.nodes, g.edges, agents={"worker": AgentSpec(provider="mock")},
                    tools={"echo": ToolSpec(builtin="echo")}, schemas={})


# --- a world of tasks -------------------------------------------------------------------------

class World:
    """The router's store and bus reduced to their effect: a state and records per task, and the
    messages tasks address to each other, delivered in an order the test draws."""

    def __init__(self, wf: WorkflowManifest, data: st.DataObject) -> None:
        self.wf = wf
        self.data = data
        self.states: dict[str, TaskState] = {}
        self.records: dict[str, list[Envelope]] = {}
        self.mail: list[Envelope] = []
        self.applied: list[RouterInput] = []
        self.ids = itertools.count()
        self.clock = itertools.count(1)
        self.cancelled: str | None = None
        self.late_answered = 0

    def now(self) -> Any:
        return T0 + timedelta(seconds=next(self.clock))

    def feed(self, inp: RouterInput) -> list[Envelope]:
        task = inp.event.task_id
        state, out = apply(self.states.get(task, TaskState()), inp)
        self.states[task] = state
        self.records.setdefault(task, []).extend(out)
        self.mail += [r for r in out if r.task_id != task]
        if out:
            self.applied.append(inp)
        return out

    def open_dispatches(self) -> list[Envelope]:
        found = []
        for task, state in self.states.items():
            open_ids = {s.dispatch_id for _, s in state.open_dispatches()}
            found += [r for r in self.records[task] if r.type == "node.dispatched" and r.data["dispatch_id"] in open_ids]
        return found

    def late_answers(self) -> list[Envelope]:
        """Dispatches of nodes abandoned or cancelled when their task ended, still owed an answer."""
        found = []
        for task, state in self.states.items():
            owed = {s.dispatch_id for s in state.nodes.values() if s.status in ("abandoned", "cancelled")
                    and s.dispatch_id}
            found += [r for r in self.records[task] if r.type == "node.dispatched" and r.data["dispatch_id"] in owed]
        return found

    def answer(self, dispatch: Envelope) -> None:
        # hypothesis favours the ends of a range, so the rare outcomes sit in the middle of it
        roll = self.data.draw(st.integers(0, 99), label="outcome roll")
        kind = OUTCOMES.get(roll // 10 * 10 + (roll % 10 < 3) * 100, "complete")
        output = {"choice": self.data.draw(st.sampled_from([*CHOICES, *CHOICES, "zzz"]), label="choice"),
                  "items": self.data.draw(st.lists(st.integers(0, 9), max_size=3).filter(len) | st.just([]),
                                           label="items")}
        id_ = f"in-{next(self.ids)}"
        if kind == "complete":
            inp = completed(dispatch, output, id=id_, time=self.now())
        elif kind == "deadline":
            inp = expired(dispatch, id=id_)
        else:
            inp = errored(dispatch, f"{kind} trouble", retryable=kind == "retryable", id=id_, time=self.now())
        self.feed(inp)

    def deliver_mail(self) -> None:
        index = self.data.draw(st.integers(0, len(self.mail) - 1), label="message")
        self.feed(RouterInput(self.mail.pop(index)))

    def cancel(self) -> None:
        """An operator cancels a task that is still running (once per run)."""
        live = sorted(t for t, s in self.states.items() if s.status in ("running", "waiting"))
        task = self.data.draw(st.sampled_from(live), label="cancel")
        self.cancelled = task  # at most one operator cancel per run
        self.feed(RouterInput(Envelope(id=f"cancel-{task}", source="test", type="task.cancel_requested",
                                       time=self.now(), tenant=TENANT, task_id=task, correlation_id="corr-1",
                                       data={"reason": "operator", "requested_by": "ops"})))

    def redeliver(self) -> None:
        inp = self.data.draw(st.sampled_from(self.applied), label="redelivered")
        assert self.feed(inp) == [], f"a redelivered {inp.event.type} changed a task"

    def run(self) -> None:
        self.feed(accepted(self.wf, {"topic": "t"}, id="accept", tenant=TENANT))
        for _ in range(2000):
            moves = (["answer"] * 4 if self.open_dispatches() else []) + (["mail"] * 3 if self.mail else [])
            moves += ["late"] if self.late_answers() else []
            if not moves:
                return
            live = any(s.status in ("running", "waiting") for s in self.states.values())
            move = self.data.draw(st.sampled_from([*moves, "redeliver"]), label="move")
            if live and self.cancelled is None and self.data.draw(st.integers(0, 60), label="cancel?") == 30:
                move = "cancel"
            if move == "answer":
                self.answer(self.data.draw(st.sampled_from(self.open_dispatches()), label="dispatch"))
            elif move == "mail":
                self.deliver_mail()
            elif move == "cancel":
                self.cancel()
            elif move == "late":
                before = len(self.late_answers())
                self.answer(self.data.draw(st.sampled_from(self.late_answers()), label="late dispatch"))
                assert len(self.late_answers()) <= before
                self.late_answered += 1
                if self.late_answered > 50:
                    return
            else:
                self.redeliver()
        raise AssertionError("the world did not settle within 2000 moves")


# --- properties -------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(wf=workflows(), data=st.data())
def test_every_role_keeps_the_router_invariants(wf: WorkflowManifest, data: st.DataObject) -> None:
    assert validate(wf) == [], [str(e) for e in validate(wf)]
    world = World(wf, data)
    world.run()
    root = world.states["task-1"]
    event(f"root ended {root.status}" + (" (cancel)" if world.cancelled else ""))
    for marker in ("matched no edge", "gave up", "fatal trouble", "no path left", "MERGE needs", "subtask"):
        if root.status == "failed" and marker in root.reason:
            event(f"root failed: {marker}")
    event("roles: " + " ".join(sorted({n.role for n in wf.nodes} - {"START", "LINEAR", "EXIT"})))
    event(f"tasks: {min(len(world.states), 4)}{'+' if len(world.states) >= 4 else ''}")
    event(f"merges fired: {sum(r.type == 'node.merged' for rs in world.records.values() for r in rs)}")

    for task, records in world.records.items():
        state = world.states[task]
        # exactly one terminal status per task, and no work decided after it
        ends = [i for i, r in enumerate(records) if r.type in TERMINAL]
        assert len(ends) == 1, (task, [r.type for r in records])
        assert state.terminal
        after = [r.type for r in records[ends[0]:] if r.task_id == task]
        assert not {"node.dispatched", "node.succeeded", "node.merged", "node.fanned_out"} & set(after), after
        # a node runs to success at most once, a MERGE fires at most once, and only when its policy allows
        succeeded = Counter(r.data["node"] for r in records if r.type == "node.succeeded")
        assert all(c == 1 for c in succeeded.values()), succeeded
        merged = [r for r in records if r.type == "node.merged"]
        assert len({r.data["node"] for r in merged}) == len(merged)
        for r in merged:
            policy = wf.node(r.data["node"]).merge or MergeSpec()
            arrived = len(r.data["arrived"])
            if policy.policy == "any":
                assert arrived >= 1
            elif policy.policy == "quorum":
                assert arrived >= (policy.quorum or 1)
        # the kept state is the fold of the records, and replay reproduces them
        assert fold(records) == state
        assert dumps(replay(json_round_trip(records))) == dumps(records)
        inputs = [r for r in records if r.type == INPUT_RECORD]
        assert len({r.data["input"]["id"] for r in inputs}) == len(inputs)

    # a parent that succeeded saw every subtask it waited for end; subtasks know their parent
    for task, state in world.states.items():
        if state.lineage is not None:
            parent = world.states[state.lineage.parent_id]
            assert state.lineage.root_id == "task-1"
            assert task in parent.fanouts[state.lineage.parent_node or ""].subtasks
            if parent.status == "cancelled":
                assert state.status in ("cancelled", "succeeded", "failed")
    if root.status == "succeeded":
        assert root.exit_node == "done"
