"""Fork (R8): a new task from another task's history up to a record; recorded agent outputs are
reused unless live; what cannot be forked is rejected with the reason."""

from __future__ import annotations

from router_testkit import (
    TENANT,
    Run,
    agent,
    chain,
    completed,
    dumps,
    envelope,
    exit_,
    json_round_trip,
    manifest,
    split_started,
    started,
    tool,
    types,
)

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.manifest import (
    AgentSpec,
    Condition,
    ReviseSpec,
    ToolSpec,
)
from agent_engine.router.core import ForkPlan, RouterInput, apply, fold, fork_plan, replay
from agent_engine.router.state import TaskState

FORK = "fork-1"


def finished_run() -> Run:
    """a (agent, START) -> b (tool) -> c (agent) -> done, every step answered."""
    wf = manifest([agent("a", role="START"), tool("b"), agent("c"), exit_("done")], chain("a", "b", "c", "done"))
    run = started(wf)
    for node in ("a", "b", "c"):
        run.feed(completed(run.dispatch(node), {"said": node}))
    assert run.state.status == "succeeded"
    return run


def fork_input(source: list[Envelope] | None, at: int, *, live: bool = False, tenant: str = TENANT) -> RouterInput:
    data = {"source_task_id": "task-1", "at": at, "live": live, "requested_by": "ops"}
    event = envelope("task.fork_requested", data, id=f"fork-req-{at}-{live}", task_id=FORK, tenant=tenant,
                     correlation_id=FORK)
    return RouterInput(event, source=tuple(source) if source is not None else None)


def position(records: list[Envelope], type_: str, node: str) -> int:
    return next(i for i, r in enumerate(records, start=1) if r.type == type_ and r.data.get("node") == node)


def test_fork_copies_the_history_and_reuses_recorded_agent_outputs() -> None:
    source = finished_run().records
    at = position(source, "node.succeeded", "a")
    state, out = apply(TaskState(), fork_input(source, at))
    # the copy ends with the decision record `at` belongs to (b's dispatch); b, a tool, runs again
    assert types(out) == ["router.input", "task.forked", "node.dispatched"]
    assert out[1].data["at"] == at + 1
    assert out[2].data["node"] == "b" and out[2].task_id == FORK
    assert state.task_id == FORK and state.status == "running"
    assert state.lineage is not None and (state.lineage.kind, state.lineage.parent_id) == ("fork", "task-1")
    assert state.nodes["a"].output == {"said": "a"}

    run = Run(state, list(out))
    after = run.feed(completed(run.dispatch("b"), {"said": "b again"}))
    # c is an agent step with a recorded output: reused at once, no dispatch, then the EXIT
    assert types(after) == ["router.input", "node.succeeded", "node.succeeded", "task.succeeded"]
    assert after[2].data["node"] == "c" and after[2].data["provider"] == "recorded:None"
    assert after[2].data["output"] == {"said": "c"}


def test_a_live_fork_dispatches_agent_steps_again() -> None:
    source = finished_run().records
    at = position(source, "node.succeeded", "b")
    _, out = apply(TaskState(), fork_input(source, at, live=True))
    assert types(out) == ["router.input", "task.forked", "node.dispatched"]
    assert out[2].data["node"] == "c" and out[1].data["recorded"] == {}


def test_a_fork_replays_to_the_same_records_and_its_state_is_their_fold() -> None:
    source = finished_run().records
    state, out = apply(TaskState(), fork_input(source, position(source, "node.dispatched", "b")))
    run = Run(state, list(out))
    run.feed(completed(run.dispatch("b")))
    assert fold(json_round_trip(run.records)) == run.state
    assert dumps(replay(json_round_trip(run.records))) == dumps(run.records)


def test_a_redelivered_fork_request_changes_nothing() -> None:
    source = finished_run().records
    inp = fork_input(source, 3)
    state, _ = apply(TaskState(), inp)
    assert apply(state, inp)[1] == []


def reason(inp: RouterInput) -> str:
    _, out = apply(TaskState(), inp)
    assert types(out) == ["router.input", "task.rejected"], types(out)
    return str(out[1].data["reason"])


def test_what_cannot_be_forked_is_rejected_with_the_reason() -> None:
    source = finished_run().records
    assert reason(fork_input(None, 3)).endswith("no such task")
    assert reason(fork_input(source, 3, tenant="other")).endswith("no such task")
    assert f"--at must be between 1 and {len(source)}" in reason(fork_input(source, len(source) + 1))
    assert "the task was succeeded: nothing would run" in reason(fork_input(source, len(source)))


