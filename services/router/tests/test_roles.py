"""The node roles, one story each: BRANCH / MERGE, DECISION inside a BRANCH, SPLIT and its subtasks,
cancel across tasks, `revise` loops and `continue_on_failure`.

Every run is plain data with fixed times; a parent and its subtasks exchange their messages through
`Tasks`, delivered when the test says so. Each story ends by checking that replay reproduces what was
stored and that the state is the fold of it.
"""

from __future__ import annotations

from typing import Any

import pytest
from router_testkit import (
    TASK,
    TASK_INPUT,
    Run,
    accepted,
    agent,
    chain,
    completed,
    dumps,
    edge,
    envelope,
    errored,
    exit_,
    json_round_trip,
    manifest,
    only,
    started,
    types,
)

from agent_engine.contracts.envelope import Envelope, derive_id
from agent_engine.contracts.events import Lineage, NodeContext
from agent_engine.contracts.manifest import Condition, MergeSpec, NodeSpec, ReviseSpec, SplitSpec, WorkflowManifest
from agent_engine.contracts.validation import validate
from agent_engine.router.core import RouterInput, decide, fold, replay
from agent_engine.router.state import TaskState

# --- workflows --------------------------------------------------------------------------------


def valid(wf: WorkflowManifest) -> WorkflowManifest:
    """Every workflow here is one `agentctl workflow push` would accept."""
    assert validate(wf) == [], [str(e) for e in validate(wf)]
    return wf


def merge_node(node_id: str, *, kind: str | None = None, **merge_kw: Any) -> NodeSpec:
    spec = MergeSpec(**merge_kw)
    if kind == "agent":
        return agent(node_id, role="MERGE", merge=spec, max_attempts=1)
    return NodeSpec(id=node_id, role="MERGE", merge=spec)


def branch_wf(*, failing_ok: tuple[str, ...] = (), merge_kind: str | None = None, **merge_kw: Any) -> WorkflowManifest:
    """plan (START) -> fan (BRANCH) -> a, b, c (agents, in parallel) -> join (MERGE) -> done."""
    nodes = [agent("plan", role="START"), agent("fan", role="BRANCH"),
             *(agent(n, continue_on_failure=n in failing_ok, max_attempts=1) for n in "abc"),
             merge_node("join", kind=merge_kind, **merge_kw), exit_("done")]
    edges = [edge("plan", "fan"), edge("fan", "a"), edge("fan", "b"), edge("fan", "c"),
             edge("a", "join"), edge("b", "join"), edge("c", "join"), edge("join", "done")]
    return valid(manifest(nodes, edges))


def triage_wf() -> WorkflowManifest:
    """plan (START) -> fan (BRANCH) -> triage (DECISION: deep when depth == deep, else quick) and other;
    deep, quick and other -> join (MERGE, all) -> done."""
    nodes = [agent("plan", role="START"), agent("fan", role="BRANCH"), agent("triage", role="DECISION"),
             agent("deep"), agent("quick"), agent("other"), merge_node("join", policy="all", combine="keyed"),
             exit_("done")]
    edges = [edge("plan", "fan"), edge("fan", "triage"), edge("fan", "other"),
             edge("triage", "deep", field_="depth", equals="deep"), edge("triage", "quick", default=True),
             edge("deep", "join"), edge("quick", "join"), edge("other", "join"), edge("join", "done")]
    return valid(manifest(nodes, edges))


def split_wf(*, max_items: int = 100, split_ok: bool = False, work_ok: bool = False, then: str | None = None,
             **merge_kw: Any) -> WorkflowManifest:
    """plan (START) -> fan (SPLIT over its output's `items`) -> work -> polish -> gather (MERGE) -> done.
    Each subtask runs work -> polish; `then` puts an agent between gather and done."""
    nodes = [agent("plan", role="START"),
             agent("fan", role="SPLIT", split=SplitSpec(items="items", max_items=max_items, merge="gather"),
                   continue_on_failure=split_ok),
             agent("work", continue_on_failure=work_ok, max_attempts=1), agent("polish"),
             merge_node("gather", **merge_kw), exit_("done")]
    tail = ["gather", "done"] if then is None else ["gather", then, "done"]
    if then is not None:
        nodes.append(agent(then))
    return valid(manifest(nodes, [*chain("plan", "fan", "work", "polish"), edge("polish", "gather"), *chain(*tail)]))


def nested_split_wf() -> WorkflowManifest:
    """plan -> chapters (SPLIT over `items`) -> sections (SPLIT over `items`) -> leaf -> inner (MERGE)
    -> outer (MERGE) -> done: each chapter fans out again over its sections."""
    nodes = [agent("plan", role="START"),
             agent("chapters", role="SPLIT", split=SplitSpec(items="items", merge="outer")),
             agent("sections", role="SPLIT", split=SplitSpec(items="items", merge="inner")),
             agent("leaf"), merge_node("inner"), merge_node("outer"), exit_("done")]
    return valid(manifest(nodes, chain("plan", "chapters", "sections", "leaf", "inner", "outer", "done")))


def revise_wf(max_revisions: int = 2, mock: dict[str, list[dict[str, Any]]] | None = None) -> WorkflowManifest:
    """draft (START) -> review (DECISION, judge): approve -> approved (EXIT), anything else -> rejected
    (failed EXIT). A verdict of `revise` sends draft and review back, at most `max_revisions` times."""
    rule = ReviseSpec(target="draft", when=Condition(field="verdict", equals="revise"), max_revisions=max_revisions)
    nodes = [agent("draft", role="START"), agent("review", role="DECISION", agent_name="judge", revise=rule),
             exit_("approved"), exit_("rejected", "failed")]
    edges = [edge("draft", "review"), edge("review", "approved", field_="verdict", equals="approve"),
             edge("review", "rejected", default=True)]
    return valid(manifest(nodes, edges, mock=mock or {}))


