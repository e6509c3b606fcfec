"""replay(records): re-running the recorded inputs reproduces the recorded decisions exactly.

The main scenario drives the real research-review example with its mock outputs, with redelivered,
duplicate and stale inputs mixed in, as the store and the bus would produce them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from router_testkit import (
    T0,
    TASK,
    Run,
    accepted,
    completed,
    dumps,
    errored,
    expired,
    json_round_trip,
    load_research_review,
    research_review_input,
    review_workflow,
    started,
    types,
)

from agent_engine.contracts.envelope import Envelope, derive_id
from agent_engine.router import core
from agent_engine.router.core import INPUT_RECORD, Unrestorable, fold, replay, restore

STATS = {"characters": 180, "words": 30, "top_words": ["engines", "workflow", "crash"]}


@dataclass
class Scenario:
    run: Run
    absorbed: list[str] = field(default_factory=list)
    """Ids of inputs that were delivered but changed nothing."""

    def feed(self, inp: core.RouterInput) -> list[Envelope]:
        out = self.run.feed(inp)
        assert out, f"{inp.event.type} {inp.event.id} was expected to change the task"
        return out

    def absorb(self, inp: core.RouterInput) -> None:
        assert self.run.feed(inp) == [], f"{inp.event.type} {inp.event.id} was expected to be absorbed"
        self.absorbed.append(inp.event.id)


def research_review(verdict: str = "approve") -> Scenario:
    """The whole research-review task, mock outputs fed back as node.completed inputs, with noise."""
    revision, wf = load_research_review()
    s = Scenario(Run())
    accept = accepted(wf, research_review_input(), workflow="research-review", revision=revision)
    s.feed(accept)
    s.absorb(accept)  # redelivered
    s.absorb(accepted(wf, research_review_input(), id="accept-resubmitted", revision=revision))

    gather = s.run.dispatch("gather_context")
    s.feed(completed(gather, STATS))
    s.absorb(completed(gather, STATS))  # redelivered completion
    s.absorb(expired(gather))  # its deadline passes after it completed

    interpretation = s.run.dispatch("interpretation")
    s.feed(completed(interpretation, wf.mock["interpretation"][0], provider="mock", model="claude-sonnet-4-5",
                     usage={"input_tokens": 120, "output_tokens": 40}))
    s.absorb(completed(interpretation, {"goal": "other"}, id="second-completion"))

    decomposition = s.run.dispatch("decomposition")
    s.feed(errored(decomposition, "rate limited", retryable=True))
    s.absorb(errored(decomposition, "rate limited", retryable=True, id="error-redelivered-late"))  # stale
    s.feed(completed(s.run.dispatch("decomposition"), wf.mock["decomposition"][0]))

    planning = s.run.dispatch("planning")
    s.feed(expired(planning))
    s.absorb(expired(planning, id="deadline-again"))
    s.absorb(errored(planning, "late error", retryable=False))
    s.feed(completed(s.run.dispatch("planning"), wf.mock["planning"][0]))

    s.feed(completed(s.run.dispatch("execution"), wf.mock["execution"][0]))
    review = s.run.dispatch("review")
    s.feed(completed(review, {**wf.mock["review"][0], "verdict": verdict}))
    s.absorb(completed(review, {"verdict": "approve"}, id="after-the-end"))
    s.absorb(errored(review, id="error-after-the-end"))
    return s


# --- the example runs as the workflow says ----------------------------------------------------

def test_research_review_runs_to_the_approved_exit() -> None:
    s = research_review()
    state = s.run.state

    assert state.status == "succeeded"
    assert state.exit_node == "approved"
    assert state.workflow == "research-review"
    assert {n: st.status for n, st in state.nodes.items()} == {
        "gather_context": "succeeded", "interpretation": "succeeded", "decomposition": "succeeded",
        "planning": "succeeded", "execution": "succeeded", "review": "succeeded",
        "approved": "reached", "rejected": "pending",
    }
    assert state.nodes["decomposition"].attempts == 2
    assert state.nodes["planning"].attempts == 2
    assert state.nodes["interpretation"].output == load_research_review()[1].mock["interpretation"][0]


def test_research_review_reject_verdict_fails_the_task() -> None:
    state = research_review("reject").run.state
    assert (state.status, state.exit_node) == ("failed", "rejected")
    assert state.nodes["rejected"].status == "reached"


def test_research_review_dispatches_carry_the_brief_and_mock_scripts() -> None:
    run = research_review().run
    dispatches = {r.data["node"]: r.data for r in run.records if r.type == "node.dispatched"}

    assert dispatches["gather_context"]["tool"]["args"] == {"text": research_review_input()["brief"]}
    assert dispatches["gather_context"]["tool"]["builtin"] == "text_stats"
    assert dispatches["review"]["agent"]["mock_responses"] == [{
        "verdict": "approve", "comments": "Meets the goal: concrete, within two pages, trade-offs stated.",
    }]
    assert dispatches["review"]["agent"]["output_schema_json"]["properties"]["verdict"]["enum"] == [
        "approve", "reject"]
    assert set(dispatches["review"]["context"]["upstream"]) == {
        "gather_context", "interpretation", "decomposition", "planning", "execution"}
    execution = next(r for r in run.records if r.type == "node.dispatched" and r.data["node"] == "execution")
    assert datetime.fromisoformat(execution.data["deadline"]) == execution.time + timedelta(seconds=120)


def test_absorbed_inputs_leave_no_record() -> None:
    s = research_review()
    inputs = [r for r in s.run.records if r.type == INPUT_RECORD]
    recorded_ids = {r.data["input"]["id"] for r in inputs}

    assert len(inputs) == len(recorded_ids) == 9
    assert recorded_ids == set(s.run.state.applied)
    redelivered = {"accept-1", f"done-{derive_id(TASK, 'gather_context', 1)}"}
    assert recorded_ids & set(s.absorbed) == redelivered
    assert len(s.absorbed) == 10


def test_every_decision_follows_its_input_record_and_names_it_as_cause() -> None:
    records = research_review().run.records
    cause = None
    for r in records:
        if r.type == INPUT_RECORD:
            cause = r.data["input"]["id"]
            assert r.causation_id == cause
        else:
            assert cause is not None
            assert r.causation_id == cause
    assert len({r.id for r in records}) == len(records)


# --- replay -----------------------------------------------------------------------------------

@pytest.mark.parametrize("verdict", ["approve", "reject"])
def test_replay_reproduces_the_records_exactly(verdict: str) -> None:
    records = research_review(verdict).run.records
    assert dumps(replay(records)) == dumps(records)


@pytest.mark.parametrize("verdict", ["approve", "reject"])
def test_replay_reproduces_records_read_back_from_json(verdict: str) -> None:
    records = research_review(verdict).run.records
    stored = json_round_trip(records)
    assert dumps(replay(stored)) == dumps(records)
    assert fold(stored) == fold(records)


def test_replay_needs_only_the_input_records_read_whole() -> None:
    """The inputs alone, each whole again (restore), replay into every decision; an input record that left its
    output to a decision cannot be replayed without it, and says so."""
    records = research_review().run.records
    whole = restore(json_round_trip(records))
    assert dumps(replay([r for r in whole if r.type == INPUT_RECORD])) == dumps(whole)
    with pytest.raises(Unrestorable, match="leaves its input's output to the record 1 after it"):
        replay([r for r in json_round_trip(records) if r.type == INPUT_RECORD])


def test_replay_of_a_prefix_reproduces_that_prefix() -> None:
    """After a crash the store holds a prefix of the task's records; it replays just as well."""
    records = json_round_trip(research_review().run.records)
    boundaries = [i for i, r in enumerate(records) if r.type == INPUT_RECORD] + [len(records)]
    for end in boundaries:
        assert dumps(replay(records[:end])) == dumps(records[:end])


