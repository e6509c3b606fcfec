"""Idempotency keys in the pure core: a request whose key its tenant used for another task within the window
starts nothing and names that task; past the window, or with no key, a request starts its own task."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from router_testkit import T0, Run, accepted, dumps, envelope, json_round_trip, linear_workflow, types

from agent_engine.contracts.envelope import Envelope
from agent_engine.router.core import RouterInput, input_from_record, replay
from agent_engine.router.idempotency import (
    DEFAULT_WINDOW_S,
    Duplicate,
    KeyState,
    duplicate_of,
    evolve_key,
    fold_key,
    is_key_aggregate,
    key_aggregate,
    key_of,
    parse_window,
)
from agent_engine.router.views import show

HOUR = 3600.0


def request(task_id: str, seconds: float = 0, key: str | None = "order-42", tenant: str = "acme") -> Envelope:
    data = {"workflow": "wf", "input": {}, **({"idempotency_key": key} if key else {})}
    return envelope("task.accepted", data, id=f"accept-{task_id}", task_id=task_id, tenant=tenant,
                    time=T0 + timedelta(seconds=seconds))


def claimed(task_id: str, seconds: float = 0) -> KeyState:
    return evolve_key(KeyState(), envelope("tenant.key_claimed", {"idempotency_key": "order-42"}, id=f"k-{task_id}",
                                           task_id=task_id, time=T0 + timedelta(seconds=seconds)))


def test_a_key_claimed_within_the_window_names_the_first_task() -> None:
    state = claimed("task-1")
    assert duplicate_of(state, request("task-2", 60), HOUR) == Duplicate("task-1", "2025-03-01T09:00:00+00:00")
    assert duplicate_of(state, request("task-2", HOUR), HOUR) is not None  # the window's end is inside it


def test_past_the_window_with_no_claim_or_with_deduplication_off_a_request_starts_its_own_task() -> None:
    assert duplicate_of(claimed("task-1"), request("task-2", HOUR + 1), HOUR) is None
    assert duplicate_of(KeyState(), request("task-2"), HOUR) is None
    assert duplicate_of(claimed("task-1"), request("task-2", 60), 0) is None
    assert duplicate_of(claimed("task-1"), request("task-1", 60), HOUR) is None  # its own claim


def test_a_request_timed_a_little_before_the_claim_still_counts_as_a_repeat() -> None:
    """Two guardrails replicas' clocks may disagree: the window is a distance in time, either way."""
    assert duplicate_of(claimed("task-1", 5), request("task-2", 0), HOUR) is not None


def test_the_last_claim_is_what_the_key_names() -> None:
    records = [envelope("tenant.key_claimed", {"idempotency_key": "k"}, id=f"k{i}", task_id=f"task-{i}",
                        time=T0 + timedelta(hours=i * 2)) for i in (1, 2)]
    state = fold_key(records)
    assert (state.task_id, state.claimed_at, state.version) == ("task-2", T0 + timedelta(hours=4), 2)


def test_key_aggregates_are_per_tenant_and_never_a_task_or_an_admission_log() -> None:
    assert key_aggregate("acme", "order-42") == "tenant:acme/key/order-42"
    assert key_aggregate("acme", "k") != key_aggregate("beta", "k")
    assert is_key_aggregate(key_aggregate("acme", "a/key/b")) and not is_key_aggregate("tenant:acme")
    assert key_of(request("t")) == "order-42" and key_of(request("t", key=None)) is None
    assert key_of(envelope("task.cancel_requested", {"idempotency_key": "k"}, id="c")) is None


@pytest.mark.parametrize(("raw", "window"), [("", DEFAULT_WINDOW_S), ("600", 600.0), ("0", 0.0)])
def test_the_window_comes_from_the_environment(raw: str, window: float) -> None:
    assert parse_window(raw) == window


@pytest.mark.parametrize(("raw", "problem"), [("a day", "not a number"), ("-1", "negative")])
def test_a_bad_window_is_named(raw: str, problem: str) -> None:
    with pytest.raises(SystemExit, match=problem):
        parse_window(raw)


# --- the task's side ------------------------------------------------------------------------