# --- driving ----------------------------------------------------------------------------------


def dispatched(events: list[Envelope]) -> list[str]:
    return [e.data["node"] for e in events if e.type == "node.dispatched"]


def assert_replays(run: Run) -> None:
    """What the store gives back replays to the same records, and folds to the state the router kept."""
    stored = json_round_trip(run.records)
    assert dumps(replay(stored)) == dumps(run.records)
    assert fold(stored) == run.state


def subtask_id(index: int, *, parent: str = TASK, node: str = "fan") -> str:
    return derive_id(parent, node, 0, "subtask", index)


class Tasks:
    """A parent task and the subtasks it makes, as the store and bus would keep them: a Run per task,
    and the messages one task addresses to another, delivered only when the test says so."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}
        self.mail: list[Envelope] = []

    def __getitem__(self, task_id: str) -> Run:
        return self.runs[task_id]

    def feed(self, inp: RouterInput) -> list[Envelope]:
        task = inp.event.task_id
        out = self.runs.setdefault(task, Run()).feed(inp)
        self.mail += [r for r in out if r.task_id != task]
        return out

    def deliver(self, type_: str, to: str | None = None) -> list[Envelope]:
        """Deliver every waiting message of `type_` (to task `to`), in the order sent; what they caused."""
        due = [m for m in self.mail if m.type == type_ and (to is None or m.task_id == to)]
        self.mail = [m for m in self.mail if m not in due]
        caused: list[Envelope] = []
        for message in due:
            caused += self.feed(RouterInput(message))
        return caused

    def finish_subtask(self, task_id: str, work: dict[str, Any], polish: dict[str, Any]) -> list[Envelope]:
        """Run one subtask of `split_wf` to its end: work, then polish, both succeed."""
        run = self[task_id]
        self.feed(completed(run.dispatch("work"), work))
        return self.feed(completed(run.dispatch("polish"), polish))


def fanned(wf: WorkflowManifest, items: list[Any]) -> Tasks:
    """A task of `split_wf` whose fan node listed `items`; the subtask requests are delivered."""
    tasks = Tasks()
    tasks.feed(accepted(wf))
    tasks.feed(completed(tasks[TASK].dispatch("plan"), {"text": "plan"}))
    tasks.feed(completed(tasks[TASK].dispatch("fan"), {"items": items}))
    tasks.deliver("subtask.requested")
    return tasks


def at_branches(wf: WorkflowManifest) -> tuple[Run, list[Envelope]]:
    """A task of a BRANCH workflow whose plan and fan succeeded; returns it and what fan's result caused."""
    run = started(wf)
    run.feed(completed(run.dispatch("plan"), {"text": "plan"}))
    return run, run.feed(completed(run.dispatch("fan"), {"text": "fan"}))


def cancel(task_id: str, *, id: str, parent_id: str | None = None, reason: str = "operator") -> RouterInput:
    data: dict[str, Any] = {"reason": reason, "requested_by": "ops"}
    if parent_id is not None:
        data["parent_id"] = parent_id
    return RouterInput(envelope("task.cancel_requested", data, id=id, task_id=task_id))


# --- BRANCH and MERGE policy all --------------------------------------------------------------


def test_branch_dispatches_every_successor_in_one_decision_each_once() -> None:
    run, events = at_branches(branch_wf())

    assert types(events) == ["router.input", "node.succeeded",
                             "node.dispatched", "node.dispatched", "node.dispatched"]
    assert dispatched(events) == ["a", "b", "c"]
    assert [n for n, _ in run.state.open_dispatches()] == ["a", "b", "c"]
    for event in events[2:]:
        assert event.data["reason"] == "next"
        assert event.data["context"]["upstream"] == {"plan": {"text": "plan"}, "fan": {"text": "fan"}}


def test_merge_all_waits_for_every_branch_and_fires_once_combining_a_list_in_declaration_order() -> None:
    run, _ = at_branches(branch_wf(policy="all", combine="list"))
    a, b, c = run.dispatch("a"), run.dispatch("b"), run.dispatch("c")

    assert types(run.feed(completed(c, {"v": 1}))) == ["router.input", "node.succeeded"]
    assert types(run.feed(completed(a, {"v": 3}))) == ["router.input", "node.succeeded"]
    assert run.state.nodes["join"].status == "pending"
    last = run.feed(completed(b, {"v": 2}))

    assert types(last) == ["router.input", "node.succeeded", "node.merged", "task.succeeded"]
    merged = only(last, "node.merged").data
    assert merged == {"node": "join", "policy": "all", "arrived": ["a", "b", "c"], "failed": [], "skipped": [],
                      "output": {"items": [{"v": 3}, {"v": 2}, {"v": 1}]}}
    assert run.state.nodes["join"].status == "succeeded"
    assert run.state.nodes["join"].output == {"items": [{"v": 3}, {"v": 2}, {"v": 1}]}
    assert run.state.exit_node == "done"
    assert_replays(run)


def test_merge_combined_keyed_names_each_branch() -> None:
    run, _ = at_branches(branch_wf(combine="keyed"))
    for node in "bca":
        events = run.feed(completed(run.dispatch(node), {"v": node}))

    assert only(events, "node.merged").data["output"] == {"a": {"v": "a"}, "b": {"v": "b"}, "c": {"v": "c"}}
    assert run.state.status == "succeeded"


def test_redelivered_branch_results_do_not_fire_the_merge_again() -> None:
    run, _ = at_branches(branch_wf())
    results = [completed(run.dispatch(node), {"v": node}) for node in "abc"]
    for inp in results:
        run.feed(inp)
    assert [r.type for r in run.records].count("node.merged") == 1

    for inp in results:
        assert decide(run.state, inp) == []
    # the same result under a new input id is stale too: each node succeeds once
    a = next(r for r in run.records if r.type == "node.dispatched" and r.data["node"] == "a")
    assert decide(run.state, completed(a, {"v": "again"}, id="a-again")) == []


