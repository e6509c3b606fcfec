"""The router's side of output checks: a workflow with `policy.output` has every dispatch carry it, takes
only guardrails' node.output_checked as a node's answer (a runner's plain node.completed changes nothing),
and holds an output the gate paused on until a person decides."""

from __future__ import annotations

from typing import Any

from router_testkit import agent, chain, envelope, exit_, manifest, started, types

from agent_engine.contracts.policy import OutputPolicy, WorkflowPolicy
from agent_engine.router.core import RouterInput, decide, replay


def gated_workflow() -> Any:
    return manifest([agent("write", role="START"), exit_("done")], chain("write", "done"),
                    policy=WorkflowPolicy(output=OutputPolicy(pii="redact")))


def answer(dispatch: Any, type_: str, output: dict[str, Any], **extra: Any) -> RouterInput:
    d = dispatch.data
    data = {"dispatch_id": d["dispatch_id"], "node": d["node"], "attempt": d["attempt"], "output": output, **extra}
    return RouterInput(envelope(type_, data, id=f"{type_}-{d['dispatch_id']}", task_id=dispatch.task_id))


def test_every_dispatch_carries_the_output_policy() -> None:
    run = started(gated_workflow())
    assert run.dispatch().data["check_output"] == {"pii": "redact", "topics": []}


def test_a_plain_completion_is_not_an_answer_when_outputs_are_checked() -> None:
    run = started(gated_workflow())
    assert decide(run.state, answer(run.dispatch(), "node.completed", {"text": "jane@example.com"})) == []


def test_the_gates_answer_settles_the_node_with_the_checked_output() -> None:
    run = started(gated_workflow())
    run.feed(answer(run.dispatch(), "node.output_checked", {"text": "[redacted:email]"}, outcome="redacted",
                    rules=[{"rule": "pii.email", "count": 1}]))
    assert run.state.status == "succeeded" and run.state.nodes["write"].output == {"text": "[redacted:email]"}


def test_an_output_the_gate_paused_on_waits_for_a_person() -> None:
    run = started(gated_workflow())
    events = run.feed(answer(run.dispatch(), "node.output_checked", {"text": "diagnosis"}, outcome="paused",
                             reason="output held for a person by guardrails' output checks: topic.medical x1"))
    assert types(events) == ["router.input", "node.approval_requested"]
    assert events[1].data["pause"] == "guardrail" and "topic.medical" in events[1].data["reason"]
    decided = {"node": "write", "decision": "approve", "decided_by": "alice"}
    run.feed(RouterInput(envelope("node.approval_decided", decided, id="d-1")))
    assert run.state.status == "succeeded" and run.state.nodes["write"].output == {"text": "diagnosis"}
    assert [r.model_dump(mode="json") for r in replay(run.records)] == [r.model_dump(mode="json") for r in run.records]


def test_without_output_checks_dispatches_carry_nothing_and_completions_count() -> None:
    run = started(manifest([agent("write", role="START"), exit_("done")], chain("write", "done")))
    assert "check_output" not in run.dispatch().data
    run.feed(answer(run.dispatch(), "node.completed", {"text": "x"}))
    assert run.state.status == "succeeded"


def _tool_use_workflow() -> Any:
    from router_testkit import agent as agent_node

    from agent_engine.contracts.manifest import AgentSpec, ToolSpec
    from agent_engine.contracts.policy import TopicRule
    agents = {"researcher": AgentSpec(provider="mock", model="m-1", prompt="research", tools=["read"])}
    policy = WorkflowPolicy(output=OutputPolicy(topics=[TopicRule(id="medical", pattern="diagnos", action="pause")]))
    return manifest([agent_node("research", role="START", agent_name="researcher"), exit_("done")],
                    chain("research", "done"), agents=agents, tools={"read": ToolSpec(builtin="workspace_read")},
                    policy=policy)


def _held_call() -> Any:
    run = started(_tool_use_workflow())
    d = run.dispatch().data
    asked = {"dispatch_id": d["dispatch_id"], "node": "research", "attempt": 1, "turn": 0, "thought": "look",
             "calls": [{"id": "toolu_0", "name": "read", "args": {"path": "docs/patient.md"}}]}
    run.feed(RouterInput(envelope("node.tools_requested", asked, id="ask-1", task_id=run.dispatch().task_id)))
    run.feed(answer(run.dispatch(), "node.output_checked", {"content": "diagnosis: flu"}, outcome="paused",
                    reason="output held for a person by guardrails' output checks: topic.medical x1"))
    assert run.state.status == "waiting" and run.records[-1].data["call_id"] == "t0-c0"
    return run


def test_a_tool_calls_result_held_by_the_gate_reaches_the_model_once_approved() -> None:
    run = _held_call()
    decided = {"node": "research", "decision": "approve", "decided_by": "alice"}
    events = run.feed(RouterInput(envelope("node.approval_decided", decided, id="d-1")))
    assert types(events)[:3] == ["router.input", "node.approved", "node.tool_returned"]
    assert events[2].data["output"] == {"content": "diagnosis: flu"}
    turn = run.dispatch().data
    assert turn["turn"] == 1 and turn["context"]["conversation"][0]["calls"][0]["output"] == {
        "content": "diagnosis: flu"} and run.state.status == "running"


def test_a_tool_calls_result_rejected_by_a_person_never_reaches_the_model() -> None:
    run = _held_call()
    decided = {"node": "research", "decision": "reject", "decided_by": "bob", "reason": "not for the model"}
    events = run.feed(RouterInput(envelope("node.approval_decided", decided, id="d-1")))
    returned = next(e for e in events if e.type == "node.tool_returned").data
    assert returned.get("output") is None and "withheld by a person: rejected by bob" in returned["error"]
    assert "diagnosis" not in str(run.dispatch().data) and run.state.status == "running"
    assert [r.model_dump(mode="json") for r in replay(run.records)] == [r.model_dump(mode="json") for r in run.records]