def deduplicated_run() -> Run:
    inp = accepted(linear_workflow(), id="accept-2", task_id="task-2")
    event = inp.event.model_copy(update={"data": {**inp.event.data, "idempotency_key": "order-42"}})
    run = Run()
    run.feed(RouterInput(event, inp.workflow, duplicate=Duplicate("task-1", "2025-03-01T08:59:00+00:00")))
    return run


def test_a_duplicate_request_records_only_which_task_it_repeats() -> None:
    run = deduplicated_run()
    assert types(run.records) == ["router.input", "task.deduplicated"]
    assert run.records[1].task_id == "task-2"
    assert run.records[1].data == {
        "original_task_id": "task-1", "idempotency_key": "order-42",
        "reason": "idempotency key 'order-42' of tenant 'acme' names task task-1 since 2025-03-01T08:59:00+00:00; "
                  "this request starts nothing"}
    assert run.state.status == "deduplicated" and run.state.terminal and run.state.open_dispatches() == []
    shown = show(run.records)
    assert (shown["status"], shown["duplicate_of"], shown["workflow"]) == ("deduplicated", "task-1", "wf")


def test_a_duplicate_is_decided_again_the_same_way_and_its_redelivery_changes_nothing() -> None:
    run = deduplicated_run()
    assert input_from_record(json_round_trip(run.records)[0]).duplicate == Duplicate("task-1",
                                                                                   "2025-03-01T08:59:00+00:00")
    assert dumps(replay(json_round_trip(run.records))) == dumps(run.records)
    redelivered = input_from_record(run.records[0])
    assert run.feed(redelivered) == []
    assert run.feed(accepted(linear_workflow(), id="accept-again", task_id="task-2")) == []  # a new request too


def test_a_duplicate_of_an_unknown_workflow_still_names_the_first_task() -> None:
    """The key decides first: the first request's task is the answer, whatever the registry holds now."""
    inp = accepted(None, id="accept-3", task_id="task-3", workflow="gone")
    event = inp.event.model_copy(update={"data": {**inp.event.data, "idempotency_key": "k"}})
    run = Run()
    assert types(run.feed(RouterInput(event, duplicate=Duplicate("task-1", "x")))) == [
        "router.input", "task.deduplicated"]


# --- a property: what the shell and the core do together ------------------------------------------

@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", None]), st.integers(0, 3 * 3600)), min_size=1, max_size=12),
       st.sampled_from([0.0, 600.0, HOUR]))
def test_within_a_window_a_key_starts_one_task_and_every_repeat_names_it(
        requests: list[tuple[str | None, int]], window: float) -> None:
    """Requests with random keys at random times (in arrival order, so times may go back a little as across
    guardrails replicas), each decided as the shell does: look the key up, decide, claim on a start. Every
    request either starts its own task or names a started task with its key, claimed within the window of
    the request; with the window off, every request starts."""
    wf = linear_workflow()
    keys: dict[str, KeyState] = {}
    started: dict[str, tuple[str | None, int]] = {}
    for index, (key, seconds) in enumerate(requests):
        task_id = f"task-{index}"
        inp = accepted(wf, id=f"accept-{index}", task_id=task_id, time=T0 + timedelta(seconds=seconds))
        event = inp.event.model_copy(update={"data": {**inp.event.data, **({"idempotency_key": key} if key else {})}})
        found = duplicate_of(keys.get(key or "", KeyState()), event, window) if key else None
        run = Run()
        out = run.feed(RouterInput(event, inp.workflow, duplicate=found))
        if found is None:
            assert "task.started" in types(out)
            started[task_id] = (key, seconds)
            if key and window > 0:
                keys[key] = evolve_key(keys.get(key, KeyState()), envelope(
                    "tenant.key_claimed", {"idempotency_key": key}, id=f"k-{index}", task_id=task_id,
                    time=event.time))
            continue
        assert window > 0 and key is not None
        assert types(out) == ["router.input", "task.deduplicated"] and run.state.duplicate_of == found.original_task_id
        original_key, original_seconds = started[found.original_task_id]
        assert original_key == key and abs(seconds - original_seconds) <= window
    # two tasks a key started are more than a window apart, measured from the request that claimed the key
    for key in {k for k, _ in started.values() if k}:
        times = [s for k, s in started.values() if k == key]
        claimed_at = times[0]
        for later in times[1:]:
            assert window == 0 or abs(later - claimed_at) > window
            claimed_at = later