def test_agent_merge_is_dispatched_with_the_merged_inputs_and_its_output_is_the_node_output() -> None:
    run, _ = at_branches(branch_wf(merge_kind="agent", combine="keyed"))
    for node in "ab":
        run.feed(completed(run.dispatch(node), {"v": node}))
    events = run.feed(completed(run.dispatch("c"), {"v": "c"}))

    assert types(events) == ["router.input", "node.succeeded", "node.merged", "node.dispatched"]
    combined = {"a": {"v": "a"}, "b": {"v": "b"}, "c": {"v": "c"}}
    assert only(events, "node.merged").data["output"] == combined
    join = only(events, "node.dispatched").data
    assert (join["node"], join["kind"], join["reason"], join["attempt"]) == ("join", "agent", "merged", 1)
    assert join["context"]["merged"] == combined
    assert join["context"]["upstream"]["c"] == {"v": "c"}
    assert run.state.nodes["join"].status == "dispatched"

    final = run.feed(completed(run.dispatch("join"), {"summary": "a+b+c"}))
    assert types(final) == ["router.input", "node.succeeded", "task.succeeded"]
    assert run.state.nodes["join"].output == {"summary": "a+b+c"}
    assert run.state.nodes["join"].merged == combined
    assert_replays(run)


# --- policy any -------------------------------------------------------------------------------


def test_merge_any_fires_on_the_first_arrival_and_later_arrivals_only_succeed() -> None:
    run, _ = at_branches(branch_wf(policy="any", merge_kind="agent"))
    first = run.feed(completed(run.dispatch("b"), {"v": "b"}))

    assert types(first) == ["router.input", "node.succeeded", "node.merged", "node.dispatched"]
    assert only(first, "node.merged").data == {"node": "join", "policy": "any", "arrived": ["b"], "failed": [],
                                              "skipped": [], "output": {"items": [{"v": "b"}]}}
    later = run.feed(completed(run.dispatch("a"), {"v": "a"}))
    assert types(later) == ["router.input", "node.succeeded"]
    assert run.state.nodes["a"].status == "succeeded"
    assert [r.type for r in run.records].count("node.merged") == 1
    assert [r.type for r in run.records].count("node.dispatched") == 6  # plan, fan, a, b, c, join: once each
    assert_replays(run)


def test_exit_reached_under_any_abandons_running_branches_and_their_late_results_are_ignored_once() -> None:
    run, _ = at_branches(branch_wf(policy="any"))
    late_a, late_c = run.dispatch("a"), run.dispatch("c")
    events = run.feed(completed(run.dispatch("b"), {"v": "b"}))

    assert types(events) == ["router.input", "node.succeeded", "node.merged", "task.succeeded"]
    assert run.state.exit_node == "done"
    assert run.state.nodes["a"].status == "abandoned"
    assert run.state.nodes["c"].status == "abandoned"

    ignored = run.feed(completed(late_a, {"v": "a"}))
    assert types(ignored) == ["router.input", "node.result_ignored"]
    assert ignored[1].data == {"dispatch_id": late_a.data["dispatch_id"], "node": "a", "attempt": 1,
                               "reason": "the task had ended (succeeded) before this node.completed arrived"}
    # once: neither a redelivery nor another answer to the same dispatch is recorded again
    assert decide(run.state, completed(late_a, {"v": "a"})) == []
    assert decide(run.state, errored(late_a, id="a-error-after")) == []
    assert types(run.feed(errored(late_c, "boom", retryable=False))) == ["router.input", "node.result_ignored"]
    assert run.state.status == "succeeded"
    assert run.state.nodes["a"].output is None
    assert_replays(run)


# --- policy quorum ----------------------------------------------------------------------------


def test_merge_quorum_fires_when_n_inputs_arrived() -> None:
    run, _ = at_branches(branch_wf(policy="quorum", quorum=2, merge_kind="agent"))
    assert types(run.feed(completed(run.dispatch("c"), {"v": "c"}))) == ["router.input", "node.succeeded"]
    events = run.feed(completed(run.dispatch("a"), {"v": "a"}))

    assert types(events) == ["router.input", "node.succeeded", "node.merged", "node.dispatched"]
    assert only(events, "node.merged").data["arrived"] == ["a", "c"]
    assert only(events, "node.merged").data["output"] == {"items": [{"v": "a"}, {"v": "c"}]}
    assert run.state.nodes["b"].status == "dispatched"  # still running: it may yet answer
    assert_replays(run)


def test_quorum_made_impossible_by_continued_failures_fails_the_merge_naming_them() -> None:
    run, _ = at_branches(branch_wf(policy="quorum", quorum=2, failing_ok=("a", "b", "c")))
    first = run.feed(errored(run.dispatch("a"), "a broke", retryable=False))
    assert types(first) == ["router.input", "node.failed"]
    assert first[1].data["continued"] is True
    events = run.feed(errored(run.dispatch("b"), "b broke", retryable=False))

    assert types(events) == ["router.input", "node.failed", "node.failed", "task.failed"]
    join = events[2].data
    assert join["node"] == "join"
    assert "MERGE needs 2 input(s) under policy 'quorum'" in join["reason"]
    assert "failed ['a', 'b']" in join["reason"]
    assert only(events, "task.failed").data["reason"] == f"node 'join' failed: {join['reason']}"
    assert run.state.nodes["c"].status == "abandoned"
    assert_replays(run)


def test_quorum_failure_reason_counts_the_inputs_that_can_still_arrive() -> None:
    run, _ = at_branches(branch_wf(policy="quorum", quorum=2, failing_ok=("a", "b", "c")))
    run.feed(errored(run.dispatch("a"), "a broke", retryable=False))
    events = run.feed(errored(run.dispatch("b"), "b broke", retryable=False))

    assert events[2].data["reason"] == ("MERGE needs 2 input(s) under policy 'quorum' but only 1 can arrive: "
                                        "failed ['a', 'b'], not taken []")


