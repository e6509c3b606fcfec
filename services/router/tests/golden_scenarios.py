"""Golden task histories: one small scenario per router behaviour, driven through the pure core.

Each scenario feeds a task (or a parent and its subtasks, a fork and its source, several tasks of one
tenant) input by input through `apply`, exactly as the shell would, and returns what the store would hold:
every task's records in stored order. The records are committed as JSON under `golden/`, with the final
status each task must reach in `golden/index.json`; `test_golden.py` checks that replaying them, folding
them and building them again today all agree, so a change in what the router decides is caught.

Everything is plain data: fixed ids, times T0 plus whole seconds, no clock, no randomness. Every input
fed must change the task (`Story.feed`), every input absorbed must change nothing (`Story.absorb`), so a
scenario also fails loudly when the router stops doing what it shows.

Regenerate the files after an intended change in behaviour (and review the diff):

    .venv/bin/python services/router/tests/golden_scenarios.py
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from router_testkit import (
    AGENTS,
    T0,
    TASK,
    TENANT,
    Run,
    accepted,
    agent,
    chain,
    completed,
    edge,
    envelope,
    errored,
    exit_,
    expired,
    json_round_trip,
    manifest,
    review_workflow,
    tool,
    types,
)

from agent_engine.contracts.envelope import Envelope, derive_id
from agent_engine.contracts.manifest import (
    AgentSpec,
    Condition,
    MergeSpec,
    NodeSpec,
    ReviseSpec,
    SplitSpec,
    ToolSpec,
    WorkflowManifest,
)
from agent_engine.contracts.validation import validate
from agent_engine.router.admission import Limits, TenantState, admit, evolve_tenant, release
from agent_engine.router.core import RouterInput, fold
from agent_engine.router.idempotency import KeyState, duplicate_of, evolve_key

GOLDEN = Path(__file__).resolve().parent / "golden"
INDEX = GOLDEN / "index.json"

Records = dict[str, list[Envelope]]
"""Task id -> the records the store holds for it, in stored order."""


# --- driving ----------------------------------------------------------------------------------

class Story:
    """The tasks of one scenario, as the store and the bus would keep them: a Run per task, a clock that
    moves one second per input, and the messages one task addresses to another (subtask requests and
    ends, cancels), held until the scenario delivers them."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}
        self.mail: list[Envelope] = []
        self.clock = T0

    def __getitem__(self, task_id: str) -> Run:
        return self.runs[task_id]

    def now(self, at: datetime | None = None) -> datetime:
        """The time of the next input: a second after the last one (or `at`, if that is later)."""
        self.clock = max(self.clock + timedelta(seconds=1), at or self.clock)
        return self.clock

    def _apply(self, inp: RouterInput) -> list[Envelope]:
        task_id = inp.event.task_id
        out = self.runs.setdefault(task_id, Run()).feed(inp)
        self.mail += [r for r in out if r.task_id != task_id]
        return out

    def feed(self, inp: RouterInput) -> list[Envelope]:
        """Apply an input that must change its task; what it caused."""
        out = self._apply(inp)
        assert out, f"{inp.event.type} {inp.event.id} changed nothing"
        return out

    def absorb(self, inp: RouterInput) -> None:
        """Deliver an input that must change nothing (a redelivery, a stale or late input)."""
        run = self.runs[inp.event.task_id]
        assert run.feed(inp) == [], f"{inp.event.type} {inp.event.id} was expected to be absorbed"

    def deliver(self, type_: str, to: str | None = None) -> list[Envelope]:
        """Deliver every waiting message of `type_` (to task `to`), in the order sent; what they caused
        (a message may change nothing, e.g. a subtask's end reaching a parent that has ended)."""
        due = [m for m in self.mail if m.type == type_ and (to is None or m.task_id == to)]
        self.mail = [m for m in self.mail if m not in due]
        caused: list[Envelope] = []
        for message in due:
            caused += self._apply(RouterInput(message))
        return caused

    # shorthands for the inputs the runners and the shell send

    def accept(self, wf: WorkflowManifest | None, task_input: dict[str, Any] | None = None, **kw: Any
               ) -> list[Envelope]:
        return self.feed(accepted(wf, task_input, time=self.now(), **kw))

    def complete(self, node: str, output: dict[str, Any] | None = None, *, task: str = TASK, **extra: Any
                 ) -> list[Envelope]:
        return self.feed(completed(self[task].dispatch(node), output, time=self.now(), **extra))

    def error(self, node: str, error: str, *, retryable: bool, task: str = TASK) -> list[Envelope]:
        return self.feed(errored(self[task].dispatch(node), error, retryable=retryable, time=self.now()))

    def expire(self, node: str, *, task: str = TASK) -> list[Envelope]:
        """The shell's deadline index fires for the node's open dispatch, at its deadline."""
        dispatch = self[task].dispatch(node)
        return self.feed(expired(dispatch, time=self.now(datetime.fromisoformat(dispatch.data["deadline"]))))

    def retry_due(self, node: str, *, task: str = TASK) -> list[Envelope]:
        """The shell's timer for the node's scheduled retry fires, at the time it was scheduled for."""
        at = self[task].state.nodes[node].deadline
        assert at is not None
        attempt = self[task].state.nodes[node].attempts + 1
        data = {"node": node, "attempt": attempt, "at": at.isoformat()}
        return self.feed(RouterInput(envelope("node.retry_due", data, time=self.now(at), task_id=task,
                                              id=derive_id(task, node, attempt, "retry-due", at.isoformat()))))

    def cancel(self, reason: str, *, task: str = TASK, id: str = "cancel-1") -> list[Envelope]:
        data = {"reason": reason, "requested_by": "ops"}
        return self.feed(RouterInput(envelope("task.cancel_requested", data, id=id, time=self.now(), task_id=task)))

    def records(self) -> Records:
        return {task_id: list(run.records) for task_id, run in self.runs.items()}


