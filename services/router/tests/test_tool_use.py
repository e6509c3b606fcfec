"""Tool use through events (A3), one story each: the model asks for tools, the router records its turn,
runs the calls one after another through the tool-runner, records each observation and dispatches the
model's next turn with the conversation so far. Every story ends with replay == records and fold == state.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from router_testkit import (
    T0,
    TASK,
    Run,
    agent,
    chain,
    completed,
    dumps,
    envelope,
    errored,
    exit_,
    expired,
    json_round_trip,
    manifest,
    only,
    started,
    types,
)

from agent_engine.contracts.envelope import derive_id
from agent_engine.contracts.manifest import AgentSpec, ContextProfile, NodeSpec, ReviseSpec, ToolSpec, WorkflowManifest
from agent_engine.contracts.validation import validate
from agent_engine.router.core import RouterInput, decide, dispatch_id_for, fold, replay

NOTE_SCHEMA = {"type": "object", "required": ["path", "text"], "additionalProperties": False,
               "properties": {"path": {"type": "string"}, "text": {"type": "string"}}}
TOOLS = {
    "read": ToolSpec(builtin="workspace_read"),
    "note": ToolSpec(builtin="workspace_append", description="Keep a note.", args_schema=NOTE_SCHEMA),
    "stats": ToolSpec(builtin="text_stats"),
}
USAGE = {"input_tokens": 100, "output_tokens": 10, "cache_read_tokens": 0, "cache_write_tokens": 0}


def tool_wf(node_kw: dict[str, Any] | None = None, **agent_kw: Any) -> WorkflowManifest:
    """research (START agent with tools) -> done."""
    agents = {"researcher": AgentSpec(provider="mock", model="m-1", prompt="research", tools=["read", "note"],
                                      **agent_kw)}
    node_kw = node_kw or {}
    wf = manifest([agent("research", role="START", agent_name="researcher", **node_kw), exit_("done")],
                  chain("research", "done"), agents=agents, tools=TOOLS)
    assert validate(wf) == [], [str(e) for e in validate(wf)]
    return wf


def asked(dispatch: Any, *calls: tuple[str, dict[str, Any]], thought: str = "let me look", id: str | None = None,
          turn: int | None = None, **extra: Any) -> RouterInput:
    d = dispatch.data
    data = {"dispatch_id": d["dispatch_id"], "node": d["node"], "attempt": d["attempt"],
            "turn": d.get("turn", 0) if turn is None else turn, "thought": thought,
            "calls": [{"id": f"toolu_{i}", "name": n, "args": a} for i, (n, a) in enumerate(calls)],
            "provider": "mock", "model": "mock-1", "usage": USAGE, **extra}
    return RouterInput(envelope("node.tools_requested", data, id=id or f"ask-{d['dispatch_id']}",
                                time=dispatch.time + timedelta(seconds=1), task_id=dispatch.task_id))


def check_replay(run: Run) -> None:
    assert dumps(replay(json_round_trip(run.records))) == dumps(run.records)
    folded = fold(json_round_trip(run.records))
    assert folded.nodes == run.state.nodes and folded.status == run.state.status


def test_a_tool_turn_runs_each_call_in_order_then_the_model_continues_with_the_conversation() -> None:
    run = started(tool_wf())
    first = run.dispatch("research")
    assert [t["name"] for t in first.data["agent"]["tool_defs"]] == ["read", "note"]
    assert first.data["agent"]["tool_defs"][1]["input_schema"] == NOTE_SCHEMA  # tools.yaml's own schema wins
    assert first.data["agent"]["tool_defs"][1]["description"] == "Keep a note."
    assert "required" in first.data["agent"]["tool_defs"][0]["input_schema"]  # the built-in's schema

    out = run.feed(asked(first, ("read", {"path": "brief.md"}), ("note", {"path": "n.md", "text": "seen"})))
    assert types(out) == ["router.input", "node.tool_turn_recorded", "node.dispatched"]
    turn = out[1].data
    assert turn["thought"] == "let me look" and [c["call_id"] for c in turn["calls"]] == ["t0-c0", "t0-c1"]
    call = out[2].data
    assert call["kind"] == "tool" and call["node"] == "research" and call["attempt"] == 1
    assert call["call"] == {"call_id": "t0-c0", "turn": 0, "index": 0}
    assert call["tool"] == {"name": "read", "builtin": "workspace_read", "args": {"path": "brief.md"}}
    assert call["dispatch_id"] == dispatch_id_for(TASK, "research", 0, 1, "turn-0-call-0")

    out = run.feed(completed(run.dispatch("research"), {"content": "the brief"}))
    assert types(out) == ["router.input", "node.tool_returned", "node.dispatched"]
    assert out[1].data["output"] == {"content": "the brief"} and out[1].data["call_id"] == "t0-c0"
    second = out[2].data
    assert second["tool"]["side_effects"] is True  # a non-idempotent built-in: run at most once per call
    assert second["call"]["index"] == 1

    out = run.feed(completed(run.dispatch("research"), {"path": "n.md", "bytes_written": 5, "size": 5}))
    assert types(out) == ["router.input", "node.tool_returned", "node.dispatched"]
    nxt = out[2].data
    assert nxt["kind"] == "agent" and nxt["turn"] == 1 and nxt["attempt"] == 1
    assert nxt["dispatch_id"] == dispatch_id_for(TASK, "research", 0, 1, "turn-1")
    [conversation] = nxt["context"]["conversation"]
    assert conversation["thought"] == "let me look"
    assert [c.get("output") for c in conversation["calls"]] == [{"content": "the brief"},
                                                                {"path": "n.md", "bytes_written": 5, "size": 5}]

    out = run.feed(completed(run.dispatch("research"), {"text": "answer"}, usage=USAGE))
    assert types(out) == ["router.input", "node.succeeded", "task.succeeded"]
    assert out[1].data["usage"]["input_tokens"] == 200  # the tool turn's usage plus the final reply's
    check_replay(run)


def test_calls_that_may_not_run_are_refused_with_the_reason_and_the_model_sees_it() -> None:
    run = started(tool_wf())
    out = run.feed(asked(run.dispatch(), ("shell", {"cmd": "rm -rf /"}), ("note", {"path": "n.md"}),
                         ("read", {"path": "a.md"})))
    calls = only(out, "node.tool_turn_recorded").data["calls"]
    assert calls[0]["refused"] is True and "may not use tool 'shell'" in calls[0]["error"]
    assert calls[0]["error"].endswith("['read', 'note']")
    assert calls[1]["refused"] is True and "invalid arguments for tool 'note'" in calls[1]["error"]
    assert "'text' is a required property" in calls[1]["error"]
    assert "refused" not in calls[2]
    assert only(out, "node.dispatched").data["call"]["index"] == 2  # refused calls never reach the tool-runner
    out = run.feed(completed(run.dispatch(), {"content": "a"}))
    [turn] = only(out, "node.dispatched").data["context"]["conversation"]
    assert [bool(c.get("error")) for c in turn["calls"]] == [True, True, False]
    check_replay(run)


def test_a_schema_that_is_not_a_json_schema_refuses_the_call_instead_of_failing_the_router() -> None:
    """A manifest put in the registry without `agentctl workflow validate` may carry a broken schema."""
    broken = {**TOOLS, "note": ToolSpec(builtin="workspace_append", args_schema={"type": "objekt"})}
    agents = {"researcher": AgentSpec(provider="mock", tools=["note"])}
    wf = manifest([agent("research", role="START", agent_name="researcher"), exit_("done")],
                  chain("research", "done"), agents=agents, tools=broken)
    run = started(wf)
    out = run.feed(asked(run.dispatch(), ("note", {"path": "n.md", "text": "t"})))
    [call] = only(out, "node.tool_turn_recorded").data["calls"]
    assert call["refused"] is True and "its args_schema is not a valid JSON Schema" in call["error"]
    check_replay(run)


def test_when_every_call_is_refused_the_model_is_asked_again_at_once() -> None:
    run = started(tool_wf())
    out = run.feed(asked(run.dispatch(), ("nope", {})))
    assert types(out) == ["router.input", "node.tool_turn_recorded", "node.dispatched"]
    assert out[2].data["kind"] == "agent" and out[2].data["turn"] == 1


def test_a_redelivered_or_stale_tool_request_changes_nothing() -> None:
    run = started(tool_wf())
    first = run.dispatch()
    request = asked(first, ("read", {"path": "a.md"}))
    run.feed(request)
    assert decide(run.state, request) == []  # the same input again
    again = asked(first, ("read", {"path": "b.md"}), id="ask-again")  # the same turn, another delivery
    assert decide(run.state, again) == []
    run.feed(completed(run.dispatch(), {"content": "a"}))
    assert decide(run.state, asked(first, ("read", {"path": "c.md"}), id="ask-late")) == []
    check_replay(run)


def test_a_tool_call_past_its_deadline_is_retried_and_a_late_result_of_the_first_try_still_counts() -> None:
    run = started(tool_wf())
    run.feed(asked(run.dispatch(), ("read", {"path": "a.md"})))
    first_try = run.dispatch()
    out = run.feed(expired(first_try))
    retry = only(out, "node.dispatched").data
    assert retry["attempt"] == 2 and retry["call"]["index"] == 0 and retry["kind"] == "tool"
    assert retry["dispatch_id"] == dispatch_id_for(TASK, "research", 0, 2, "turn-0-call-0")
    out = run.feed(completed(first_try, {"content": "late but good"}))
    assert types(out) == ["router.input", "node.tool_returned", "node.dispatched"]
    assert out[1].data["attempt"] == 1 and out[2].data["kind"] == "agent"
    check_replay(run)


def test_a_tool_call_that_keeps_failing_becomes_an_error_the_model_sees_not_a_failed_node() -> None:
    run = started(tool_wf())
    run.feed(asked(run.dispatch(), ("read", {"path": "a.md"})))
    for _ in range(3):  # max_attempts defaults to 3
        out = run.feed(errored(run.dispatch(), "connection refused", retryable=True))
    returned = only(out, "node.tool_returned").data
    assert "connection refused" in returned["error"] and "gave up after 3 attempts" in returned["error"]
    nxt = only(out, "node.dispatched").data
    assert nxt["kind"] == "agent" and nxt["context"]["conversation"][0]["calls"][0]["error"] == returned["error"]
    assert run.state.status == "running"
    check_replay(run)


def test_a_tool_error_that_retrying_cannot_fix_goes_back_to_the_model_at_once() -> None:
    run = started(tool_wf())
    run.feed(asked(run.dispatch(), ("read", {"path": "missing.md"})))
    out = run.feed(errored(run.dispatch(), "no file 'missing.md' in the workspace", retryable=False))
    assert types(out) == ["router.input", "node.tool_returned", "node.dispatched"]
    assert out[1].data["error"] == "no file 'missing.md' in the workspace"
    check_replay(run)


def test_a_failed_model_turn_is_retried_with_the_conversation_it_had() -> None:
    run = started(tool_wf())
    run.feed(asked(run.dispatch(), ("read", {"path": "a.md"})))
    run.feed(completed(run.dispatch(), {"content": "a"}))
    turn1 = run.dispatch()
    out = run.feed(errored(turn1, "output does not match the node's schema (after 2 repairs)"))
    retry = only(out, "node.dispatched").data
    assert retry["attempt"] == 2 and retry["turn"] == 1 and retry["kind"] == "agent"
    assert retry["context"]["conversation"] == turn1.data["context"]["conversation"]
    assert retry["dispatch_id"] not in (turn1.data["dispatch_id"], run.records[2].data["dispatch_id"])
    run.feed(completed(run.dispatch(), {"text": "done"}))
    assert run.state.status == "succeeded"
    check_replay(run)


def test_asking_for_tools_past_max_tool_turns_fails_the_node_with_the_reason() -> None:
    run = started(tool_wf(max_tool_turns=1))
    run.feed(asked(run.dispatch(), ("read", {"path": "a.md"})))
    run.feed(completed(run.dispatch(), {"content": "a"}))
    out = run.feed(asked(run.dispatch(), ("read", {"path": "b.md"})))
    failed = only(out, "node.failed").data
    assert "turn 2" in failed["reason"] and "max_tool_turns = 1" in failed["reason"]
    assert run.state.status == "failed"
    check_replay(run)


def test_an_agent_without_tools_whose_model_asks_for_some_fails_naming_them() -> None:
    wf = manifest([agent("research", role="START"), exit_("done")], chain("research", "done"))
    run = started(wf)
    out = run.feed(asked(run.dispatch(), ("read", {"path": "a.md"})))
    assert "has no tools" in only(out, "node.failed").data["reason"] and "['read']" in out[1].data["reason"]


def test_cancel_while_a_tool_call_runs_records_its_late_result_as_ignored() -> None:
    run = started(tool_wf())
    run.feed(asked(run.dispatch(), ("read", {"path": "a.md"})))
    call = run.dispatch()
    out = run.feed(RouterInput(envelope("task.cancel_requested", {"reason": "stop"}, id="cancel-1",
                                        time=call.time + timedelta(seconds=1))))
    assert only(out, "task.cancelled").data["open_nodes"] == ["research"]
    out = run.feed(completed(call, {"content": "a"}, time=call.time + timedelta(seconds=2)))
    assert types(out) == ["router.input", "node.result_ignored"]
    check_replay(run)


def test_a_scheduled_retry_of_a_tool_call_is_told_from_an_earlier_one_by_its_time() -> None:
    wf = tool_wf(node_kw={"backoff_s": 2.0})
    run = started(wf)
    run.feed(asked(run.dispatch(), ("read", {"path": "a.md"})))
    out = run.feed(errored(run.dispatch(), "timeout", retryable=True))
    scheduled = only(out, "node.retry_scheduled").data
    at = datetime.fromisoformat(scheduled["at"])
    stale = RouterInput(envelope("node.retry_due", {"node": "research", "attempt": 2,
                                                    "at": (at - timedelta(seconds=30)).isoformat()},
                                 id="due-stale", time=at))
    assert decide(run.state, stale) == []
    due = RouterInput(envelope("node.retry_due", {"node": "research", "attempt": 2, "at": at.isoformat()},
                               id=derive_id("due", at.isoformat()), time=at))
    out = run.feed(due)
    redo = only(out, "node.dispatched").data
    assert redo["kind"] == "tool" and redo["attempt"] == 2 and redo["call"]["index"] == 0
    check_replay(run)


def test_long_conversations_ask_the_runner_to_summarise_older_turns_and_then_carry_the_summary() -> None:
    run = started(tool_wf(summarise_over=100, keep_turns=1, max_tool_turns=10))
    big = "x" * 300  # about 75 tokens a result: the second turn takes the conversation over 100
    for _ in range(2):
        run.feed(asked(run.dispatch(), ("read", {"path": "a.md"})))
        run.feed(completed(run.dispatch(), {"content": big}))
    turn2 = run.dispatch().data
    assert turn2["turn"] == 2 and turn2["context"]["summarise"] == 1
    assert len(turn2["context"]["conversation"]) == 2  # the turns to summarise travel with the request
    summary = {"turns": 1, "text": "read a.md: a long run of x"}
    run.feed(asked(run.dispatch(), ("read", {"path": "b.md"}), summary=summary))
    assert run.state.nodes["research"].summary == summary
    run.feed(completed(run.dispatch(), {"content": "short"}))
    turn3 = run.dispatch().data
    assert turn3["context"]["summary"] == summary
    assert [t["turn"] for t in turn3["context"]["conversation"]] == [1, 2]  # after the summary
    check_replay(run)


def test_over_the_token_budget_with_nothing_left_to_summarise_the_node_fails_naming_both_numbers() -> None:
    run = started(tool_wf(node_kw={"sees": ContextProfile(max_tokens=200)}))
    assert run.dispatch().data["context"]["token_budget"] == 200  # the runner counts exactly where it can
    run.feed(asked(run.dispatch(), ("read", {"path": "a.md"})))
    out = run.feed(completed(run.dispatch(), {"content": "y" * 2000}))
    reason = only(out, "node.failed").data["reason"]
    assert "over the budget sees.max_tokens = 200" in reason and "no older turn is left to summarise" in reason
    check_replay(run)


def test_a_revision_starts_the_node_over_without_its_earlier_tool_turns() -> None:
    agents = {"researcher": AgentSpec(provider="mock", prompt="r", tools=["read"]),
              "judge": AgentSpec(provider="mock", prompt="j", output_schema="verdict")}
    wf = manifest([agent("research", role="START", agent_name="researcher"),
                   NodeSpec(id="review", role="LINEAR", kind="agent", agent="judge",
                            revise=ReviseSpec(target="research", when={"field": "verdict", "equals": "redo"},
                                              max_revisions=1)),
                   exit_("done")], chain("research", "review", "done"), agents=agents, tools=TOOLS)
    assert validate(wf) == []
    run = started(wf)
    run.feed(asked(run.dispatch(), ("read", {"path": "a.md"})))
    call = run.dispatch()
    run.feed(completed(call, {"content": "a"}))
    run.feed(completed(run.dispatch(), {"text": "v1"}))
    run.feed(completed(run.dispatch("review"), {"verdict": "redo"}))
    again = run.dispatch("research").data
    assert again["context"]["revision"] == 1 and "conversation" not in again["context"]
    run.feed(asked(run.dispatch(), ("read", {"path": "b.md"})))
    assert run.dispatch().data["call"]["call_id"] == "r1-t0-c0"  # a new call: a side-effecting tool runs again
    assert run.dispatch().data["dispatch_id"] != call.data["dispatch_id"]
    check_replay(run)


def test_a_fork_cut_during_a_tool_call_runs_that_call_again() -> None:
    from agent_engine.contracts.events import TaskForkRequested

    run = started(tool_wf())
    run.feed(asked(run.dispatch(), ("read", {"path": "a.md"})))
    cut = len(run.records)
    source = json_round_trip(run.records)
    fork = Run()
    data = TaskForkRequested(source_task_id=TASK, at=cut, live=True).model_dump()
    out = fork.feed(RouterInput(envelope("task.fork_requested", data, id="fork-1", task_id="fork-task",
                                         time=T0 + timedelta(minutes=5)), source=tuple(source)))
    redo = only(out, "node.dispatched").data
    assert redo["kind"] == "tool" and redo["call"]["call_id"] == "t0-c0" and redo["tool"]["args"] == {"path": "a.md"}
    fork.feed(completed(fork.dispatch(), {"content": "a"}))
    assert fork.dispatch().data["kind"] == "agent" and fork.dispatch().data["turn"] == 1
    check_replay(fork)


def test_a_fork_that_reuses_recorded_outputs_never_runs_the_open_call_again() -> None:
    from agent_engine.contracts.events import TaskForkRequested

    run = started(tool_wf())
    run.feed(asked(run.dispatch(), ("note", {"path": "n.md", "text": "once"})))
    cut = len(run.records)  # the side-effecting call is open here
    run.feed(completed(run.dispatch(), {"path": "n.md", "bytes_written": 5, "size": 5}))
    run.feed(completed(run.dispatch(), {"text": "answer"}))
    assert run.state.status == "succeeded"
    fork = Run()
    data = TaskForkRequested(source_task_id=TASK, at=cut).model_dump()
    out = fork.feed(RouterInput(envelope("task.fork_requested", data, id="fork-2", task_id="fork-task",
                                         time=T0 + timedelta(minutes=5)), source=tuple(json_round_trip(run.records))))
    assert "node.dispatched" not in types(out)  # the recorded answer stands for the rest of the node
    assert only(out, "node.succeeded").data["output"] == {"text": "answer"}
    assert fork.state.status == "succeeded"
    check_replay(fork)


def test_task_show_lists_the_tool_calls_of_an_agent_node() -> None:
    from agent_engine.router.views import show

    run = started(tool_wf())
    run.feed(asked(run.dispatch(), ("read", {"path": "a.md"}), ("nope", {})))
    run.feed(completed(run.dispatch(), {"content": "a"}))
    [node] = [n for n in show(json_round_trip(run.records))["nodes"] if n["node"] == "research"]
    assert node["turns"] == 1
    assert [(c["tool"], c["status"]) for c in node["tool_calls"]] == [("read", "ok"), ("nope", "refused")]