def test_without_continue_on_failure_a_branch_failure_fails_the_task() -> None:
    run, _ = at_branches(branch_wf(policy="quorum", quorum=1))
    events = run.feed(errored(run.dispatch("b"), "b broke", retryable=False))

    assert types(events) == ["router.input", "node.failed", "task.failed"]
    assert "continued" not in events[1].data
    assert run.state.reason == "node 'b' failed: b broke"
    assert run.state.nodes["join"].status == "pending"
    assert {run.state.nodes[n].status for n in "ac"} == {"abandoned"}
    assert_replays(run)


def test_merge_all_counts_a_continued_failure_as_failed_and_fires_with_the_rest() -> None:
    run, _ = at_branches(branch_wf(policy="all", failing_ok=("b",)))
    run.feed(completed(run.dispatch("a"), {"v": "a"}))
    run.feed(errored(run.dispatch("b"), "b broke", retryable=False))
    events = run.feed(completed(run.dispatch("c"), {"v": "c"}))

    merged = only(events, "node.merged").data
    assert (merged["arrived"], merged["failed"], merged["skipped"]) == (["a", "c"], ["b"], [])
    assert merged["output"] == {"items": [{"v": "a"}, {"v": "c"}]}
    assert run.state.status == "succeeded"


# --- DECISION inside a BRANCH -----------------------------------------------------------------


def test_decision_in_a_branch_skips_the_path_not_taken_and_the_merge_lists_it_as_skipped() -> None:
    run = started(triage_wf())
    run.feed(completed(run.dispatch("plan"), {"text": "plan"}))
    run.feed(completed(run.dispatch("fan"), {"text": "fan"}))
    events = run.feed(completed(run.dispatch("triage"), {"depth": "shallow"}))

    assert types(events) == ["router.input", "node.succeeded", "node.dispatched", "node.skipped"]
    assert events[1].data["chosen"] == "quick"
    assert dispatched(events) == ["quick"]
    assert only(events, "node.skipped").data == {"node": "deep", "reason": "no path into it was taken"}
    assert run.state.nodes["join"].status == "pending"

    run.feed(completed(run.dispatch("quick"), {"v": "quick"}))
    final = run.feed(completed(run.dispatch("other"), {"v": "other"}))
    merged = only(final, "node.merged").data
    assert (merged["arrived"], merged["failed"], merged["skipped"]) == (["quick", "other"], [], ["deep"])
    assert merged["output"] == {"quick": {"v": "quick"}, "other": {"v": "other"}}
    assert run.state.status == "succeeded"
    assert run.state.nodes["deep"].status == "skipped"
    assert_replays(run)


# --- SPLIT ------------------------------------------------------------------------------------


def test_split_requests_one_subtask_per_item_with_derived_ids_lineage_and_item_input() -> None:
    run = started(split_wf())
    run.feed(completed(run.dispatch("plan"), {"text": "plan"}))
    events = run.feed(completed(run.dispatch("fan"), {"items": ["x", {"k": 2}, 3]}))

    assert types(events) == ["router.input", "node.succeeded", "node.fanned_out",
                             "subtask.requested", "subtask.requested", "subtask.requested"]
    ids = [subtask_id(i) for i in range(3)]
    assert only(events, "node.fanned_out").data == {"node": "fan", "merge": "gather", "subtasks": ids}
    for index, (request, item) in enumerate(zip(events[3:], ["x", {"k": 2}, 3], strict=True)):
        assert request.task_id == ids[index]  # addressed to the subtask, stored with the parent
        data = request.data
        assert Lineage.model_validate(data["lineage"]) == Lineage(
            kind="subtask", parent_id=TASK, root_id=TASK, parent_node="fan", index=index,
            cause=f"item {index} of 3 of SPLIT node 'fan'")
        assert (data["merge"], data["item"], data["count"]) == ("gather", item, 3)
        assert data["input"] == {**TASK_INPUT, "item": item, "item_index": index, "item_count": 3}
        assert data["upstream"] == {"plan": {"text": "plan"}}
    assert run.state.open_subtasks() == ids
    assert run.state.status == "running"
    assert_replays(run)


def test_a_subtask_starts_after_the_split_runs_its_body_and_reports_its_last_output_to_the_parent() -> None:
    tasks = fanned(split_wf(), ["x", "y"])
    sub = tasks[subtask_id(1)]

    start = only(sub.records, "task.started").data
    assert (start["entry"], start["stop_at"]) == ("work", "gather")
    assert start["lineage"]["index"] == 1
    first = only(sub.records, "node.dispatched").data
    assert first["node"] == "work"
    assert first["reason"] == "subtask 1 of SPLIT node 'fan'"
    assert first["context"]["input"] == {**TASK_INPUT, "item": "y", "item_index": 1, "item_count": 2}
    assert first["context"]["upstream"] == {"plan": {"text": "plan"}}

    tasks.feed(completed(sub.dispatch("work"), {"w": "y"}))
    assert sub.dispatch("polish").data["context"]["upstream"] == {"plan": {"text": "plan"}, "work": {"w": "y"}}
    end = tasks.feed(completed(sub.dispatch("polish"), {"p": "y"}))

    assert types(end) == ["router.input", "node.succeeded", "task.succeeded", "subtask.finished"]
    assert sub.state.status == "succeeded"
    assert sub.state.reason == "subtask reached MERGE node 'gather'"
    report = only(end, "subtask.finished")
    assert report.task_id == TASK
    assert report.data == {"subtask_id": subtask_id(1), "parent_node": "fan", "index": 1, "status": "succeeded",
                           "output": {"p": "y"}, "reason": "subtask reached MERGE node 'gather'"}
    assert_replays(sub)