def valid(wf: WorkflowManifest) -> WorkflowManifest:
    """Every workflow here is one `agentctl workflow push` would accept. It keeps only the agents, tools and
    schemas its nodes use: the manifest is copied into many records, and the files should stay small."""
    agents = {name: spec for name, spec in wf.agents.items() if any(n.agent == name for n in wf.nodes)}
    tools = {name: spec for name, spec in wf.tools.items()
             if any(n.tool == name for n in wf.nodes) or any(name in a.tools for a in agents.values())}
    schemas = {name: spec for name, spec in wf.schemas.items() if any(a.output_schema == name for a in agents.values())}
    wf = wf.model_copy(update={"agents": agents, "tools": tools, "schemas": schemas})
    assert validate(wf) == [], [str(e) for e in validate(wf)]
    return wf


def subtask(index: int, *, parent: str = TASK, node: str = "fan") -> str:
    """The id a SPLIT gives its subtask `index` (revision 0)."""
    return derive_id(parent, node, 0, "subtask", index)


# --- the registry -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    name: str
    build: Callable[[], Story]
    expect: dict[str, str]
    """Task id -> the status folding its records must reach."""

    @property
    def doc(self) -> str:
        return (self.build.__doc__ or "").strip()

    @property
    def file(self) -> str:
        return f"{self.name}.json"

    def records(self) -> Records:
        return self.build().records()


SCENARIOS: dict[str, Scenario] = {}


def scenario(expect: str | dict[str, str]) -> Callable[[Callable[[], Story]], Callable[[], Story]]:
    """Register a scenario; `expect` is the final status of task-1, or of each task by id."""

    def register(build: Callable[[], Story]) -> Callable[[], Story]:
        name = build.__name__
        SCENARIOS[name] = Scenario(name, build, {TASK: expect} if isinstance(expect, str) else expect)
        return build

    return register


# --- workflows --------------------------------------------------------------------------------

TOOLS = {
    "stats": ToolSpec(builtin="text_stats"),
    "publish": ToolSpec(builtin="workspace_list", args_schema={
        "type": "object", "required": ["path"], "properties": {"path": {"type": "string"}}}),
}


def merge_node(node_id: str, *, kind: str | None = None, **merge_kw: Any) -> NodeSpec:
    if kind == "agent":
        return agent(node_id, role="MERGE", merge=MergeSpec(**merge_kw), max_attempts=1)
    return NodeSpec(id=node_id, role="MERGE", merge=MergeSpec(**merge_kw))


def branch_wf(*, failing_ok: tuple[str, ...] = (), merge_kind: str | None = None, **merge_kw: Any
              ) -> WorkflowManifest:
    """plan (START) -> fan (BRANCH) -> a, b, c (agents, in parallel) -> join (MERGE) -> done."""
    nodes = [agent("plan", role="START"), agent("fan", role="BRANCH"),
             *(agent(n, continue_on_failure=n in failing_ok, max_attempts=1) for n in "abc"),
             merge_node("join", kind=merge_kind, **merge_kw), exit_("done")]
    edges = [edge("plan", "fan"), *(edge("fan", n) for n in "abc"), *(edge(n, "join") for n in "abc"),
             edge("join", "done")]
    return valid(manifest(nodes, edges))


def split_wf(*, split_ok: bool = False, then: str | None = None, polish: bool = True, **merge_kw: Any
             ) -> WorkflowManifest:
    """plan (START) -> fan (SPLIT over its output's `items`) -> work -> polish -> gather (MERGE) -> done;
    each subtask runs work -> polish (or only work, without `polish`); `then` puts an agent between gather
    and done."""
    body = ["work", "polish"] if polish else ["work"]
    nodes = [agent("plan", role="START"),
             agent("fan", role="SPLIT", split=SplitSpec(items="items", max_items=10, merge="gather"),
                   continue_on_failure=split_ok),
             agent("work", max_attempts=1), *([agent("polish")] if polish else []), merge_node("gather", **merge_kw),
             exit_("done")]
    tail = ["gather", "done"] if then is None else ["gather", then, "done"]
    if then is not None:
        nodes.append(agent(then))
    return valid(manifest(nodes, [*chain("plan", "fan", *body, "gather"), *chain(*tail)]))


def fanned(wf: WorkflowManifest, items: list[Any], *, deliver: bool = True) -> Story:
    """A task of `split_wf` whose fan node listed `items`; the subtask requests delivered (if `deliver`)."""
    story = Story()
    story.accept(wf)
    story.complete("plan", {"text": "plan"})
    story.complete("fan", {"items": items})
    if deliver:
        story.deliver("subtask.requested")
    return story


