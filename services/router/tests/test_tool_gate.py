"""The router's side of guardrails' tool gate, pure: the workflow's tool policy rides in every tool dispatch;
a refusal (node.errored with `refusal`) becomes the call's result, with its rule, and the model goes on; a call
held for approval makes the task wait, `approve` dispatches it again marked approved (retries too), `reject`
returns a refusal to the model. Every story ends with replay == records and fold == state."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from router_testkit import (
    Run,
    agent,
    chain,
    completed,
    dumps,
    envelope,
    exit_,
    json_round_trip,
    manifest,
    only,
    started,
    tool,
    types,
)

from agent_engine.contracts.manifest import AgentSpec, ToolSpec, WorkflowManifest
from agent_engine.contracts.policy import ToolPolicy, WorkflowPolicy
from agent_engine.router.core import RouterInput, fold, replay

TOOLS = {"read": ToolSpec(builtin="workspace_read"), "note": ToolSpec(builtin="workspace_append")}

POLICY = ToolPolicy(paths={"allow": ["docs/**"]}, approval=["note"])  # type: ignore[arg-type]


def asked(dispatch: Any, *calls: tuple[str, dict[str, Any]], turn: int | None = None) -> RouterInput:
    """The agent-runner's node.tools_requested answering an agent dispatch with `calls`."""
    d = dispatch.data
    data = {"dispatch_id": d["dispatch_id"], "node": d["node"], "attempt": d["attempt"],
            "turn": d.get("turn", 0) if turn is None else turn, "thought": "let me look",
            "calls": [{"id": f"toolu_{i}", "name": n, "args": a} for i, (n, a) in enumerate(calls)]}
    return RouterInput(envelope("node.tools_requested", data, id=f"ask-{d['dispatch_id']}",
                                time=dispatch.time + timedelta(seconds=1), task_id=dispatch.task_id))


def check_replay(run: Run) -> None:
    assert dumps(replay(json_round_trip(run.records))) == dumps(run.records)
    folded = fold(json_round_trip(run.records))
    assert folded.nodes == run.state.nodes and folded.status == run.state.status


def gated_wf() -> WorkflowManifest:
    agents = {"researcher": AgentSpec(provider="mock", model="m-1", prompt="research", tools=["read", "note"])}
    return manifest([agent("research", role="START", agent_name="researcher"), exit_("done")],
                    chain("research", "done"), agents=agents, tools=TOOLS, policy=WorkflowPolicy(tools=POLICY))


def gate_answer(dispatch: Any, rule: str, reason: str, *, approval: bool = False, id: str | None = None
                ) -> RouterInput:
    d = dispatch.data
    error = f"{'held for approval' if approval else 'refused by policy'} (rule {rule}): {reason}"
    data = {"dispatch_id": d["dispatch_id"], "node": d["node"], "attempt": d["attempt"], "error": error,
            "retryable": False, "refusal": {"rule": rule, "reason": reason, **({"approval": True} if approval else {})}}
    return RouterInput(envelope("node.errored", data, id=id or f"gate-{d['dispatch_id']}", time=dispatch.time,
                                task_id=dispatch.task_id))


def decision(choice: str, node: str = "research", *, id: str = "decide-1", reason: str = "",
             args: dict[str, Any] | None = None) -> RouterInput:
    data: dict[str, Any] = {"node": node, "decision": choice, "decided_by": "alice", "reason": reason}
    if args is not None:
        data["args"] = args
    return RouterInput(envelope("node.approval_decided", data, id=id))