def test_parent_settles_each_subtask_and_merges_in_item_order_whatever_order_they_end_in() -> None:
    tasks = fanned(split_wf(), ["x", "y", "z"])
    for index in (2, 0, 1):
        tasks.finish_subtask(subtask_id(index), {"w": index}, {"p": 9 - index})
    assert tasks.deliver("subtask.finished", to=TASK)
    parent = tasks[TASK]

    settled = [r.data for r in parent.records if r.type == "subtask.settled"]
    assert [(s["index"], s["status"], s["output"]) for s in settled] == [(2, "succeeded", {"p": 7}),
                                                                          (0, "succeeded", {"p": 9}),
                                                                          (1, "succeeded", {"p": 8})]
    merged = only(parent.records, "node.merged").data
    assert merged["arrived"] == ["0", "1", "2"]
    assert merged["output"] == {"items": [{"p": 9}, {"p": 8}, {"p": 7}]}
    assert parent.state.status == "succeeded"
    assert parent.state.exit_node == "done"
    for run in tasks.runs.values():
        assert_replays(run)


def test_a_subtask_that_ends_after_an_any_merge_fired_is_settled_but_does_not_fire_it_again() -> None:
    tasks = fanned(split_wf(policy="any", then="summary"), ["x", "y"])
    tasks.finish_subtask(subtask_id(1), {}, {"p": 1})
    tasks.finish_subtask(subtask_id(0), {}, {"p": 0})  # ends before the MERGE's cancel reaches it
    tasks.deliver("subtask.finished", to=TASK)
    parent = tasks[TASK]

    assert [(r.data["index"], r.data["status"]) for r in parent.records if r.type == "subtask.settled"] == [
        (1, "succeeded"), (0, "succeeded")]
    merged = [r.data for r in parent.records if r.type == "node.merged"]
    assert [(m["arrived"], m["output"]) for m in merged] == [(["1"], {"items": [{"p": 1}]})]
    assert dispatched(parent.records).count("summary") == 1
    assert parent.state.status == "running"
    tasks.feed(completed(parent.dispatch("summary"), {"text": "sum"}))
    assert parent.state.status == "succeeded"
    assert_replays(parent)


def test_split_merge_keyed_uses_the_item_index_as_key() -> None:
    tasks = fanned(split_wf(combine="keyed"), ["x", "y"])
    for index in (0, 1):
        tasks.finish_subtask(subtask_id(index), {}, {"p": index})
    tasks.deliver("subtask.finished")

    assert only(tasks[TASK].records, "node.merged").data["output"] == {"0": {"p": 0}, "1": {"p": 1}}


def test_a_redelivered_subtask_end_is_settled_once() -> None:
    tasks = fanned(split_wf(), ["x", "y"])
    tasks.finish_subtask(subtask_id(0), {}, {"p": 0})
    message = next(m for m in tasks.mail if m.type == "subtask.finished")
    tasks.deliver("subtask.finished")

    assert decide(tasks[TASK].state, RouterInput(message)) == []
    copy = RouterInput(message.model_copy(update={"id": "same-end-again"}))
    assert decide(tasks[TASK].state, copy) == []


def test_split_over_an_empty_list_fires_the_merge_at_once() -> None:
    run = started(split_wf())
    run.feed(completed(run.dispatch("plan"), {"text": "plan"}))
    events = run.feed(completed(run.dispatch("fan"), {"items": []}))

    assert types(events) == ["router.input", "node.succeeded", "node.fanned_out", "node.merged", "task.succeeded"]
    assert only(events, "node.fanned_out").data["subtasks"] == []
    assert only(events, "node.merged").data["output"] == {"items": []}
    assert_replays(run)


def test_more_items_than_max_items_fails_the_split_naming_the_count() -> None:
    run = started(split_wf(max_items=3))
    run.feed(completed(run.dispatch("plan"), {"text": "plan"}))
    events = run.feed(completed(run.dispatch("fan"), {"items": [1, 2, 3, 4]}))

    assert types(events) == ["router.input", "node.failed", "task.failed"]
    assert events[1].data["reason"] == "SPLIT output lists 4 items, over the declared max_items 3"
    assert run.state.reason == "node 'fan' failed: SPLIT output lists 4 items, over the declared max_items 3"
    assert run.state.fanouts == {}
    assert_replays(run)


@pytest.mark.parametrize(("output", "got"), [({"text": "no list"}, "nothing"), ({"items": "a, b"}, "str"),
                                             ({"items": {"a": 1}}, "dict")])
def test_split_without_a_list_at_its_items_path_fails_with_a_clear_reason(output: dict[str, Any], got: str) -> None:
    run = started(split_wf())
    run.feed(completed(run.dispatch("plan"), {"text": "plan"}))
    events = run.feed(completed(run.dispatch("fan"), output))

    assert types(events) == ["router.input", "node.failed", "task.failed"]
    assert events[1].data["reason"] == f"SPLIT output has no list at 'items' (got {got})"
    assert run.state.status == "failed"


def test_a_failed_subtask_fails_the_parent_naming_it_and_cancels_the_other_open_subtasks() -> None:
    tasks = fanned(split_wf(), ["x", "y", "z"])
    tasks.finish_subtask(subtask_id(0), {}, {"p": 0})
    tasks.feed(errored(tasks[subtask_id(1)].dispatch("work"), "bad item", retryable=False))
    assert tasks[subtask_id(1)].state.status == "failed"
    events = tasks.deliver("subtask.finished", to=TASK)

    parent = tasks[TASK]
    assert types(events) == ["router.input", "subtask.settled",
                             "router.input", "subtask.settled", "node.failed", "task.failed",
                             "task.cancel_requested"]
    reason = f"subtask 1 ({subtask_id(1)}) failed: node 'work' failed: bad item"
    assert only(events, "node.failed").data == {"node": "fan", "attempt": 1, "reason": reason}
    assert parent.state.reason == f"node 'fan' failed: {reason}"
    cancel_z = only(events, "task.cancel_requested")
    assert cancel_z.task_id == subtask_id(2)
    assert cancel_z.data["parent_id"] == TASK
    assert cancel_z.data["reason"] == f"parent task failed: node 'fan' failed: {reason}"

    stopped = tasks.deliver("task.cancel_requested")
    assert types(stopped) == ["router.input", "task.cancelled", "subtask.finished"]
    assert tasks[subtask_id(2)].state.status == "cancelled"
    assert tasks.deliver("subtask.finished") == []  # the parent has ended: nothing more to record
    for run in tasks.runs.values():
        assert_replays(run)