def finish_subtask(story: Story, index: int) -> None:
    """Subtask `index` of `split_wf` runs its body: work, then polish (if it has one), both succeed."""
    story.complete("work", {"w": index}, task=subtask(index))
    if "polish" in story[subtask(index)].state.nodes:
        story.complete("polish", {"p": index}, task=subtask(index))


def approval_wf() -> WorkflowManifest:
    """draft (START agent) -> publish (tool, approval required) -> archive (tool, approval required) -> done."""
    return valid(manifest(
        [agent("draft", role="START"),
         tool("publish", tool_name="publish", args={"path": "$nodes.draft.text"}, approval="required"),
         tool("archive", tool_name="publish", args={"path": "$input.topic"}, approval="required"),
         exit_("done")],
        chain("draft", "publish", "archive", "done"), tools=TOOLS))


def approval_decided(node: str, choice: str, *, id: str, time: datetime, by: str = "alice", reason: str = "",
                     args: dict[str, Any] | None = None) -> RouterInput:
    data: dict[str, Any] = {"node": node, "decision": choice, "decided_by": by, "reason": reason}
    if args is not None:
        data["args"] = args
    return RouterInput(envelope("node.approval_decided", data, id=id, time=time))


# --- node roles -------------------------------------------------------------------------------

@scenario("succeeded")
def linear_succeeded() -> Story:
    """START -> LINEAR agent -> LINEAR tool (arguments resolved from an upstream output and the task
    input) -> LINEAR agent naming its own model -> EXIT succeeded; results carry provider, model, usage."""
    wf = valid(manifest([agent("draft", role="START"),
                         tool("stats", tool_name="stats", args={"text": "$nodes.draft.text", "about": "$input.topic"}),
                         agent("polish", model="m-1-large"), exit_("done")],
                        chain("draft", "stats", "polish", "done"), tools=TOOLS))
    story = Story()
    story.accept(wf)
    story.complete("draft", {"text": "a short draft"}, provider="mock", model="m-1",
                   usage={"input_tokens": 50, "output_tokens": 20})
    story.complete("stats", {"characters": 13, "words": 3})
    out = story.complete("polish", {"text": "a polished draft"}, provider="mock", model="m-1-large",
                         usage={"input_tokens": 80, "output_tokens": 30})
    assert types(out)[-1] == "task.succeeded"
    return story


@scenario("succeeded")
def decision_skips_a_path() -> Story:
    """A DECISION chooses its default edge; the path not taken is skipped (node.skipped) and the join
    after both paths runs with one live and one dead input."""
    nodes = [agent("draft", role="START"), agent("route", role="DECISION"), agent("short"), agent("long"),
             agent("publish"), exit_("done")]
    edges = [edge("draft", "route"), edge("route", "long", field_="size", in_=["long", "huge"]),
             edge("route", "short", default=True), edge("short", "publish"), edge("long", "publish"),
             edge("publish", "done")]
    story = Story()
    story.accept(valid(manifest(nodes, edges)))
    story.complete("draft", {"text": "d"})
    out = story.complete("route", {"size": "small"})
    assert types(out) == ["router.input", "node.succeeded", "node.dispatched", "node.skipped"]
    story.complete("short", {"text": "s"})
    story.complete("publish", {"text": "p"})
    return story


@scenario("failed")
def decision_reaches_failed_exit() -> Story:
    """A DECISION matching `verdict == reject` leads to an EXIT node of status failed: the task fails there."""
    story = Story()
    story.accept(review_workflow())
    story.complete("draft", {"text": "d"})
    out = story.complete("review", {"verdict": "reject", "comments": "off topic"})
    assert types(out)[-1] == "task.failed"
    return story


@scenario("succeeded")
def branch_decision_merge_all() -> Story:
    """A BRANCH runs triage (a DECISION) and other in parallel; triage skips `deep`; the MERGE (policy all,
    combine keyed) waits for every live input and lists the skipped one."""
    nodes = [agent("plan", role="START"), agent("fan", role="BRANCH"), agent("triage", role="DECISION"),
             agent("deep"), agent("quick"), agent("other"), merge_node("join", policy="all", combine="keyed"),
             exit_("done")]
    edges = [edge("plan", "fan"), edge("fan", "triage"), edge("fan", "other"),
             edge("triage", "deep", field_="depth", equals="deep"), edge("triage", "quick", default=True),
             edge("deep", "join"), edge("quick", "join"), edge("other", "join"), edge("join", "done")]
    story = Story()
    story.accept(valid(manifest(nodes, edges)))
    story.complete("plan", {"text": "plan"})
    story.complete("fan", {"text": "fan"})
    story.complete("triage", {"depth": "shallow"})
    story.complete("quick", {"v": "quick"})
    out = story.complete("other", {"v": "other"})
    assert "node.merged" in types(out)
    return story


@scenario("succeeded")
def merge_any_then_late_results() -> Story:
    """MERGE policy any fires on the first branch and the EXIT ends the task while two branches run; their
    late completion and late error are each recorded once as node.result_ignored, a redelivery not at all."""
    story = Story()
    story.accept(branch_wf(policy="any"))
    story.complete("plan", {"text": "plan"})
    story.complete("fan", {"text": "fan"})
    late_a, late_c = story[TASK].dispatch("a"), story[TASK].dispatch("c")
    out = story.complete("b", {"v": "b"})
    assert types(out)[-1] == "task.succeeded"
    story.feed(completed(late_a, {"v": "a"}, time=story.now()))
    story.absorb(completed(late_a, {"v": "a"}, time=story.clock))
    story.feed(errored(late_c, "boom", retryable=False, time=story.now()))
    return story


