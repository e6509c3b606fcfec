"""Human in the loop: a node that requires approval waits; approve (optionally with edited
arguments, checked against the tool's args_schema) dispatches it; reject fails it."""

from __future__ import annotations

from typing import Any

from router_testkit import agent, chain, completed, envelope, exit_, manifest, started, tool

from agent_engine.contracts.manifest import ToolSpec
from agent_engine.router.core import RouterInput, decide, replay

TOOLS = {"publish": ToolSpec(builtin="workspace_list", args_schema={
    "type": "object", "required": ["path"], "properties": {"path": {"type": "string"}}})}


def approval_workflow() -> Any:
    """draft (START agent) -> publish (tool, approval required) -> done."""
    return manifest([agent("draft", role="START"),
                     tool("publish", tool_name="publish", args={"path": "$nodes.draft.text"}, approval="required"),
                     exit_("done")],
                    chain("draft", "publish", "done"), tools=TOOLS)


def decision(choice: str, *, args: dict[str, Any] | None = None, id: str = "decide-1", by: str = "alice",
             reason: str = "") -> RouterInput:
    data: dict[str, Any] = {"node": "publish", "decision": choice, "decided_by": by, "reason": reason}
    if args is not None:
        data["args"] = args
    return RouterInput(envelope("node.approval_decided", data, id=id))


def waiting_run() -> Any:
    run = started(approval_workflow())
    run.feed(completed(run.dispatch(), {"text": "reports"}))
    return run


def test_a_node_that_requires_approval_waits_instead_of_being_dispatched() -> None:
    run = waiting_run()
    request = run.records[-1]
    assert request.type == "node.approval_requested"
    assert request.data == {"node": "publish", "kind": "tool", "args": {"path": "reports"}}
    assert run.state.status == "waiting" and run.state.nodes["publish"].status == "awaiting_approval"
    assert [r.data["node"] for r in run.records if r.type == "node.dispatched"] == ["draft"]


def test_approve_dispatches_the_node_with_the_requested_arguments() -> None:
    run = waiting_run()
    events = run.feed(decision("approve"))
    assert [e.type for e in events] == ["router.input", "node.approved", "node.dispatched"]
    assert events[1].data["decided_by"] == "alice" and events[1].data["edited"] is False
    assert events[2].data["tool"]["args"] == {"path": "reports"} and "approved by alice" in events[2].data["reason"]
    assert run.state.status == "running"


def test_approve_with_edited_arguments_runs_the_edit_and_records_who() -> None:
    run = waiting_run()
    events = run.feed(decision("approve", args={"path": "final"}))
    assert events[1].data == {"node": "publish", "decided_by": "alice", "args": {"path": "final"}, "edited": True}
    assert events[2].data["tool"]["args"] == {"path": "final"}


def test_an_edit_that_breaks_the_tools_args_schema_is_refused_and_the_node_keeps_waiting() -> None:
    run = waiting_run()
    events = run.feed(decision("approve", args={"path": 5}))
    assert [e.type for e in events] == ["router.input", "node.approval_refused"]
    assert "args_schema" in events[1].data["reason"] and "path" in events[1].data["reason"]
    assert run.state.status == "waiting"
    assert [e.type for e in run.feed(decision("approve", id="decide-2"))][1:] == ["node.approved", "node.dispatched"]


def test_reject_fails_the_node_and_the_task_naming_who_and_why() -> None:
    run = waiting_run()
    events = run.feed(decision("reject", reason="wrong folder", by="bob"))
    assert [e.type for e in events] == ["router.input", "node.failed", "task.failed"]
    assert events[1].data["reason"] == "rejected by bob: wrong folder"


def test_a_decision_for_a_node_that_is_not_waiting_changes_nothing() -> None:
    run = started(approval_workflow())
    assert decide(run.state, decision("approve")) == []
    run = waiting_run()
    run.feed(decision("approve"))
    assert decide(run.state, decision("approve", id="decide-again")) == []


def test_agent_node_arguments_cannot_be_edited() -> None:
    run = started(manifest([agent("draft", role="START", approval="required"), exit_("done")],
                           chain("draft", "done"), tools=TOOLS))
    assert run.records[-1].type == "node.approval_requested"
    data = {"node": "draft", "decision": "approve", "decided_by": "alice", "args": {"x": 1}}
    events = run.feed(RouterInput(envelope("node.approval_decided", data, id="d1")))
    assert events[-1].type == "node.approval_refused" and "agent node" in events[-1].data["reason"]


def test_an_approval_history_replays_exactly() -> None:
    run = waiting_run()
    run.feed(decision("approve", args={"path": 5}))
    run.feed(decision("approve", args={"path": "final"}, id="decide-2"))
    run.feed(completed(run.dispatch(), {"files": []}))
    assert run.state.status == "succeeded"
    assert [r.model_dump(mode="json") for r in replay(run.records)] == [r.model_dump(mode="json") for r in run.records]