def test_the_workflow_policy_rides_in_every_tool_dispatch_and_a_refusal_is_the_calls_result() -> None:
    run = started(gated_wf())
    out = run.feed(asked(run.dispatch(), ("read", {"path": "secret.txt"})))
    call = only(out, "node.dispatched").data
    assert ToolPolicy.model_validate(call["tool"]["policy"]) == POLICY
    assert "approved" not in call["tool"]

    out = run.feed(gate_answer(run.dispatch(), "tool.path", "workflow policy allows only paths matching ['docs/**']"))
    assert types(out) == ["router.input", "node.tool_returned", "node.dispatched"]
    returned = out[1].data
    assert returned["error"].startswith("refused by policy (rule tool.path): workflow policy allows only")
    assert returned["refusal"]["rule"] == "tool.path"
    [turn] = out[2].data["context"]["conversation"]  # the model's next turn sees the refusal as the result
    assert turn["calls"][0]["error"] == returned["error"]

    run.feed(asked(run.dispatch(), ("read", {"path": "docs/a.md"}), turn=1))
    out = run.feed(completed(run.dispatch(), {"content": "a"}))
    out = run.feed(completed(run.dispatch(), {"answer": "done"}))
    assert types(out)[-1] == "task.succeeded"
    check_replay(run)


def test_a_refused_tool_node_fails_like_any_non_retryable_error() -> None:
    wf = manifest([tool("list", role="START", tool_name="read", args={"path": "x"}), exit_("done")],
                  chain("list", "done"), tools=TOOLS)
    run = started(wf)
    out = run.feed(gate_answer(run.dispatch(), "tool.deny", "tenant policy denies tool 'read'"))
    assert only(out, "node.failed").data["reason"] == "refused by policy (rule tool.deny): tenant policy denies tool 'read'"
    assert types(out)[-1] == "task.failed"
    check_replay(run)


def held_run() -> Run:
    run = started(gated_wf())
    run.feed(asked(run.dispatch(), ("note", {"path": "docs/n.md", "text": "x"}), ("read", {"path": "docs/a"})))
    out = run.feed(gate_answer(run.dispatch(), "tool.approval", "workflow policy requires approval", approval=True))
    assert types(out) == ["router.input", "node.approval_requested"]
    assert out[1].data == {"node": "research", "kind": "tool", "args": {"path": "docs/n.md", "text": "x"},
                           "call_id": "t0-c0", "tool": "note", "rule": "tool.approval"}
    assert run.state.status == "waiting" and run.state.nodes["research"].status == "awaiting_approval"
    return run


def test_a_held_call_waits_then_approve_dispatches_it_marked_approved_and_it_runs_once() -> None:
    run = held_run()
    held = [r for r in run.records if r.type == "node.dispatched"][-1]  # the dispatch the gate held
    out = run.feed(decision("approve"))
    assert types(out) == ["router.input", "node.approved", "node.dispatched"]
    assert out[1].data["call_id"] == "t0-c0" and out[1].data["rule"] == "tool.approval"
    again = out[2].data
    assert again["tool"]["approved"] is True and again["call"]["call_id"] == "t0-c0"
    assert again["reason"] == "call t0-c0 approved by alice" and run.state.status == "running"
    assert run.feed(gate_answer(held, "tool.approval", "x", approval=True)) == []  # the hold, redelivered

    out = run.feed(completed(run.dispatch(), {"path": "docs/n.md", "bytes_written": 2, "size": 2}))
    assert only(out, "node.tool_returned").data["output"]["bytes_written"] == 2
    nxt = only(out, "node.dispatched").data
    assert nxt["call"]["index"] == 1 and "approved" not in nxt["tool"]  # only the approved call is marked
    check_replay(run)


def test_an_approved_call_that_is_retried_stays_approved() -> None:
    run = held_run()
    run.feed(decision("approve"))
    first = run.dispatch()
    out = run.feed(RouterInput(envelope("node.deadline_expired", {
        "dispatch_id": first.data["dispatch_id"], "node": "research", "attempt": first.data["attempt"]},
        id="late-1", time=first.time, task_id=first.task_id)))
    retry = [e for e in out if e.type == "node.dispatched"]
    if retry:  # no backoff configured: dispatched at once
        assert retry[0].data["tool"]["approved"] is True and retry[0].data["attempt"] == 3  # 1 held, 2 approved
    check_replay(run)