@scenario("succeeded")
def merge_quorum_agent_merge() -> Story:
    """MERGE policy quorum 2, run by an agent: it fires when two branches arrived and is dispatched with the
    merged inputs; the third branch failing afterwards no longer fails the task (continued, no longer needed)."""
    story = Story()
    story.accept(branch_wf(policy="quorum", quorum=2, merge_kind="agent"))
    story.complete("plan", {"text": "plan"})
    story.complete("fan", {"text": "fan"})
    story.complete("c", {"v": "c"})
    out = story.complete("a", {"v": "a"})
    assert types(out)[-2:] == ["node.merged", "node.dispatched"]
    story.error("b", "b broke", retryable=False)
    story.complete("join", {"summary": "a+c"})
    return story


@scenario("failed")
def merge_quorum_made_impossible() -> Story:
    """Branches that continue_on_failure fail one by one until MERGE quorum 2 can no longer be met: the
    MERGE fails naming them, the task fails, the branch still running is abandoned."""
    story = Story()
    story.accept(branch_wf(policy="quorum", quorum=2, failing_ok=("a", "b", "c")))
    story.complete("plan", {"text": "plan"})
    story.complete("fan", {"text": "fan"})
    story.error("a", "a broke", retryable=False)
    out = story.error("b", "b broke", retryable=False)
    assert types(out) == ["router.input", "node.failed", "node.failed", "task.failed"]
    return story


@scenario("succeeded")
def continue_on_failure_linear() -> Story:
    """A LINEAR node with continue_on_failure fails for good; its successor runs and sees {"error": ...}."""
    wf = valid(manifest([agent("start", role="START"), agent("fetch", continue_on_failure=True, max_attempts=1),
                         agent("write"), exit_("done")], chain("start", "fetch", "write", "done")))
    story = Story()
    story.accept(wf)
    story.complete("start", {"text": "s"})
    out = story.error("fetch", "404 not found", retryable=False)
    assert types(out) == ["router.input", "node.failed", "node.dispatched"]
    story.complete("write", {"text": "w"})
    return story


# --- SPLIT and its subtasks -------------------------------------------------------------------

@scenario({TASK: "succeeded", subtask(0): "succeeded", subtask(1): "succeeded", subtask(2): "succeeded"})
def split_merge_all() -> Story:
    """A SPLIT over three items starts three subtasks (work -> polish each); they end in the order 2, 0, 1
    and the MERGE (policy all) combines their outputs in item order; a redelivered subtask end is absorbed."""
    story = fanned(split_wf(), ["x", {"k": 2}, 3])
    for index in (2, 0):
        finish_subtask(story, index)
    story.deliver("subtask.finished", to=TASK)
    end = next(r for r in story[subtask(0)].records if r.type == "subtask.finished")
    story.absorb(RouterInput(end))
    finish_subtask(story, 1)
    out = story.deliver("subtask.finished", to=TASK)
    assert types(out)[-2:] == ["node.merged", "task.succeeded"]
    return story


@scenario({TASK: "succeeded", subtask(0): "cancelled", subtask(1): "succeeded"})
def split_merge_any() -> Story:
    """MERGE policy any of a SPLIT fires on the first subtask to end and asks the other to stop; that one's
    end (cancelled) is settled without firing the MERGE again; the agent after the MERGE finishes the task."""
    story = fanned(split_wf(policy="any", then="summary", polish=False), ["x", "y"])
    finish_subtask(story, 1)
    out = story.deliver("subtask.finished", to=TASK)
    assert types(out)[-3:] == ["node.merged", "task.cancel_requested", "node.dispatched"]
    story.deliver("task.cancel_requested", to=subtask(0))
    assert types(story.deliver("subtask.finished", to=TASK)) == ["router.input", "subtask.settled"]
    story.complete("summary", {"text": "sum"})
    return story


@scenario({TASK: "succeeded", subtask(0): "succeeded", subtask(1): "failed", subtask(2): "succeeded",
           subtask(3): "cancelled"})
def split_quorum_continue_on_failure() -> Story:
    """A SPLIT with continue_on_failure and MERGE quorum 2 over four items (subtasks of one node): a failed
    subtask is settled and counted as failed, the MERGE fires once two succeeded, and the subtask still
    running is cancelled."""
    story = fanned(split_wf(split_ok=True, polish=False, policy="quorum", quorum=2), ["a", "b", "c", "d"])
    story.error("work", "bad item", retryable=False, task=subtask(1))
    story.deliver("subtask.finished", to=TASK)
    finish_subtask(story, 0)
    story.deliver("subtask.finished", to=TASK)
    finish_subtask(story, 2)
    out = story.deliver("subtask.finished", to=TASK)
    assert types(out)[-3:] == ["node.merged", "task.cancel_requested", "task.succeeded"]
    story.deliver("task.cancel_requested")
    assert story.deliver("subtask.finished") == []  # the parent has ended
    return story