def test_a_fork_of_another_tenants_task_stores_and_copies_none_of_its_records() -> None:
    """Issue 10: a tenant named another tenant's task as a fork's source; the refusal was right, but the
    stored input record carried every record of that task, and `task history` showed them."""
    source = finished_run().records
    _, out = apply(TaskState(), fork_input(source, 3, tenant="intruder"))
    assert types(out) == ["router.input", "task.rejected"]
    assert out[1].data["reason"].endswith("no such task")
    assert out[0].data["source"] == []
    stored = dumps(out)
    assert not any(r.id in str(stored) for r in source)  # not one id of the victim's records
    assert replay(json_round_trip(out)) == out  # and the refusal replays as recorded


def test_a_subtask_or_an_open_split_cannot_be_forked() -> None:
    run, [request, _] = split_started()
    assert "SPLIT whose subtasks were running" in reason(fork_input(run.records, len(run.records)))

    child = Run()
    child.feed(RouterInput(request))
    assert "it is a subtask; fork its root task task-1 instead" in reason(fork_input(child.records, 2))


# --- the plan agentctl shows before a fork (asked of the router: one implementation of the cut) ----------

TOOLS_WITH_EFFECTS = {"echo": ToolSpec(builtin="text_stats"), "append": ToolSpec(builtin="workspace_append"),
                      "poster": ToolSpec(builtin="http_fetch", side_effects=True)}


def test_the_plan_lists_tool_steps_with_side_effects_declared_or_implied_by_their_built_in() -> None:
    wf = manifest([agent("a", role="START"), tool("note", tool_name="append"), tool("post", tool_name="poster"),
                   tool("count", tool_name="echo"), exit_("done")], chain("a", "note", "post", "count", "done"),
                  tools=TOOLS_WITH_EFFECTS)
    run = started(wf)
    run.feed(completed(run.dispatch("a")))
    at = position(run.records, "node.succeeded", "a")
    plan = fork_plan(run.records, TENANT, at, live=False)
    assert plan == ForkPlan("", at + 1, ("note", "post"))
    assert fork_plan(run.records, TENANT, len(run.records) + 1, False).problem == (
        f"it has {len(run.records)} records; --at must be between 1 and {len(run.records)}")
    assert fork_plan(run.records, "other", at, False).problem == "no such task"


def test_the_plan_lists_agents_whose_model_may_call_a_side_effecting_tool_unless_their_output_is_reused() -> None:
    agents = {"scribe": AgentSpec(provider="mock", tools=["append", "echo"])}
    wf = manifest([agent("b", role="START", agent_name="scribe"), agent("a", agent_name="scribe"), exit_("done")],
                  chain("b", "a", "done"), agents=agents, tools=TOOLS_WITH_EFFECTS)
    run = started(wf)
    run.feed(completed(run.dispatch("b")))
    run.feed(completed(run.dispatch("a")))
    at = 1  # before either answered: b's recorded answer is reused, a's too, unless --live
    assert fork_plan(run.records, TENANT, at, live=False).risky == ()
    assert fork_plan(run.records, TENANT, at, live=True).risky == (
        "b (its model may call append)", "a (its model may call append)")


def test_the_plan_counts_a_recorded_output_only_for_the_revision_the_fork_runs() -> None:
    agents = {"scribe": AgentSpec(provider="mock", tools=["append"]), "judge": AgentSpec(provider="mock")}
    wf = manifest([agent("a", role="START", agent_name="scribe"),
                   agent("r", agent_name="judge", revise=ReviseSpec(target="a", max_revisions=1,
                                                                 when=Condition(field="redo", equals=True))),
                   exit_("done")], chain("a", "r", "done"), agents=agents, tools=TOOLS_WITH_EFFECTS)
    run = started(wf)
    run.feed(completed(run.dispatch("a")))
    before = len(run.records)
    run.feed(completed(run.dispatch("r"), {"redo": True}))  # a runs again as revision 1: nothing recorded for it
    assert fork_plan(run.records, TENANT, before, False).risky == ()
    assert fork_plan(run.records, TENANT, len(run.records), False).risky == ("a (its model may call append)",)


def test_a_fork_of_a_fork_is_refused_by_the_router_itself() -> None:
    source = finished_run().records
    at = position(source, "node.succeeded", "a")
    _, out = apply(TaskState(), fork_input(source, at))
    assert fork_plan(list(out), TENANT, 1, False).problem == "it is a fork; fork the original task task-1 instead"