def test_reject_returns_a_refusal_to_the_model_and_the_node_goes_on() -> None:
    run = held_run()
    out = run.feed(decision("reject", reason="not that file"))
    assert types(out) == ["router.input", "node.tool_returned", "node.dispatched"]
    returned = out[1].data
    assert returned["error"] == "refused by a person (rule tool.approval): rejected by alice: not that file"
    assert returned["refusal"] == {"rule": "tool.approval", "reason": "rejected by alice: not that file"}
    assert out[2].data["call"]["index"] == 1 and run.state.status == "running"
    check_replay(run)


def test_a_held_calls_arguments_cannot_be_edited() -> None:
    run = held_run()
    out = run.feed(decision("approve", args={"path": "docs/other.md", "text": "y"}))
    assert types(out) == ["router.input", "node.approval_refused"]
    assert "cannot be edited" in out[1].data["reason"] and run.state.status == "waiting"
    check_replay(run)


def test_a_tool_node_held_by_the_gate_waits_and_approve_dispatches_it_approved() -> None:
    wf = manifest([tool("write", role="START", tool_name="note", args={"path": "$input.path", "text": "x"}),
                   exit_("done")], chain("write", "done"), tools=TOOLS)
    run = started(wf, {"path": "docs/n.md"})
    out = run.feed(gate_answer(run.dispatch(), "tool.approval", "tenant policy requires approval", approval=True))
    assert out[1].data == {"node": "write", "kind": "tool", "args": {"path": "docs/n.md", "text": "x"},
                           "tool": "note", "rule": "tool.approval"}
    out = run.feed(decision("approve", "write"))
    assert only(out, "node.dispatched").data["tool"]["approved"] is True
    out = run.feed(completed(run.dispatch(), {"path": "docs/n.md", "bytes_written": 2, "size": 2}))
    assert types(out)[-1] == "task.succeeded"
    check_replay(run)


def test_a_hold_answering_a_model_turn_is_only_an_error() -> None:
    """Only a tool step can be held: a hold answering an agent's own dispatch fails it like any fatal error."""
    run = started(gated_wf())
    out = run.feed(gate_answer(run.dispatch(), "tool.approval", "x", approval=True))
    assert "node.approval_requested" not in types(out) and only(out, "node.failed")
    check_replay(run)


# --- a tool node with its own `approval: required` that the gate would hold too: asked once -------------------

def approved_node_wf(*, pinned: bool = True) -> WorkflowManifest:
    from agent_engine.router.approvals import asked_once

    wf = manifest([tool("write", role="START", tool_name="note", args={"path": "$input.path", "text": "x"},
                        approval="required"), exit_("done")], chain("write", "done"), tools=TOOLS)
    return asked_once(wf) if pinned else wf


def test_a_tool_nodes_own_approval_answers_the_gates_hold_so_a_person_is_asked_once() -> None:
    run = started(approved_node_wf(), {"path": "docs/n.md"})
    asks = [r for r in run.records if r.type == "node.approval_requested"]
    assert len(asks) == 1 and "rule" not in asks[0].data  # the node's own approval, before any dispatch
    out = run.feed(decision("approve", "write"))
    assert types(out) == ["router.input", "node.approved", "node.dispatched"]
    assert out[1].data["rule"] == "tool.approval"  # the approval answers the gate's hold as well
    first = out[2].data
    assert first["tool"]["approved"] is True and first["attempt"] == 1

    # a retry of the approved node stays approved: the gate does not hold it either
    out = run.feed(RouterInput(envelope("node.errored", {
        "dispatch_id": first["dispatch_id"], "node": "write", "attempt": 1, "error": "reset", "retryable": True},
        id="err-1", time=run.dispatch().time, task_id=run.dispatch().task_id)))
    retry = [e for e in out if e.type == "node.dispatched"]
    if retry:  # no backoff configured: dispatched at once
        assert retry[0].data["tool"]["approved"] is True
    out = run.feed(completed(run.dispatch(), {"path": "docs/n.md", "bytes_written": 2, "size": 2}))
    assert types(out)[-1] == "task.succeeded"
    assert sum(r.type == "node.approval_requested" for r in run.records) == 1
    check_replay(run)