@scenario({TASK: "failed", subtask(0): "succeeded", subtask(1): "failed", subtask(2): "cancelled"})
def split_subtask_fails_the_parent() -> Story:
    """Without continue_on_failure a failed subtask fails its SPLIT and the parent, which asks the open
    subtask to stop; that subtask's end reaches a parent that has ended and changes nothing."""
    story = fanned(split_wf(polish=False), ["x", "y", "z"])
    finish_subtask(story, 0)
    story.error("work", "bad item", retryable=False, task=subtask(1))
    out = story.deliver("subtask.finished", to=TASK)
    assert types(out)[-3:] == ["node.failed", "task.failed", "task.cancel_requested"]
    story.deliver("task.cancel_requested")
    assert story.deliver("subtask.finished") == []
    return story


@scenario({TASK: "cancelled", subtask(0): "succeeded", subtask(1): "cancelled", subtask(2): "cancelled"})
def cancel_split_parent() -> Story:
    """Cancelling a SPLIT parent cascades a cancel to each open subtask: a running one is cancelled (its
    work node marked), one whose request had not arrived yet is cancelled before it starts and its late
    request is absorbed; the subtasks' ends reach the cancelled parent and change nothing."""
    story = fanned(split_wf(polish=False), ["x", "y", "z"], deliver=False)
    for index in (0, 1):
        story.deliver("subtask.requested", to=subtask(index))
    finish_subtask(story, 0)
    story.deliver("subtask.finished", to=TASK)
    out = story.cancel("operator")
    assert types(out) == ["router.input", "task.cancelled", "task.cancel_requested", "task.cancel_requested"]
    assert types(story.deliver("task.cancel_requested", to=subtask(2))) == ["router.input", "task.cancelled"]
    assert story.deliver("subtask.requested", to=subtask(2)) == []
    story.deliver("task.cancel_requested", to=subtask(1))
    assert story.deliver("subtask.finished", to=TASK) == []
    return story


# --- cancel, retries, deadlines ---------------------------------------------------------------

@scenario("cancelled")
def cancel_with_late_result() -> Story:
    """Cancelling a running task names its open node; the node's result arriving afterwards is recorded
    once as node.result_ignored; another answer to the same dispatch and a second cancel are absorbed."""
    story = Story()
    story.accept(review_workflow())
    draft = story[TASK].dispatch("draft")
    out = story.cancel("customer withdrew")
    assert out[1].data["open_nodes"] == ["draft"]
    story.feed(completed(draft, {"text": "too late"}, time=story.now()))
    story.absorb(errored(draft, "late error", time=story.now()))
    story.absorb(RouterInput(envelope("task.cancel_requested", {"reason": "again"}, id="cancel-2", time=story.now())))
    return story


@scenario("succeeded")
def retry_with_backoff() -> Story:
    """A retryable error and then a deadline expiry each schedule a retry with backoff
    (node.retry_scheduled); each retry is dispatched when due (node.retry_due); a stale and a repeated
    due are absorbed; the third attempt succeeds."""
    wf = valid(manifest([agent("work", role="START", max_attempts=4, backoff_s=2.0, backoff_max_s=5.0,
                               timeout_s=30), exit_("done")], chain("work", "done")))
    story = Story()
    story.accept(wf)
    out = story.error("work", "rate limited", retryable=True)
    assert types(out) == ["router.input", "node.retry_scheduled"]
    at = datetime.fromisoformat(out[1].data["at"])
    story.absorb(RouterInput(envelope("node.retry_due", {"node": "work", "attempt": 2,
                                                          "at": (at - timedelta(seconds=30)).isoformat()},
                                      id="due-stale", time=at)))
    story.retry_due("work")
    story.absorb(RouterInput(envelope("node.retry_due", {"node": "work", "attempt": 2, "at": at.isoformat()},
                                      id="due-again", time=story.now())))
    out = story.expire("work")
    assert types(out) == ["router.input", "node.retry_scheduled"]
    story.retry_due("work")
    story.complete("work", {"text": "third time lucky"})
    return story


@scenario("succeeded")
def deadline_redispatch() -> Story:
    """A node whose deadline passes is dispatched again at once (attempt 2); the late result of attempt 1
    still settles it and the answer of attempt 2 is absorbed; the next node's retry after its deadline
    answers normally."""
    wf = valid(manifest([agent("start", role="START", timeout_s=20), agent("middle", timeout_s=20), exit_("done")],
                        chain("start", "middle", "done")))
    story = Story()
    story.accept(wf)
    first = story[TASK].dispatch("start")
    out = story.expire("start")
    assert types(out) == ["router.input", "node.dispatched"] and out[1].data["attempt"] == 2
    second = story[TASK].dispatch("start")
    story.feed(completed(first, {"text": "slow but fine"}, time=story.now()))
    story.absorb(completed(second, {"text": "also done"}, time=story.now()))
    story.expire("middle")
    story.complete("middle", {"text": "m"})
    return story


@scenario("failed")
def retries_exhausted() -> Story:
    """A node without backoff retries at once after a deadline and a retryable error, and fails the task
    once max_attempts (3) are used up, naming the last error."""
    story = Story()
    story.accept(review_workflow())
    story.expire("draft")
    story.error("draft", "connection reset", retryable=True)
    out = story.error("draft", "connection reset", retryable=True)
    assert types(out) == ["router.input", "node.failed", "task.failed"]
    return story


# --- people in the loop -----------------------------------------------------------------------