def test_with_continue_on_failure_on_the_split_the_merge_fires_with_the_successes() -> None:
    tasks = fanned(split_wf(split_ok=True), ["x", "y", "z"])
    tasks.finish_subtask(subtask_id(0), {}, {"p": 0})
    tasks.feed(errored(tasks[subtask_id(1)].dispatch("work"), "bad item", retryable=False))
    tasks.finish_subtask(subtask_id(2), {}, {"p": 2})
    tasks.deliver("subtask.finished")
    parent = tasks[TASK]

    merged = only(parent.records, "node.merged").data
    assert (merged["arrived"], merged["failed"], merged["skipped"]) == (["0", "2"], ["1"], [])
    assert merged["output"] == {"items": [{"p": 0}, {"p": 2}]}
    assert "node.failed" not in types(parent.records)
    assert parent.state.status == "succeeded"
    assert parent.state.fanouts["fan"].results[1] == ("failed", None, "node 'work' failed: bad item")
    assert_replays(parent)


def test_nested_split_keeps_the_first_task_as_root() -> None:
    tasks = Tasks()
    tasks.feed(accepted(nested_split_wf()))
    tasks.feed(completed(tasks[TASK].dispatch("plan"), {"text": "plan"}))
    tasks.feed(completed(tasks[TASK].dispatch("chapters"), {"items": ["ch1"]}))
    tasks.deliver("subtask.requested")
    chapter = subtask_id(0, node="chapters")
    tasks.feed(completed(tasks[chapter].dispatch("sections"), {"items": ["s1", "s2"]}))
    tasks.deliver("subtask.requested")

    section = subtask_id(1, parent=chapter, node="sections")
    lineage = tasks[section].state.lineage
    assert lineage == Lineage(kind="subtask", parent_id=chapter, root_id=TASK, parent_node="sections", index=1,
                              cause="item 1 of 2 of SPLIT node 'sections'")
    assert tasks[section].state.input["item"] == "s2"
    assert tasks[section].dispatch().data["node"] == "leaf"

    for index in (0, 1):
        leaf = subtask_id(index, parent=chapter, node="sections")
        tasks.feed(completed(tasks[leaf].dispatch("leaf"), {"leaf": index}))
    tasks.deliver("subtask.finished", to=chapter)
    assert tasks[chapter].state.status == "succeeded"
    tasks.deliver("subtask.finished", to=TASK)
    parent = tasks[TASK]
    assert parent.state.status == "succeeded"
    assert only(parent.records, "node.merged").data["output"] == {
        "items": [{"items": [{"leaf": 0}, {"leaf": 1}]}]}
    for run in tasks.runs.values():
        assert_replays(run)


# --- cancel across tasks ----------------------------------------------------------------------


def test_cancelling_a_parent_cascades_to_its_open_subtasks() -> None:
    tasks = fanned(split_wf(), ["x", "y", "z"])
    tasks.finish_subtask(subtask_id(0), {}, {"p": 0})
    tasks.deliver("subtask.finished")
    events = tasks.feed(cancel(TASK, id="cancel-1"))

    assert types(events) == ["router.input", "task.cancelled", "task.cancel_requested", "task.cancel_requested"]
    requests = events[2:]
    assert [r.task_id for r in requests] == [subtask_id(1), subtask_id(2)]
    assert {r.data["parent_id"] for r in requests} == {TASK}
    assert {r.data["reason"] for r in requests} == {"parent task cancelled: operator"}

    tasks.deliver("task.cancel_requested")
    for index in (1, 2):
        sub = tasks[subtask_id(index)]
        assert sub.state.status == "cancelled"
        assert sub.state.nodes["work"].status == "cancelled"
    assert types(tasks.deliver("subtask.finished")) == []
    assert tasks[TASK].state.status == "cancelled"
    for run in tasks.runs.values():
        assert_replays(run)


def test_a_cancel_from_the_parent_that_arrives_before_the_subtask_request_keeps_it_from_starting() -> None:
    tasks = Tasks()
    tasks.feed(accepted(split_wf()))
    tasks.feed(completed(tasks[TASK].dispatch("plan"), {"text": "plan"}))
    tasks.feed(completed(tasks[TASK].dispatch("fan"), {"items": ["x"]}))
    tasks.feed(cancel(TASK, id="cancel-1"))
    sub = subtask_id(0)

    stopped = tasks.deliver("task.cancel_requested", to=sub)  # overtakes the request
    assert types(stopped) == ["router.input", "task.cancelled"]
    assert tasks[sub].state.status == "cancelled"
    assert tasks.deliver("subtask.requested", to=sub) == []
    assert "task.started" not in types(tasks[sub].records)
    assert tasks.mail == []
    assert_replays(tasks[sub])


def test_a_cancel_without_parent_id_for_a_task_not_started_changes_nothing() -> None:
    assert decide(TaskState(), cancel("task-9", id="cancel-9")) == []


# --- revise -----------------------------------------------------------------------------------