def test_edited_arguments_ride_the_approved_dispatch_and_the_gate_still_checks_them() -> None:
    """The approval covers the hold only: the dispatch carries the person's arguments and the workflow's policy,
    so every other rule (here the paths) is checked on what runs."""
    wf = approved_node_wf().model_copy(update={"policy": WorkflowPolicy(tools=POLICY)})
    run = started(wf, {"path": "docs/n.md"})
    out = run.feed(decision("approve", "write", args={"path": "secret.txt", "text": "y"}))
    sent = only(out, "node.dispatched").data
    assert sent["tool"]["approved"] is True and sent["tool"]["args"] == {"path": "secret.txt", "text": "y"}
    assert ToolPolicy.model_validate(sent["tool"]["policy"]) == POLICY
    out = run.feed(gate_answer(run.dispatch(), "tool.path", "workflow policy allows only paths matching ['docs/**']"))
    assert only(out, "node.failed").data["reason"].startswith("refused by policy (rule tool.path)")
    check_replay(run)


def test_a_reject_of_the_nodes_own_approval_dispatches_nothing() -> None:
    run = started(approved_node_wf(), {"path": "docs/n.md"})
    out = run.feed(decision("reject", "write", reason="no"))
    assert "node.dispatched" not in types(out) and only(out, "node.failed")
    check_replay(run)


def test_a_task_pinned_before_the_change_is_still_asked_twice_and_replays_as_recorded() -> None:
    """A stored task whose manifest was pinned without `approval_answers_gate` decides as it did: its approved
    dispatch is not marked, the gate holds it, and the person is asked again."""
    wf = approved_node_wf(pinned=False)
    assert "approval_answers_gate" not in wf.model_dump(mode="json", by_alias=True)  # the stored form is unchanged
    run = started(wf, {"path": "docs/n.md"})
    out = run.feed(decision("approve", "write"))
    assert "rule" not in out[1].data and "approved" not in only(out, "node.dispatched").data["tool"]
    out = run.feed(gate_answer(run.dispatch(), "tool.approval", "tenant policy requires approval", approval=True))
    assert types(out) == ["router.input", "node.approval_requested"] and out[1].data["rule"] == "tool.approval"
    out = run.feed(decision("approve", "write", id="decide-2"))
    assert only(out, "node.dispatched").data["tool"]["approved"] is True
    out = run.feed(completed(run.dispatch(), {"path": "docs/n.md", "bytes_written": 2, "size": 2}))
    assert types(out)[-1] == "task.succeeded"
    assert sum(r.type == "node.approval_requested" for r in run.records) == 2
    check_replay(run)


def test_an_agent_nodes_own_approval_does_not_approve_its_models_calls() -> None:
    """An agent's approval is given before its model has asked for anything: each call the gate holds is asked."""
    wf = gated_wf()
    wf = wf.model_copy(update={"nodes": [n.model_copy(update={"approval": "required"}) if n.id == "research" else n
                                         for n in wf.nodes]})
    from agent_engine.router.approvals import asked_once

    run = started(asked_once(wf))
    out = run.feed(decision("approve"))
    assert "rule" not in out[1].data
    run.feed(asked(run.dispatch(), ("note", {"path": "docs/n.md", "text": "x"})))
    call = run.dispatch().data
    assert "approved" not in call["tool"]
    out = run.feed(gate_answer(run.dispatch(), "tool.approval", "workflow policy requires approval", approval=True))
    assert types(out) == ["router.input", "node.approval_requested"]
    check_replay(run)