@scenario("succeeded")
def approvals_approved_and_edited() -> Story:
    """Two tool nodes wait for approval: the first is approved as requested; for the second an edit that
    breaks the tool's args_schema is refused (it keeps waiting), then an edit that fits is approved and runs;
    a decision for a node that is not waiting is absorbed."""
    story = Story()
    story.accept(approval_wf())
    out = story.complete("draft", {"text": "reports"})
    assert types(out)[-1] == "node.approval_requested"
    story.feed(approval_decided("publish", "approve", id="decide-1", time=story.now()))
    story.absorb(approval_decided("publish", "approve", id="decide-1b", time=story.now()))
    out = story.complete("publish", {"files": ["reports/a.md"]})
    assert types(out)[-1] == "node.approval_requested"
    out = story.feed(approval_decided("archive", "approve", id="decide-2", time=story.now(), args={"path": 5}))
    assert types(out) == ["router.input", "node.approval_refused"]
    story.feed(approval_decided("archive", "approve", id="decide-3", time=story.now(), by="carol",
                                args={"path": "archive/final"}))
    story.complete("archive", {"files": []})
    return story


@scenario("failed")
def approval_rejected() -> Story:
    """A tool node waiting for approval is rejected: the node and the task fail naming who and why."""
    story = Story()
    story.accept(approval_wf())
    story.complete("draft", {"text": "reports"})
    out = story.feed(approval_decided("publish", "reject", id="decide-1", time=story.now(), by="bob",
                                      reason="wrong folder"))
    assert types(out) == ["router.input", "node.failed", "task.failed"]
    return story


@scenario("succeeded")
def revise_loop() -> Story:
    """A reviewer's `revise` verdict sends draft and review back twice (node.revision_requested, with the
    feedback and a new dispatch id per revision; the mock script continues across revisions, including a
    retry); a stale result from before a revision is absorbed; the third review approves."""
    rule = ReviseSpec(target="draft", when=Condition(field="verdict", equals="revise"), max_revisions=2)
    script = [{"text": f"d{i}"} for i in range(1, 6)]
    wf = valid(manifest([agent("draft", role="START"), agent("review", role="DECISION", agent_name="judge",
                                                             revise=rule), exit_("approved"),
                         exit_("rejected", "failed")],
                        [edge("draft", "review"), edge("review", "approved", field_="verdict", equals="approve"),
                         edge("review", "rejected", default=True)], mock={"draft": script}))
    story = Story()
    story.accept(wf)
    story.error("draft", "flaky", retryable=True)
    before = story[TASK].dispatch("draft")
    story.complete("draft", {"text": "d2"})
    out = story.complete("review", {"verdict": "revise", "notes": "more sources"})
    assert types(out)[-2:] == ["node.revision_requested", "node.dispatched"]
    story.absorb(completed(before, {"text": "stale"}, id="stale-draft", time=story.now()))
    story.complete("draft", {"text": "d3"})
    story.complete("review", {"verdict": "revise", "notes": "shorter"})
    story.complete("draft", {"text": "d4"})
    out = story.complete("review", {"verdict": "approve"})
    assert types(out)[-1] == "task.succeeded"
    return story


# --- fork -------------------------------------------------------------------------------------

@scenario({TASK: "succeeded", "fork-1": "succeeded", "fork-2": "succeeded"})
def fork_recorded_and_live() -> Story:
    """A finished task (a agent -> b tool -> c agent) is forked twice. fork-1, after a's result: b (a tool)
    runs again, c reuses its recorded output without a dispatch. fork-2, --live after b's result: c is
    dispatched to its model again."""
    wf = valid(manifest([agent("a", role="START"), tool("b", tool_name="stats", args={"text": "$nodes.a.text"}),
                         agent("c"), exit_("done")], chain("a", "b", "c", "done"), tools=TOOLS))
    story = Story()
    story.accept(wf)
    for node in ("a", "b", "c"):
        story.complete(node, {"text": f"said {node}"}, provider="mock", model="m-1")
    source = json_round_trip(story[TASK].records)

    def position(type_: str, node: str) -> int:
        return next(i for i, r in enumerate(source, start=1) if r.type == type_ and r.data.get("node") == node)

    for fork, at, live in (("fork-1", position("node.succeeded", "a"), False),
                           ("fork-2", position("node.succeeded", "b"), True)):
        data = {"source_task_id": TASK, "at": at, "live": live, "requested_by": "ops"}
        event = envelope("task.fork_requested", data, id=f"fork-request-{fork}", task_id=fork, correlation_id=fork,
                         time=story.now(T0 + timedelta(minutes=5)))
        story.feed(RouterInput(event, source=tuple(source)))
        story.absorb(RouterInput(event, source=tuple(source)))
    out = story.complete("b", {"text": "b again"}, task="fork-1")
    assert types(out) == ["router.input", "node.succeeded", "node.succeeded", "task.succeeded"]
    story.complete("c", {"text": "c live"}, task="fork-2", provider="mock", model="m-1")
    return story


# --- tool use by an agent ---------------------------------------------------------------------

USAGE = {"input_tokens": 100, "output_tokens": 10, "cache_read_tokens": 0, "cache_write_tokens": 0}