def test_a_rejecting_reviewer_sends_the_target_back_with_feedback_and_a_new_dispatch_id() -> None:
    run = started(revise_wf())
    first = run.dispatch("draft")
    run.feed(completed(first, {"text": "v1"}))
    feedback = {"verdict": "revise", "notes": "more sources"}
    events = run.feed(completed(run.dispatch("review"), feedback))

    assert types(events) == ["router.input", "node.succeeded", "node.revision_requested", "node.dispatched"]
    assert only(events, "node.revision_requested").data == {
        "node": "review", "target": "draft", "revision": 1, "max_revisions": 2, "feedback": feedback,
        "reset": ["draft", "review"]}
    again = only(events, "node.dispatched").data
    assert again["node"] == "draft"
    assert again["attempt"] == 1
    assert again["reason"] == "revision 1 of 2 asked by 'review'"
    assert again["dispatch_id"] == derive_id(TASK, "draft", "revision-1", 1)
    assert again["dispatch_id"] != first.data["dispatch_id"]
    assert NodeContext.model_validate(again["context"]) == NodeContext(input=TASK_INPUT, upstream={},
                                                                       feedback=feedback, revision=1)
    assert run.state.nodes["review"].status == "pending"
    assert run.state.revisions == {"review": 1}

    run.feed(completed(run.dispatch("draft"), {"text": "v2"}))
    review = run.dispatch("review").data
    assert review["dispatch_id"] == derive_id(TASK, "review", "revision-1", 1)
    assert review["context"]["upstream"] == {"draft": {"text": "v2"}}
    assert review["context"]["revision"] == 1
    assert_replays(run)


def test_an_approving_reviewer_follows_its_edge() -> None:
    run = started(revise_wf())
    run.feed(completed(run.dispatch("draft"), {"text": "v1"}))
    run.feed(completed(run.dispatch("review"), {"verdict": "revise"}))
    run.feed(completed(run.dispatch("draft"), {"text": "v2"}))
    events = run.feed(completed(run.dispatch("review"), {"verdict": "approve"}))

    assert types(events) == ["router.input", "node.succeeded", "task.succeeded"]
    assert run.state.exit_node == "approved"
    assert run.state.nodes["draft"].output == {"text": "v2"}
    assert_replays(run)


def test_after_max_revisions_the_reviewer_output_is_routed_as_usual() -> None:
    run = started(revise_wf(max_revisions=2))
    for text in ("v1", "v2", "v3"):
        run.feed(completed(run.dispatch("draft"), {"text": text}))
        events = run.feed(completed(run.dispatch("review"), {"verdict": "revise"}))

    assert types(events) == ["router.input", "node.succeeded", "task.failed"]
    assert events[1].data["chosen"] == "rejected"
    assert run.state.exit_node == "rejected"
    assert run.state.reason == "reached EXIT node 'rejected'"
    assert [r.data["revision"] for r in run.records if r.type == "node.revision_requested"] == [1, 2]
    assert len({r.data["dispatch_id"] for r in run.records if r.type == "node.dispatched"}) == 6
    assert_replays(run)


def test_mock_scripts_continue_across_revisions() -> None:
    script = [{"text": "d1"}, {"text": "d2"}, {"text": "d3"}, {"text": "d4"}]
    run = started(revise_wf(mock={"draft": script}))
    assert run.dispatch("draft").data["agent"]["mock_responses"] == script
    # revision 0 takes two attempts of draft: a retry after a runner error
    run.feed(errored(run.dispatch("draft"), "flaky"))
    assert run.dispatch("draft").data["attempt"] == 2
    run.feed(completed(run.dispatch("draft"), {"text": "d2"}))
    run.feed(completed(run.dispatch("review"), {"verdict": "revise"}))

    assert run.dispatch("draft").data["agent"]["mock_responses"] == script[2:]
    run.feed(completed(run.dispatch("draft"), {"text": "d3"}))
    run.feed(completed(run.dispatch("review"), {"verdict": "revise"}))
    assert run.dispatch("draft").data["agent"]["mock_responses"] == script[3:]
    assert run.state.nodes["draft"].runs_before == 3
    assert_replays(run)


def test_a_mock_script_used_up_by_earlier_revisions_repeats_its_last_item() -> None:
    script = [{"text": "only"}]
    run = started(revise_wf(mock={"draft": script}))
    run.feed(completed(run.dispatch("draft"), {"text": "only"}))
    run.feed(completed(run.dispatch("review"), {"verdict": "revise"}))

    assert run.dispatch("draft").data["agent"]["mock_responses"] == script


def test_a_late_result_from_before_the_revision_is_not_taken_for_the_new_run() -> None:
    run = started(revise_wf())
    before = run.dispatch("draft")
    run.feed(completed(before, {"text": "v1"}))
    run.feed(completed(run.dispatch("review"), {"verdict": "revise"}))

    assert decide(run.state, completed(before, {"text": "stale"}, id="stale-draft")) == []
    assert run.state.nodes["draft"].status == "dispatched"


# --- continue_on_failure ----------------------------------------------------------------------


def test_a_linear_node_that_continues_on_failure_hands_its_error_to_its_successor() -> None:
    wf = valid(manifest([agent("start", role="START"), agent("fetch", continue_on_failure=True, max_attempts=1),
                         agent("write"), exit_("done")], chain("start", "fetch", "write", "done")))
    run = started(wf)
    run.feed(completed(run.dispatch("start"), {"text": "s"}))
    events = run.feed(errored(run.dispatch("fetch"), "404 not found", retryable=False))

    assert types(events) == ["router.input", "node.failed", "node.dispatched"]
    assert events[1].data == {"node": "fetch", "attempt": 1, "reason": "404 not found", "continued": True}
    assert events[2].data["node"] == "write"
    assert events[2].data["context"]["upstream"] == {"start": {"text": "s"}, "fetch": {"error": "404 not found"}}
    run.feed(completed(run.dispatch("write"), {"text": "w"}))
    assert run.state.status == "succeeded"
    assert run.state.nodes["fetch"].status == "failed"
    assert_replays(run)


# --- found by these stories -------------------------------------------------------------------


