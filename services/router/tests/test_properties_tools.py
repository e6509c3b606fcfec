"""Property-based tests of tool use: random agents whose models ask for tools (some calls refused),
random runner behaviour for every model turn and every tool call (success, retryable or fatal error,
deadline; the tool gate's refusal, or its hold for approval, then approved or rejected), and redelivered or
stale inputs mixed in, which must change nothing.

Checked after every step against a model worked out independently from the manifest, and at the end:
one terminal status, turns numbered without gaps, each call that may run dispatched in order and
answered once, refused calls never dispatched, usage summed over turns, replay == records.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st
from router_testkit import (
    RandomRun,
    completed,
    dumps,
    envelope,
    errored,
    expired,
    json_round_trip,
    manifest,
)

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.manifest import AgentSpec, EdgeSpec, NodeSpec, ToolSpec, WorkflowManifest
from agent_engine.contracts.validation import validate
from agent_engine.router.core import RouterInput, fold, replay

TOOLS = {"read": ToolSpec(builtin="workspace_read"), "stats": ToolSpec(builtin="text_stats"),
         "note": ToolSpec(builtin="workspace_append")}
CALLS = [("read", {"path": "a.md"}), ("stats", {"text": "x"}), ("note", {"path": "n.md", "text": "t"}),
         ("read", {}), ("shell", {"cmd": "ls"})]
"""What a model may ask for: the last two are refused (missing argument, tool not offered)."""
REFUSED = {3, 4}
TURN_OUTCOMES = ("tools", "tools", "complete", "retryable", "fatal", "deadline")
CALL_OUTCOMES = ("complete", "complete", "retryable", "fatal", "deadline", "refused", "held")
"""`refused` and `held`: guardrails' tool gate refuses the call, or holds it for a person's approval."""
USAGE = {"input_tokens": 10, "output_tokens": 1, "cache_read_tokens": 0, "cache_write_tokens": 0}
TERMINAL = ("task.succeeded", "task.failed")


@st.composite
def workflows(draw: st.DrawFn) -> WorkflowManifest:
    """One to three agent nodes in a line, each with tools and its own limits, then an EXIT."""
    count = draw(st.integers(1, 3))
    ids = [f"a{i}" for i in range(count)]
    nodes = [NodeSpec(id=n, role="START" if i == 0 else "LINEAR", kind="agent", agent=f"agent{i}",
                      max_attempts=draw(st.integers(1, 3)), timeout_s=30, backoff_s=draw(st.sampled_from([0, 0, 2.0])))
             for i, n in enumerate(ids)]
    agents = {f"agent{i}": AgentSpec(provider="mock", tools=["read", "stats", "note"],
                                     max_tool_turns=draw(st.integers(1, 3))) for i in range(count)}
    edges = [EdgeSpec(from_=a, to=b) for a, b in itertools.pairwise([*ids, "done"])]
    return manifest([*nodes, NodeSpec(id="done", role="EXIT", status="succeeded")], edges, agents=agents,
                    tools=TOOLS, schemas={})


class Driver(RandomRun):

    def answer(self, dispatch: Envelope, kind: str, calls: list[int] | None = None) -> RouterInput:
        id_ = f"in-{next(self.ids)}"
        if kind == "deadline":
            return expired(dispatch, id=id_)
        if kind in ("retryable", "fatal"):
            return errored(dispatch, f"{kind} trouble", retryable=kind == "retryable", id=id_, time=self.now())
        if kind in ("refused", "held"):  # the tool gate's answer
            d = dispatch.data
            refusal = {"rule": "tool.approval", "reason": "ask", "approval": True} if kind == "held" else {
                "rule": "tool.path", "reason": "denied"}
            data = {"dispatch_id": d["dispatch_id"], "node": d["node"], "attempt": d["attempt"], "retryable": False,
                    "error": f"{kind} by policy", "refusal": refusal}
            return RouterInput(envelope("node.errored", data, id=id_, time=self.now()))
        if kind == "tools":
            d = dispatch.data
            data = {"dispatch_id": d["dispatch_id"], "node": d["node"], "attempt": d["attempt"],
                    "turn": d.get("turn", 0), "thought": f"turn {d.get('turn', 0)}", "usage": USAGE,
                    "calls": [{"id": f"m{i}", "name": CALLS[c][0], "args": CALLS[c][1]} for i, c in enumerate(calls or [])]}
            return RouterInput(envelope("node.tools_requested", data, id=id_, time=self.now()))
        return completed(dispatch, {"ok": True}, id=id_, time=self.now(), usage=USAGE)

    def noise(self) -> None:
        """Redeliver an applied input, or answer a dispatch that is no longer open."""
        open_ids = {s.dispatch_id for _, s in self.run.state.open_dispatches()}
        open_nodes = {n for n, s in self.run.state.nodes.items() if s.status in ("dispatched", "retry_scheduled")}
        # an earlier attempt of a step still open may legitimately settle it, so only other nodes' are stale
        closed = [r for r in self.run.records if r.type == "node.dispatched" and r.data["dispatch_id"] not in open_ids
                  and r.data["node"] not in open_nodes]
        if closed and self.data.draw(st.booleans(), label="stale"):
            dispatch = self.data.draw(st.sampled_from(closed), label="stale dispatch")
            kinds = ("complete", "retryable", "fatal", "deadline") + (("tools",) if dispatch.data["kind"] == "agent"
                                                                     else ())
            inp = self.answer(dispatch, self.data.draw(st.sampled_from(kinds), label="stale outcome"), [0])
        else:
            inp = self.data.draw(st.sampled_from(self.applied), label="redelivered")
        assert self.run.feed(inp) == [], f"{inp.event.type} for a closed dispatch or redelivered changed the task"
        self.absorbed += 1

    def step(self) -> None:
        held = [(n, s) for n, s in self.run.state.nodes.items() if s.status == "awaiting_approval"]
        if held:  # a person decides about the call the gate holds
            [(node_id, node)] = held
            assert node.call is not None and self.run.state.status == "waiting"
            choice = self.data.draw(st.sampled_from(["approve", "reject"]), label="decision")
            decided = {"node": node_id, "decision": choice, "decided_by": "alice", "reason": "r"}
            want = (("running", node_id, "tool", node.call, node.attempts + 1) if choice == "approve"
                    else self.after_call(node_id, node.call))
            self.deliver(RouterInput(envelope("node.approval_decided", decided, id=f"in-{next(self.ids)}",
                                              time=self.now())))
            assert self.seen() == want, (choice, self.seen(), want)
            if choice == "approve":
                assert self.run.dispatch().data["tool"]["approved"] is True
            return
        waiting = [(n, s) for n, s in self.run.state.nodes.items() if s.status == "retry_scheduled"]
        if waiting:  # a retry after a backoff: its time comes
            [(node_id, node)] = waiting
            assert node.deadline is not None
            want = ("running", node_id, "tool" if node.call is not None else "agent",
                    node.call if node.call is not None else len(node.steps), node.attempts + 1)
            due = {"node": node_id, "attempt": node.attempts + 1, "at": node.deadline.isoformat()}
            self.deliver(RouterInput(envelope("node.retry_due", due, id=f"in-{next(self.ids)}", time=node.deadline)))
            assert self.seen() == want, (self.seen(), want)
            return
        [(node_id, _)] = self.run.state.open_dispatches()
        dispatch = self.run.dispatch()
        spec = self.wf.node(node_id)
        agent = self.wf.agents[spec.agent or ""]
        if dispatch.data["kind"] == "agent":
            kind = self.data.draw(st.sampled_from(TURN_OUTCOMES), label="turn outcome")
            calls = self.data.draw(st.lists(st.integers(0, len(CALLS) - 1), min_size=1, max_size=3), label="calls")
            want = self.expect_turn(node_id, kind, calls, agent.max_tool_turns, spec.max_attempts)
            self.deliver(self.answer(dispatch, kind, calls))
        else:
            kind = self.data.draw(st.sampled_from(CALL_OUTCOMES), label="call outcome")
            want = self.expect_call(node_id, kind, spec.max_attempts)
            self.deliver(self.answer(dispatch, kind))
        assert self.seen() == want, (kind, self.seen(), want)

    # --- the model of what should happen ----------------------------------------------------

    def seen(self) -> tuple[Any, ...]:
        """(task status, open node, kind, call index or turn, attempt); kind `retry` for a scheduled retry."""
        state = self.run.state
        if state.terminal:
            return (state.status,)
        held = [(n, s) for n, s in state.nodes.items() if s.status == "awaiting_approval"]
        if held:
            [(node_id, node)] = held
            return ("waiting", node_id, "held", node.call, node.attempts)
        waiting = [(n, s) for n, s in state.nodes.items() if s.status == "retry_scheduled"]
        if waiting:
            [(node_id, node)] = waiting
            return ("running", node_id, "retry", node.call if node.call is not None else len(node.steps),
                    node.attempts + 1)
        [(node_id, node)] = state.open_dispatches()
        kind = self.run.dispatch().data["kind"]
        return ("running", node_id, kind, node.call if kind == "tool" else len(node.steps), node.attempts)

    def after_node(self, node_id: str) -> tuple[Any, ...]:
        nxt = self.wf.successors(node_id)[0].to
        return ("succeeded",) if self.wf.node(nxt).role == "EXIT" else ("running", nxt, "agent", 0, 1)

    def expect_turn(self, node_id: str, kind: str, calls: list[int], max_turns: int, max_attempts: int
                    ) -> tuple[Any, ...]:
        node = self.run.state.nodes[node_id]
        turn = len(node.steps)
        if kind in ("retryable", "deadline"):
            again = "retry" if self.wf.node(node_id).backoff_s else "agent"
            return ("running", node_id, again, turn, node.attempts + 1) if node.attempts < max_attempts else (
                "failed",)
        if kind == "fatal" or (kind == "tools" and turn >= max_turns):
            return ("failed",)
        if kind == "complete":
            return self.after_node(node_id)
        runnable = [i for i, c in enumerate(calls) if c not in REFUSED]
        return ("running", node_id, "tool", runnable[0], 1) if runnable else ("running", node_id, "agent", turn + 1, 1)

    def expect_call(self, node_id: str, kind: str, max_attempts: int) -> tuple[Any, ...]:
        node = self.run.state.nodes[node_id]
        assert node.call is not None
        if kind == "held":
            return ("waiting", node_id, "held", node.call, node.attempts)
        if kind in ("retryable", "deadline") and node.attempts < max_attempts:
            return ("running", node_id, "retry" if self.wf.node(node_id).backoff_s else "tool", node.call,
                    node.attempts + 1)
        return self.after_call(node_id, node.call)

    def after_call(self, node_id: str, call: int) -> tuple[Any, ...]:
        """The call's result is in: the next call of the turn that may run, else the model's next turn."""
        node = self.run.state.nodes[node_id]
        later = [i for i, c in enumerate(node.steps[-1]["calls"]) if i > call and not c.get("refused")]
        return ("running", node_id, "tool", later[0], 1) if later else (
            "running", node_id, "agent", len(node.steps), 1)


def drive(wf: WorkflowManifest, data: st.DataObject) -> Driver:
    driver = Driver(wf, data)
    driver.drive(most_noise_after=2)
    return driver


@settings(max_examples=200, deadline=None)
@given(wf=workflows(), data=st.data())
def test_random_tool_use_keeps_the_router_invariants(wf: WorkflowManifest, data: st.DataObject) -> None:
    assert validate(wf) == []
    driver = drive(wf, data)
    records, state = driver.run.records, driver.run.state
    event(f"ended {state.status}; turns {min(3, sum(r.type == 'node.tool_turn_recorded' for r in records))}")
    event(f"calls held for approval: {min(2, sum(r.type == 'node.approval_requested' for r in records))}")

    terminal = [i for i, r in enumerate(records) if r.type in TERMINAL]
    assert terminal == [len(records) - 1] and state.open_dispatches() == []
    assert len({r.id for r in records}) == len(records)
    dispatch_ids = [r.data["dispatch_id"] for r in records if r.type == "node.dispatched"]
    assert len(dispatch_ids) == len(set(dispatch_ids))
    for node_id in {r.data["node"] for r in records if r.type == "node.dispatched"}:
        turns = [r.data for r in records if r.type == "node.tool_turn_recorded" and r.data["node"] == node_id]
        assert [t["turn"] for t in turns] == list(range(len(turns)))  # once each, no gaps
        agent = wf.agents[wf.node(node_id).agent or ""]
        assert len(turns) <= agent.max_tool_turns
        returned = Counter((r.data["turn"], r.data["index"]) for r in records
                           if r.type == "node.tool_returned" and r.data["node"] == node_id)
        assert all(n == 1 for n in returned.values())  # every observation recorded once
        for t in turns:
            for index, call in enumerate(t["calls"]):
                ran = [r.data for r in records if r.type == "node.dispatched" and r.data.get("call")
                       and r.data["node"] == node_id and r.data["call"]["turn"] == t["turn"]
                       and r.data["call"]["index"] == index]
                if call.get("refused"):
                    assert ran == [] and (t["turn"], index) not in returned
                else:  # attempts count on; a call held and approved goes on with the next attempt
                    assert [d["attempt"] for d in ran] == list(range(1, len(ran) + 1))
        succeeded = [r.data for r in records if r.type == "node.succeeded" and r.data["node"] == node_id]
        if succeeded:
            assert succeeded[0]["usage"]["input_tokens"] == 10 * (len(turns) + 1)  # every turn's usage
    assert dumps(replay(json_round_trip(records))) == dumps(records)
    assert fold(json_round_trip(records)) == state