def tools_requested(story: Story, node: str, *calls: tuple[str, dict[str, Any]], thought: str) -> RouterInput:
    """The agent-runner's answer when the node's model asks for tools instead of answering."""
    dispatch = story[TASK].dispatch(node)
    d = dispatch.data
    data = {"dispatch_id": d["dispatch_id"], "node": node, "attempt": d["attempt"], "turn": d.get("turn", 0),
            "thought": thought, "calls": [{"id": f"toolu_{i}", "name": n, "args": a} for i, (n, a) in enumerate(calls)],
            "provider": "mock", "model": "m-1", "usage": USAGE}
    return RouterInput(envelope("node.tools_requested", data, id=f"ask-{d['dispatch_id']}", time=story.now()))


@scenario("succeeded")
def tool_use() -> Story:
    """An agent's model asks for three tools: one read succeeds, a tool it may not use is refused (never
    dispatched), one read fails and the error goes back to the model; the next turn carries the
    conversation, asks for a note, and the final answer adds up the usage of every turn. A redelivered
    tool request is absorbed. The manifest has its tool interfaces pinned, as the router pins them."""
    note = {"type": "object", "required": ["path", "text"], "additionalProperties": False,
            "properties": {"path": {"type": "string"}, "text": {"type": "string"}}}
    tools = {"read": ToolSpec(builtin="workspace_read"),
             "note": ToolSpec(builtin="workspace_append", description="Keep a note.", args_schema=note)}
    agents = {**AGENTS, "researcher": AgentSpec(provider="mock", model="m-1", prompt="research",
                                                tools=["read", "note"])}
    wf = valid(manifest([agent("research", role="START", agent_name="researcher"), exit_("done")],
                        chain("research", "done"), agents=agents, tools=tools)).with_tool_interfaces()
    story = Story()
    story.accept(wf)
    ask = tools_requested(story, "research", ("read", {"path": "brief.md"}), ("shell", {"cmd": "ls"}),
                          ("read", {"path": "missing.md"}), thought="let me look")
    out = story.feed(ask)
    assert types(out) == ["router.input", "node.tool_turn_recorded", "node.dispatched"]
    story.absorb(ask)
    story.complete("research", {"content": "the brief"})
    out = story.error("research", "no file 'missing.md' in the workspace", retryable=False)
    assert types(out) == ["router.input", "node.tool_returned", "node.dispatched"]
    assert out[2].data["kind"] == "agent" and out[2].data["turn"] == 1
    story.feed(tools_requested(story, "research", ("note", {"path": "n.md", "text": "brief read"}),
                               thought="noting it"))
    story.complete("research", {"path": "n.md", "bytes_written": 10, "size": 10})
    out = story.complete("research", {"text": "the answer"}, provider="mock", model="m-1", usage=USAGE)
    assert types(out) == ["router.input", "node.succeeded", "task.succeeded"]
    return story


# --- tenants, duplicates, rejection -----------------------------------------------------------

@scenario({TASK: "succeeded", "task-2": "succeeded"})
def admission_queued_then_admitted() -> Story:
    """Tenant acme may run one task at a time: task-1 starts, task-2 is queued (task.queued, its revision
    pinned); when task-1 ends the tenant's admission log admits task-2 (task.admitted), which starts and
    succeeds; a second admission is absorbed. Admissions come from router/admission.py, as the shell uses it."""
    limits = Limits(max_running=1, max_queued=5)
    wf = valid(manifest([agent("work", role="START"), exit_("done")], chain("work", "done")))
    tenant = TenantState()
    story = Story()
    for task_id in (TASK, "task-2"):
        inp = accepted(wf, id=f"accept-{task_id}", task_id=task_id, correlation_id=f"corr-{task_id}",
                       time=story.now())
        admission, logged = admit(tenant, limits, TENANT, task_id, 0)
        assert logged is not None
        tenant = evolve_tenant(tenant, envelope(logged.TYPE, logged.model_dump(mode="json"), task_id=task_id,
                                                id=derive_id(inp.event.id, "admission", 0)))
        story.feed(RouterInput(inp.event, inp.workflow, admission=admission))
    assert story["task-2"].state.status == "queued"
    end = story.complete("work", {"text": "one"})
    assert story[TASK].state.status == "succeeded"
    freed = release(tenant, limits, TASK, "succeeded")
    assert [task_id for task_id, data in freed if data.TYPE == "tenant.admitted"] == ["task-2"]
    cause = end[0].data["input"]
    # the shell logs tenant.released, tenant.admitted, then this input to task-2, ids derived from the cause
    admit_2 = envelope("task.admitted", {"reason": f"a running task of tenant '{TENANT}' ended"}, task_id="task-2",
                       id=derive_id(cause["id"], "admission", 2), time=story.clock,
                       correlation_id=cause["correlationid"])
    out = story.feed(RouterInput(admit_2))
    assert types(out) == ["router.input", "task.started", "node.dispatched"]
    story.absorb(RouterInput(envelope("task.admitted", {"reason": "again"}, task_id="task-2", id="admit-again",
                                      time=story.now())))
    story.complete("work", {"text": "two"}, task="task-2")
    return story