def test_subtasks_cancelled_by_a_merge_under_policy_any_do_not_fail_the_parent() -> None:
    tasks = fanned(split_wf(policy="any", then="summary"), ["x", "y"])
    tasks.finish_subtask(subtask_id(0), {}, {"p": 0})
    fired = tasks.deliver("subtask.finished", to=TASK)
    assert "node.merged" in types(fired)
    assert tasks[TASK].dispatch().data["node"] == "summary"

    tasks.deliver("task.cancel_requested", to=subtask_id(1))  # the MERGE stops the subtask it no longer needs
    assert tasks[subtask_id(1)].state.status == "cancelled"
    tasks.deliver("subtask.finished", to=TASK)

    parent = tasks[TASK]
    assert parent.state.status == "running", parent.state.reason
    tasks.feed(completed(parent.dispatch("summary"), {"text": "sum"}))
    assert parent.state.status == "succeeded"


def test_a_continued_failure_ending_a_subtask_is_not_counted_as_an_arrived_input() -> None:
    nodes = [agent("plan", role="START"),
             agent("fan", role="SPLIT", split=SplitSpec(items="items", merge="gather")),
             agent("work", continue_on_failure=True, max_attempts=1),
             merge_node("gather", policy="quorum", quorum=2), exit_("done")]
    tasks = fanned(valid(manifest(nodes, chain("plan", "fan", "work", "gather", "done"))), ["x", "y"])
    for index in (0, 1):
        tasks.feed(errored(tasks[subtask_id(index)].dispatch("work"), f"broke {index}", retryable=False))
    tasks.deliver("subtask.finished")

    parent = tasks[TASK]
    # today: node.merged arrived ['0', '1'] with output {"items": [{"error": "broke 0"}, {"error": "broke 1"}]}
    assert [r.data["arrived"] for r in parent.records if r.type == "node.merged"] in ([], [[]])
    assert parent.state.status == "failed"


def test_each_open_subtask_is_asked_to_stop_once_when_the_merge_fires_and_the_task_ends() -> None:
    tasks = fanned(split_wf(policy="any"), ["x", "y", "z"])
    tasks.finish_subtask(subtask_id(0), {}, {"p": 0})
    events = tasks.deliver("subtask.finished", to=TASK)

    assert "task.succeeded" in types(events)
    # today: [subtask 1, subtask 2, subtask 1, subtask 2]
    assert [e.task_id for e in events if e.type == "task.cancel_requested"] == [subtask_id(1), subtask_id(2)]


# --- found while documenting ------------------------------------------------------------------

def test_a_branch_failing_after_an_any_merge_fired_no_longer_fails_the_task() -> None:
    run, _ = at_branches(branch_wf(policy="any", merge_kind="agent"))
    run.feed(completed(run.dispatch("b"), {"v": "b"}))  # the MERGE fires; the chair is dispatched
    late = run.feed(errored(run.dispatch("a"), "boom", retryable=False))
    assert types(late) == ["router.input", "node.failed"]
    assert late[1].data["continued"] is True
    assert "no longer needed: every path from it ends at a MERGE that fired" in late[1].data["reason"]
    assert run.state.status == "running"
    run.feed(completed(run.dispatch("join"), {"v": "merged"}))
    assert run.state.status == "succeeded"
    assert_replays(run)


def test_a_decision_reviewer_asking_for_a_revision_needs_no_matching_edge() -> None:
    rule = ReviseSpec(target="draft", when=Condition(field="verdict", equals="revise"), max_revisions=1)
    nodes = [agent("draft", role="START"), agent("review", role="DECISION", agent_name="judge", revise=rule),
             exit_("approved"), exit_("rejected", "failed")]
    edges = [edge("draft", "review"), edge("review", "approved", field_="verdict", equals="approve"),
             edge("review", "rejected", field_="verdict", equals="reject")]  # no edge for "revise", no default
    run = started(valid(manifest(nodes, edges)))
    run.feed(completed(run.dispatch("draft"), {"text": "v1"}))
    asked = run.feed(completed(run.dispatch("review"), {"verdict": "revise"}))
    assert types(asked) == ["router.input", "node.succeeded", "node.revision_requested", "node.dispatched"]
    assert "chosen" not in asked[1].data  # a revision, not an edge
    run.feed(completed(run.dispatch("draft"), {"text": "v2"}))
    run.feed(completed(run.dispatch("review"), {"verdict": "approve"}))
    assert run.state.exit_node == "approved"
    assert_replays(run)


def test_a_revision_may_take_a_path_a_decision_skipped_the_first_time() -> None:
    rule = ReviseSpec(target="draft", when=Condition(field="verdict", equals="again"), max_revisions=1)
    nodes = [agent("draft", role="START"),
             agent("route", role="DECISION"), agent("short"), agent("long"),
             agent("review", agent_name="judge", revise=rule), exit_("done")]
    edges = [edge("draft", "route"), edge("route", "long", field_="size", equals="long"),
             edge("route", "short", default=True), edge("short", "review"), edge("long", "review"),
             edge("review", "done")]
    run = started(valid(manifest(nodes, edges)))
    run.feed(completed(run.dispatch("draft")))
    run.feed(completed(run.dispatch("route"), {"size": "short"}))  # long is skipped
    assert run.state.nodes["long"].status == "skipped"
    run.feed(completed(run.dispatch("short")))
    asked = run.feed(completed(run.dispatch("review"), {"verdict": "again"}))
    assert only(asked, "node.revision_requested").data["reset"] == ["draft", "long", "review", "route", "short"]
    run.feed(completed(run.dispatch("draft")))
    run.feed(completed(run.dispatch("route"), {"size": "long"}))  # this time the other path
    run.feed(completed(run.dispatch("long")))
    run.feed(completed(run.dispatch("review"), {"verdict": "fine"}))
    assert run.state.status == "succeeded"
    assert_replays(run)
