"""Property-based tests: random valid workflows driven by random runner behaviour.

Workflows are DAGs of START / LINEAR / DECISION work nodes (agents and tools) and EXIT nodes;
DECISION edges test the `choice` field of the node's output for equality or membership. A run
answers every dispatch with a random outcome (success with a random choice, retryable or fatal
error, deadline expiry) and mixes in redelivered and stale inputs, which must change nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st
from router_testkit import (
    RandomRun,
    Run,
    completed,
    dumps,
    errored,
    expired,
    json_round_trip,
    manifest,
    types,
)

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.manifest import (
    AgentSpec,
    Condition,
    EdgeSpec,
    NodeSpec,
    ToolSpec,
    WorkflowManifest,
    lookup,
)
from agent_engine.contracts.validation import validate
from agent_engine.router.core import INPUT_RECORD, RouterInput, fold, replay
from agent_engine.router.state import TaskState

VALUES = ["a", "b", "c", "d"]
"""The enum a DECISION node's `choice` takes; outputs may also carry an unknown value or none."""
TERMINAL = ("task.succeeded", "task.failed", "task.rejected")
OUTCOMES = ("complete", "complete", "complete", "retryable", "fatal", "deadline")


# --- workflows --------------------------------------------------------------------------------

@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    if draw(st.booleans()):
        return Condition(field="choice", equals=draw(st.sampled_from(VALUES)))
    return Condition(field="choice", in_=draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=3, unique=True)))


@st.composite
def workflows(draw: st.DrawFn) -> WorkflowManifest:
    n_work = draw(st.integers(1, 6))
    work = [f"w{i}" for i in range(n_work)]
    exits = [f"x{i}" for i in range(draw(st.integers(1, 3)))]
    nodes: list[NodeSpec] = []
    edges: list[EdgeSpec] = []
    for i, node_id in enumerate(work):
        primary = work[i + 1] if i + 1 < n_work else draw(st.sampled_from(exits))
        others = [t for t in work[i + 2:] + exits if t != primary]
        role = "START" if i == 0 else draw(st.sampled_from(["LINEAR", "DECISION"] if others else ["LINEAR"]))
        common = {"timeout_s": draw(st.sampled_from([1, 30, 60.5])), "max_attempts": draw(st.integers(1, 3))}
        if draw(st.booleans()):
            nodes.append(NodeSpec(id=node_id, role=role, kind="agent", agent="worker", **common))
        else:
            args: dict[str, Any] = {"topic": "$input.topic", "n": i}
            if i > 0 and draw(st.booleans()):  # may name a node the run skipped: the node then fails
                args["prev"] = f"$nodes.{draw(st.sampled_from(work[:i]))}.choice"
            nodes.append(NodeSpec(id=node_id, role=role, kind="tool", tool="echo", args=args, **common))
        if role != "DECISION":
            edges.append(EdgeSpec(from_=node_id, to=primary))
            continue
        targets = [primary, *draw(st.lists(st.sampled_from(others), min_size=1, max_size=2, unique=True))]
        default = draw(st.none() | st.sampled_from(targets))
        for target in targets:
            if target == default:
                edges.append(EdgeSpec(from_=node_id, to=target, default=True))
            else:
                edges.append(EdgeSpec(from_=node_id, to=target, when=draw(conditions())))
    reached = {e.to for e in edges}
    nodes += [NodeSpec(id=x, role="EXIT", status=draw(st.sampled_from(["succeeded", "failed"])))
              for x in exits if x in reached]
    return manifest(nodes, edges, agents={"worker": AgentSpec(provider="mock")},
                    tools={"echo": ToolSpec(builtin="echo")}, schemas={})


# --- an independent model of what the router should do ----------------------------------------

def expected(state: TaskState, wf: WorkflowManifest, node: str, outcome: str, output: dict[str, Any]) -> tuple:
    """(status, node, attempt) after an outcome for `node`'s open dispatch, worked out from the manifest."""
    spec = wf.node(node)
    attempts = state.nodes[node].attempts
    if outcome in ("retryable", "deadline"):
        return ("running", node, attempts + 1) if attempts < spec.max_attempts else ("failed", None, None)
    if outcome == "fatal":
        return ("failed", None, None)
    target = _route(wf, spec, output)
    if target is None:
        return ("failed", None, None)
    nxt = wf.node(target)
    if nxt.role == "EXIT":
        return (nxt.status, target, None)
    outputs = {n: s.output for n, s in state.nodes.items() if s.status == "succeeded"} | {node: output}
    for value in nxt.args.values():
        if isinstance(value, str) and value.startswith("$nodes.") and not lookup(outputs, value[7:])[0]:
            return ("failed", None, None)
    return ("running", target, 1)


def _route(wf: WorkflowManifest, spec: NodeSpec, output: dict[str, Any]) -> str | None:
    edges = wf.successors(spec.id)
    if spec.role != "DECISION":
        return edges[0].to
    if "choice" in output:
        for e in edges:
            if e.when and (output["choice"] in e.when.in_ if e.when.in_ is not None else output["choice"] == e.when.equals):
                return e.to
    return next((e.to for e in edges if e.default), None)


def observed(state: TaskState) -> tuple:
    if state.terminal:
        return (state.status, state.exit_node, None)
    [(node, ns)] = state.open_dispatches()
    return ("running", node, ns.attempts)