def test_replay_reruns_the_router_rather_than_copying_records(monkeypatch: pytest.MonkeyPatch) -> None:
    records = research_review().run.records
    monkeypatch.setattr(core, "ENGINE_VERSION", "9.9.9")
    replayed = replay(records)

    started = next(r for r in replayed if r.type == "task.started")
    assert started.data["engine_version"] == "9.9.9"
    assert dumps(replayed) != dumps(records)


def test_replay_follows_the_recorded_inputs() -> None:
    """A changed recorded input changes what replay produces: decisions come from inputs."""
    records = restore(json_round_trip(research_review().run.records))
    review_input = next(r for r in records if r.type == INPUT_RECORD and r.data["input"]["type"] == "node.completed"
                        and r.data["input"]["data"]["node"] == "review")
    tampered_data = {**review_input.data, "input": {
        **review_input.data["input"],
        "data": {**review_input.data["input"]["data"], "output": {"verdict": "reject", "comments": "no"}},
    }}
    tampered = [r.model_copy(update={"data": tampered_data}) if r is review_input else r for r in records]

    replayed = replay(tampered)
    assert replayed[-1].type == "task.failed"
    assert replayed[-1].data["exit_node"] == "rejected"
    assert replayed[-2].data["output"]["verdict"] == "reject"
    assert dumps(replayed[:-3]) == dumps(records[:-3])  # everything before the changed input


def test_replay_uses_the_recorded_workflow_revision() -> None:
    """The manifest the task pinned is in its input record; replay does not look it up again."""
    records = json_round_trip(research_review().run.records)
    first = records[0]
    resolved = first.data["workflow"]
    changed = {**resolved, "revision": "other",
               "manifest": {**resolved["manifest"], "description": "edited after the task ran"}}
    records[0] = first.model_copy(update={"data": {**first.data, "workflow": changed}})

    started = next(r for r in replay(records) if r.type == "task.started")
    assert started.data["revision"] == "other"
    assert started.data["workflow_manifest"]["description"] == "edited after the task ran"


def test_replay_of_a_rejected_task() -> None:
    run = Run()
    run.feed(accepted(None, workflow="ghost"))
    run.feed(accepted(review_workflow(), id="accept-late"))  # absorbed
    assert types(run.records) == [INPUT_RECORD, "task.rejected"]
    assert dumps(replay(json_round_trip(run.records))) == dumps(run.records)


def test_replay_of_a_task_that_ran_out_of_attempts() -> None:
    run = started(review_workflow(), time=T0)
    for _ in range(3):
        run.feed(expired(run.dispatch()))
    assert run.state.status == "failed"
    assert dumps(replay(json_round_trip(run.records))) == dumps(run.records)


def test_replay_of_nothing_is_nothing() -> None:
    assert replay([]) == []


def test_the_replay_report_is_identical_for_untouched_records() -> None:
    from agent_engine.router.views import replay_report

    report = replay_report(research_review().run.records)
    assert report["identical"] and report["differences"] == [] and report["stored"] == report["replayed"]


def test_the_replay_report_names_a_tampered_decision() -> None:
    from agent_engine.router.views import replay_report

    records = list(research_review().run.records)
    index = next(i for i, r in enumerate(records) if r.type == "node.dispatched" and i > 3)
    records[index] = records[index].model_copy(update={"data": {**records[index].data, "attempt": 9}})
    report = replay_report(records)
    assert not report["identical"]
    [diff] = report["differences"]
    assert diff["index"] == index and diff["fields"] == ["data"] and diff["stored_type"] == "node.dispatched"