@scenario({TASK: "succeeded", "task-2": "deduplicated", "task-3": "running"})
def idempotency_key_deduplicated() -> Story:
    """Three requests of tenant acme with idempotency key order-42, the window one hour: task-1 starts and
    claims the key; task-2, a minute later, starts nothing and names task-1 (task.deduplicated); task-3, two
    hours later, is past the window and starts. The key's index comes from router/idempotency.py, as the shell
    uses it."""
    window = 3600.0
    wf = valid(manifest([agent("work", role="START"), exit_("done")], chain("work", "done")))
    key = KeyState()
    story = Story()
    for task_id, later in ((TASK, 0), ("task-2", 60), ("task-3", 7200)):
        inp = accepted(wf, id=f"accept-{task_id}", task_id=task_id, correlation_id=f"corr-{task_id}",
                       time=story.now(story.clock + timedelta(seconds=later)))
        event = inp.event.model_copy(update={"data": {**inp.event.data, "idempotency_key": "order-42"}})
        duplicate = duplicate_of(key, event, window)
        out = story.feed(RouterInput(event, inp.workflow, duplicate=duplicate))
        if duplicate is None:  # the shell claims the key for the task the request started
            key = evolve_key(key, envelope("tenant.key_claimed", {"idempotency_key": "order-42"}, task_id=task_id,
                                           id=derive_id(event.id, "key"), time=event.time))
        else:
            assert types(out) == ["router.input", "task.deduplicated"]
            assert out[1].data["original_task_id"] == TASK
    assert key.task_id == "task-3"
    story.absorb(accepted(wf, id="accept-task-2", task_id="task-2", time=story.now()))  # redelivered
    story.complete("work", {"text": "one"})
    return story


@scenario("succeeded")
def duplicates_absorbed() -> Story:
    """Inputs that change nothing leave no record: a redelivered and a resubmitted accept, a redelivered
    completion, another answer to a settled dispatch, a deadline after the result, a stale error of an
    earlier attempt, an event of another tenant, and anything after the end."""
    wf = valid(manifest([agent("start", role="START"), agent("middle"), exit_("done")],
                        chain("start", "middle", "done")))
    story = Story()
    accept = accepted(wf, time=story.now())
    story.feed(accept)
    story.absorb(accept)
    story.absorb(accepted(wf, id="accept-resubmitted", time=story.now()))
    start = story[TASK].dispatch("start")
    done = completed(start, {"text": "s"}, time=story.now())
    story.feed(done)
    story.absorb(done)
    story.absorb(completed(start, {"text": "other"}, id="second-answer", time=story.now()))
    story.absorb(expired(start, time=story.now()))
    first = story[TASK].dispatch("middle")
    story.error("middle", "rate limited", retryable=True)
    story.absorb(errored(first, "rate limited", id="error-again", time=story.now()))
    second = story[TASK].dispatch("middle")
    foreign = completed(second, {"text": "not yours"}, id="foreign", time=story.now())
    story.absorb(RouterInput(foreign.event.model_copy(update={"tenant": "other"})))
    story.complete("middle", {"text": "m"})
    story.absorb(completed(second, {"text": "after the end"}, id="after-end", time=story.now()))
    story.absorb(RouterInput(envelope("task.cancel_requested", {"reason": "too late"}, id="cancel-late",
                                      time=story.now())))
    return story


@scenario("rejected")
def rejected_unknown_workflow() -> Story:
    """A task naming a workflow the tenant never pushed is rejected by the router with a how-to; the same
    request once the workflow exists is absorbed (the task stays rejected)."""
    story = Story()
    story.accept(None, workflow="ghost")
    story.absorb(accepted(review_workflow(), id="accept-later", workflow="ghost", time=story.now()))
    return story


# --- files ------------------------------------------------------------------------------------

def to_json(records: Records) -> Any:
    """A file's content: the records of a single task as a list, of several as {task id: [records]}."""
    dumped = {task_id: [r.to_wire() for r in recs] for task_id, recs in records.items()}
    return next(iter(dumped.values())) if len(dumped) == 1 else dumped


def from_json(content: Any) -> Records:
    tasks = content if isinstance(content, dict) else {"": content}
    return {task_id: [Envelope.model_validate(r) for r in recs] for task_id, recs in tasks.items()}


def _line(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def text(content: Any) -> str:
    """JSON with one record per line: small, and a diff names the records that changed."""
    if isinstance(content, list):
        return "[\n" + ",\n".join(_line(r) for r in content) + "\n]\n"
    tasks = [f"{_line(task_id)}:[\n" + ",\n".join(_line(r) for r in recs) + "\n]" for task_id, recs in content.items()]
    return "{\n" + ",\n".join(tasks) + "\n}\n"


def index() -> dict[str, Any]:
    """golden/index.json: each file, what it shows, and the status each of its tasks must end in."""
    return {s.file: {"doc": " ".join(s.doc.split()),
                     "status": s.expect[TASK] if list(s.expect) == [TASK] else s.expect}
            for s in SCENARIOS.values()}


def statuses(records: Records) -> dict[str, str]:
    return {task_id: fold(recs).status for task_id, recs in records.items()}


def write(directory: Path = GOLDEN) -> list[Path]:
    """Build every scenario and write its file and the index (stale files are removed)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for s in SCENARIOS.values():
        records = s.records()
        assert statuses(records) == s.expect, f"{s.name}: {statuses(records)} != {s.expect}"
        path = directory / s.file
        path.write_text(text(to_json(records)))
        written.append(path)
    (directory / INDEX.name).write_text(json.dumps(index(), indent=1) + "\n")
    for stale in set(directory.glob("*.json")) - {*written, directory / INDEX.name}:
        stale.unlink()
    return written


if __name__ == "__main__":
    for path in write():
        print(f"{path.stat().st_size:>8}  {path.name}")