# --- the driver -------------------------------------------------------------------------------

class Driver(RandomRun):

    def outcome(self, dispatch: Envelope, kind: str, output: dict[str, Any] | None = None) -> RouterInput:
        id_ = f"in-{next(self.ids)}"
        if kind == "complete":
            return completed(dispatch, output, id=id_, time=self.now())
        if kind == "deadline":
            return expired(dispatch, id=id_)
        return errored(dispatch, f"{kind} trouble", retryable=kind == "retryable", id=id_, time=self.now())

    def noise(self) -> None:
        """Redeliver an applied input, or answer a dispatch that is no longer open: both change nothing."""
        # an earlier attempt of a node still open may legitimately settle it, so it is not noise
        open_nodes = {n for n, _ in self.run.state.open_dispatches()}
        closed = [r for r in self.run.records if r.type == "node.dispatched" and r.data["node"] not in open_nodes]
        choices = ["redeliver"] + (["stale"] if closed else [])
        if self.data.draw(st.sampled_from(choices), label="noise") == "redeliver":
            inp = self.data.draw(st.sampled_from(self.applied), label="redelivered")
        else:
            dispatch = self.data.draw(st.sampled_from(closed), label="stale dispatch")
            kind = self.data.draw(st.sampled_from(OUTCOMES), label="stale outcome")
            inp = self.outcome(dispatch, kind, {"choice": "a"})
        assert self.run.feed(inp) == [], f"{inp.event.type} for a closed dispatch or redelivered changed the task"
        self.absorbed += 1

    def step(self) -> None:
        dispatch = self.run.dispatch()
        node = dispatch.data["node"]
        kind = self.data.draw(st.sampled_from(OUTCOMES), label=f"outcome of {node}")
        output = self.data.draw(st.sampled_from([*({"choice": v} for v in VALUES), {"choice": "zzz"}, {}]),
                                label="output")
        want = expected(self.run.state, self.wf, node, kind, output)
        self.deliver(self.outcome(dispatch, kind, output))
        assert observed(self.run.state) == want


def drive(wf: WorkflowManifest, data: st.DataObject) -> Driver:
    driver = Driver(wf, data)
    driver.drive(most_noise_after=3)
    return driver


def ending(state: TaskState) -> str:
    """How a run ended, for `pytest --hypothesis-show-statistics`: shows the generator covers every path."""
    if state.exit_node:
        return f"EXIT {state.status}"
    for marker in ("matched no edge", "which the task does not have", "gave up", "trouble"):
        if marker in state.reason:
            return marker
    return state.reason


# --- properties -------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(wf=workflows(), data=st.data())
def test_random_runs_keep_the_router_invariants(wf: WorkflowManifest, data: st.DataObject) -> None:
    assert validate(wf) == [], "the generator must build valid workflows"
    driver = drive(wf, data)
    state, records = driver.run.state, driver.run.records
    event(f"ended: {ending(state)}")
    event(f"absorbed inputs: {min(driver.absorbed, 5)}{'+' if driver.absorbed >= 5 else ''}")

    # exactly one terminal status, recorded last, and nothing dispatched after it
    terminal = [i for i, r in enumerate(records) if r.type in TERMINAL]
    assert len(terminal) == 1
    assert terminal[0] == len(records) - 1
    assert state.terminal
    assert state.open_dispatches() == []

    # each node succeeds at most once and is never dispatched beyond its max_attempts
    succeeded = Counter(r.data["node"] for r in records if r.type == "node.succeeded")
    assert all(count == 1 for count in succeeded.values())
    for r in records:
        if r.type == "node.dispatched":
            assert 1 <= r.data["attempt"] <= wf.node(r.data["node"]).max_attempts
    assert {n for n, s in state.nodes.items() if s.status == "succeeded"} == set(succeeded)

    # attempts of a node are dispatched in order 1, 2, 3 ...
    for node in {r.data["node"] for r in records if r.type == "node.dispatched"}:
        attempts = [r.data["attempt"] for r in records if r.type == "node.dispatched" and r.data["node"] == node]
        assert attempts == list(range(1, len(attempts) + 1))

    # absorbed inputs leave no trace; every id is unique
    inputs = [r.data["input"]["id"] for r in records if r.type == INPUT_RECORD]
    assert inputs == [inp.event.id for inp in driver.applied]
    assert state.applied == set(inputs)
    assert len({r.id for r in records}) == len(records)
    assert state.version == len(records)


@settings(max_examples=150, deadline=None)
@given(wf=workflows(), data=st.data())
def test_replay_reproduces_random_runs(wf: WorkflowManifest, data: st.DataObject) -> None:
    driver = drive(wf, data)
    records = driver.run.records
    stored = json_round_trip(records)

    assert dumps(replay(stored)) == dumps(records)
    assert fold(stored) == driver.run.state


@settings(max_examples=50, deadline=None)
@given(wf=workflows(), data=st.data())
def test_the_same_inputs_give_the_same_records(wf: WorkflowManifest, data: st.DataObject) -> None:
    driver = drive(wf, data)
    again = Run()
    for inp in driver.applied:
        again.feed(inp)
    assert dumps(again.records) == dumps(driver.run.records)
    assert types(again.records)[-1] in TERMINAL
