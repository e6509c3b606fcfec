"""Where the gates meet the router: a tool call's result the output gate holds, and a tool node approved with edited
arguments and then retried (both found by a review of issue #15)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from router_testkit import agent, chain, envelope, errored, exit_, manifest, started, tool, types

from agent_engine.contracts.manifest import AgentSpec, ToolSpec
from agent_engine.contracts.policy import OutputPolicy, TopicRule, WorkflowPolicy
from agent_engine.router.core import RouterInput

TOOLS = {"read": ToolSpec(builtin="workspace_read"), "note": ToolSpec(builtin="workspace_append")}


def _asked(dispatch: Any, *calls: tuple[str, dict[str, Any]]) -> RouterInput:
    d = dispatch.data
    data = {"dispatch_id": d["dispatch_id"], "node": d["node"], "attempt": d["attempt"], "turn": d.get("turn", 0),
            "thought": "look", "calls": [{"id": f"toolu_{i}", "name": n, "args": a} for i, (n, a) in enumerate(calls)]}
    return RouterInput(envelope("node.tools_requested", data, id=f"ask-{d['dispatch_id']}",
                                time=dispatch.time + timedelta(seconds=1), task_id=dispatch.task_id))


def _checked(dispatch: Any, output: dict[str, Any], outcome: str, reason: str = "") -> RouterInput:
    d = dispatch.data
    data = {"dispatch_id": d["dispatch_id"], "node": d["node"], "attempt": d["attempt"], "output": output,
            "outcome": outcome, "rules": [{"rule": "topic.medical", "count": 1}], "reason": reason}
    return RouterInput(envelope("node.output_checked", data, id=f"checked-{d['dispatch_id']}",
                                time=dispatch.time, task_id=dispatch.task_id))


def test_a_paused_tool_call_result_is_held_for_a_person_not_handed_to_the_model() -> None:
    """results.py on_completed: for a model's tool call (node.call set) the output gate's `paused` outcome is
    ignored and the held output goes straight to the model as the call's result (tool_returned)."""
    agents = {"researcher": AgentSpec(provider="mock", model="m-1", prompt="research", tools=["read"])}
    policy = WorkflowPolicy(output=OutputPolicy(topics=[TopicRule(id="medical", pattern="diagnos", action="pause")]))
    wf = manifest([agent("research", role="START", agent_name="researcher"), exit_("done")],
                  chain("research", "done"), agents=agents, tools=TOOLS, policy=policy)
    run = started(wf)
    run.feed(_asked(run.dispatch(), ("read", {"path": "docs/patient.md"})))
    call = run.dispatch()
    assert call.data["call"]["call_id"] == "t0-c0"
    out = run.feed(_checked(call, {"content": "diagnosis: ..."}, "paused", "output held: topic.medical x1"))
    assert "node.tool_returned" not in types(out), "a held output reached the model without a person's approval"
    assert "node.approval_requested" in types(out)


def test_a_retry_of_an_approved_edited_tool_node_does_not_run_the_original_args_unapproved() -> None:
    """A tool node the gate held, approved with edited arguments: the approved dispatch carries the edit, but a
    retry (deadline, runner error) rebuilds the original arguments and still marks them `approved`, so the gate
    lets through, with no hold, exactly the arguments the person replaced."""
    wf = manifest([tool("write", role="START", tool_name="note", args={"path": "$input.path", "text": "x"}),
                   exit_("done")], chain("write", "done"), tools=TOOLS)
    run = started(wf, {"path": "docs/secret.md"})
    first = run.dispatch()
    d = first.data
    held = {"dispatch_id": d["dispatch_id"], "node": "write", "attempt": d["attempt"], "retryable": False,
            "error": "held for approval (rule tool.approval): x",
            "refusal": {"rule": "tool.approval", "reason": "x", "approval": True}}
    run.feed(RouterInput(envelope("node.errored", held, id="gate-1", time=first.time, task_id=first.task_id)))
    edited = {"path": "docs/public.md", "text": "x"}
    decided = {"node": "write", "decision": "approve", "decided_by": "alice", "args": edited}
    run.feed(RouterInput(envelope("node.approval_decided", decided, id="d-1")))
    approved = run.dispatch()
    assert approved.data["tool"]["args"] == edited and approved.data["tool"]["approved"] is True
    out = run.feed(errored(approved, "connection reset", retryable=True))
    retry = [e for e in out if e.type == "node.dispatched"] or [run.dispatch()]
    tool_ = retry[-1].data["tool"]
    assert not (tool_.get("approved") and tool_["args"] != edited), (
        f"retry runs the un-approved original args {tool_['args']} marked approved")
