"""A task's budget in the router core: reserve the worst case before each agent dispatch, settle once on the
result (or at the task's end), wait or fail when it does not fit, alert once; no budget, no records."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from budget_testkit import PRICES, budgeted, cost, of_type, parallel_wf, priced, start
from router_testkit import (
    Run,
    accepted,
    completed,
    dumps,
    envelope,
    expired,
    json_round_trip,
    linear_workflow,
    started,
    types,
)

from agent_engine.contracts.manifest import AgentSpec, Fallback, WorkflowManifest
from agent_engine.router.admission import Admission
from agent_engine.router.budgets import REPAIR_NOTE_BYTES, models_for, worst_case
from agent_engine.router.core import RouterInput, fold, replay

BUDGET_TYPES = {"budget.opened", "budget.reserved", "budget.settled", "budget.exceeded", "budget.alert"}


def reserved(run: Run) -> list[dict]:  # type: ignore[type-arg]
    return of_type(run.records, "budget.reserved")


def settled(run: Run) -> list[dict]:  # type: ignore[type-arg]
    return of_type(run.records, "budget.settled")


# --- the formula --------------------------------------------------------------------------------

def test_the_worst_case_is_every_call_with_max_tokens_out_and_every_input_byte_a_token_at_the_dearest_price() -> None:
    agent = AgentSpec(model="m-1", max_tokens=100, max_repairs=1)
    prompt = 1000
    # input at max(input 1, cache write 1.25), output at 2 USD per million; the repair's prompt adds the reply
    # (max_tokens) and the problem note
    first = (prompt * Decimal("1.25") + 100 * 2) / 1_000_000
    repair = ((prompt + 100 + REPAIR_NOTE_BYTES) * Decimal("1.25") + 100 * 2) / 1_000_000
    assert worst_case(PRICES, agent, ["m-1", "mock-1"], prompt) == first + repair
    assert worst_case(PRICES, agent, ["m-1"], prompt, summarise=True) == first + repair + first


def test_a_model_without_a_price_has_no_bound_and_fallbacks_are_priced_too() -> None:
    agent = AgentSpec(model="m-1", fallbacks=[Fallback(provider="openai", model="gpt-unknown")])
    models = models_for(agent, "m-1")
    assert models == ["m-1", "gpt-unknown", "mock-1"]
    assert worst_case(PRICES, agent, models, 10) == "gpt-unknown"


# --- reserve and settle -------------------------------------------------------------------------

def test_each_agent_dispatch_reserves_its_worst_case_first_and_carries_it() -> None:
    run = start(budgeted(linear_workflow(), "1"))
    assert types(run.records)[:4] == ["router.input", "task.started", "budget.opened", "budget.reserved"]
    opened = of_type(run.records, "budget.opened")[0]
    assert (opened["limit_usd"], opened["on_exceed"], opened["prices"]["version"]) == ("1", "fail", "test-1")
    [first] = reserved(run)
    dispatch = run.dispatch("start")
    assert dispatch.data["budget_usd"] == first["amount_usd"] == first["reserved_usd"]
    assert first["models"] == ["m-1", "mock-1"] and first["spent_usd"] == "0"


def test_the_result_settles_the_reservation_with_what_its_calls_cost() -> None:
    run = start(budgeted(linear_workflow(), "1"))
    out = run.feed(completed(run.dispatch("start"), **cost("0.0031")))
    assert types(out)[:3] == ["router.input", "budget.settled", "node.succeeded"]
    done = settled(run)[0]
    assert (done["cost_usd"], done["outcome"], done["spent_usd"], done["reserved_usd"]) == (
        "0.0031", "result", "0.0031", "0")
    assert done["released_usd"] == reserved(run)[0]["amount_usd"]
    assert run.state.budget is not None and run.state.budget.spent == Decimal("0.0031")


def test_a_redelivered_result_settles_nothing_twice() -> None:
    run = start(budgeted(linear_workflow(), "1"))
    result = completed(run.dispatch("start"), **cost("0.002"))
    run.feed(result)
    assert run.feed(result) == []
    assert len(settled(run)) == 1


def test_a_late_result_after_a_deadline_settles_its_own_reservation_and_the_retry_keeps_its_own() -> None:
    run = start(budgeted(linear_workflow(max_attempts=2), "1"))
    first = run.dispatch("start")
    run.feed(expired(first))
    second = run.dispatch("start")
    assert [r["dispatch_id"] for r in reserved(run)] == [first.data["dispatch_id"], second.data["dispatch_id"]]
    run.feed(completed(first, **cost("0.001")))  # the superseded attempt's answer is taken
    run.feed(completed(second, **cost("0.002")))  # stale for the graph, but it settles the retry's reservation
    assert [(s["dispatch_id"], s["cost_usd"]) for s in settled(run)] == [
        (first.data["dispatch_id"], "0.001"), (second.data["dispatch_id"], "0.002")]
    assert run.state.budget is not None and run.state.budget.spent == Decimal("0.003")


def test_a_task_that_ends_settles_what_is_still_reserved_at_its_full_amount() -> None:
    run = start(budgeted(parallel_wf(2), "1"))
    run.feed(completed(run.dispatch("plan")))
    run.feed(completed(run.dispatch("fan")))
    open_ids = {r["dispatch_id"]: r["amount_usd"] for r in reserved(run)}
    out = run.feed(RouterInput(envelope("task.cancel_requested", {"reason": "no"}, id="cancel-1")))
    unanswered = [r.data for r in out if r.type == "budget.settled"]
    assert {s["dispatch_id"]: s["cost_usd"] for s in unanswered} == open_ids
    assert {s["outcome"] for s in unanswered} == {"unanswered"}
    assert types(out)[-1] == "task.cancelled"
    late = run.feed(completed(run.records[[r.type for r in run.records].index("node.dispatched", 3)], **cost("0.1")))
    assert "budget.settled" not in types(late)  # settled once already


# --- over the budget ----------------------------------------------------------------------------

def test_fail_stops_the_node_before_the_dispatch_that_could_exceed_the_budget() -> None:
    probe = start(budgeted(linear_workflow(), "1"))
    one = Decimal(reserved(probe)[0]["amount_usd"])
    run = start(budgeted(linear_workflow(), str(one + one / 2)))
    run.feed(completed(run.dispatch("start"), **cost(one * 3 / 4)))  # three quarters of one left: not enough
    assert [r["node"] for r in reserved(run)] == ["start"]
    [exceeded] = of_type(run.records, "budget.exceeded")
    assert exceeded["node"] == "middle" and exceeded["then"] == "fail"
    assert "needs up to $" in exceeded["reason"] and "of the task's budget of $" in exceeded["reason"]
    assert types(run.records)[-2:] == ["node.failed", "task.failed"]
    assert run.state.status == "failed" and "over budget" in run.state.reason
    assert not any(r.type == "node.dispatched" and r.data["node"] == "middle" for r in run.records)


def test_wait_holds_the_node_until_a_reservation_settles_and_leaves_room() -> None:
    probe = start(budgeted(parallel_wf(3), "1"))
    probe.feed(completed(probe.dispatch("plan")))
    probe.feed(completed(probe.dispatch("fan")))
    one = Decimal(reserved(probe)[0]["amount_usd"])
    run = start(budgeted(parallel_wf(3), str(one * 2 + one / 2), on_exceed="wait"))
    run.feed(completed(run.dispatch("plan")))
    out = run.feed(completed(run.dispatch("fan")))
    assert [r["node"] for r in reserved(run)] == ["w0", "w1"]
    assert [r.data["then"] for r in out if r.type == "budget.exceeded"] == ["wait"]
    assert run.state.status == "waiting" and run.state.nodes["w2"].status == "budget_wait"
    assert "needs up to $" in run.state.reason
    out = run.feed(completed(run.dispatch("w0"), **cost(one / 4)))  # frees one reservation, spends a quarter
    assert types(out)[1:] == ["budget.settled", "node.succeeded", "budget.reserved", "node.dispatched"]
    assert run.state.status == "running"
    assert run.dispatch("w2").data["budget_usd"] == reserved(run)[-1]["amount_usd"]


def test_wait_with_nothing_left_to_wait_for_fails() -> None:
    probe = start(budgeted(linear_workflow(), "1"))
    one = Decimal(reserved(probe)[0]["amount_usd"])
    run = start(budgeted(linear_workflow(), str(one - Decimal("0.000001")), on_exceed="wait"))
    [exceeded] = of_type(run.records, "budget.exceeded")
    assert exceeded["then"] == "fail" and "cannot wait" in exceeded["reason"]
    assert run.state.status == "failed"


def test_a_waiting_node_fails_once_the_last_reservation_settles_without_room() -> None:
    probe = start(budgeted(parallel_wf(2), "1"))
    probe.feed(completed(probe.dispatch("plan")))
    probe.feed(completed(probe.dispatch("fan")))
    one = Decimal(reserved(probe)[0]["amount_usd"])
    run = start(budgeted(parallel_wf(2), str(one + one / 2), on_exceed="wait"))
    run.feed(completed(run.dispatch("plan")))
    run.feed(completed(run.dispatch("fan")))
    assert run.state.nodes["w1"].status == "budget_wait"
    run.feed(completed(run.dispatch("w0"), **cost(one)))  # spent all it reserved: no room for w1, ever
    assert [e["then"] for e in of_type(run.records, "budget.exceeded")] == ["wait", "fail"]
    assert run.state.status == "failed"
    assert run.state.budget is not None and run.state.budget.spent <= run.state.budget.limit


def test_an_alert_is_recorded_once_when_the_spend_reaches_its_share() -> None:
    run = start(budgeted(linear_workflow(), "1", alert_at=0.5))
    run.feed(completed(run.dispatch("start"), **cost("0.6")))
    run.feed(completed(run.dispatch("middle"), **cost("0.001")))
    alerts = of_type(run.records, "budget.alert")
    assert alerts == [{"scope": "task", "spent_usd": "0.6", "limit_usd": "1", "alert_at": 0.5}]


# --- no budget, replay ----------------------------------------------------------------------------

def test_without_a_budget_nothing_is_reserved_and_dispatches_are_as_before() -> None:
    run = started(linear_workflow())  # the shell gives no prices when neither the workflow nor the day budgets ask
    run.feed(completed(run.dispatch("start")))
    assert not BUDGET_TYPES & set(types(run.records))
    assert all("budget_usd" not in r.data for r in run.records if r.type == "node.dispatched")
    assert "budget" not in run.records[0].data["workflow"]["manifest"]
    assert "prices" not in run.records[0].data and "rooms" not in run.records[0].data


def test_a_budgeted_task_replays_to_the_same_records_and_folds_from_them() -> None:
    run = start(budgeted(parallel_wf(3), "0.05", on_exceed="wait", alert_at=0.1))
    run.feed(completed(run.dispatch("plan")))
    run.feed(completed(run.dispatch("fan")))
    for node in ("w0", "w1", "w2"):
        if run.state.nodes[node].status == "dispatched":
            run.feed(completed(run.dispatch(node), **cost("0.004")))
    stored = json_round_trip(run.records)
    assert dumps(replay(stored)) == dumps(stored)
    assert fold(stored).budget == run.state.budget


def requested(wf: WorkflowManifest, budget_usd: str) -> Run:
    """A run started by a request that carries its own budget."""
    inp = priced(accepted(wf))
    run = Run()
    run.feed(replace(inp, event=inp.event.model_copy(update={"data": {**inp.event.data, "budget_usd": budget_usd}})))
    return run


def test_a_budget_given_with_the_request_applies_and_the_lower_of_two_wins() -> None:
    alone = requested(linear_workflow(), "0.001")  # too little for the first dispatch's worst case
    assert of_type(alone.records, "budget.opened")[0]["limit_usd"] == "0.001"
    assert alone.state.status == "failed" and "of the task's budget of $0.001 is left" in alone.state.reason
    both = requested(budgeted(linear_workflow(), "1", on_exceed="wait"), "0.5")
    opened = of_type(both.records, "budget.opened")[0]
    assert (opened["limit_usd"], opened["on_exceed"]) == ("0.5", "wait") and both.state.status == "running"


def test_a_queued_task_starts_with_its_requests_budget_and_user_once_admitted() -> None:
    inp = priced(accepted(linear_workflow()))
    event = inp.event.model_copy(update={"data": {**inp.event.data, "budget_usd": "0.5", "requested_by": "alice"}})
    run = Run()
    queued = run.feed(replace(inp, event=event, admission=Admission("queue", "at the limit", 1)))
    assert queued[-1].type == "task.queued" and (queued[-1].data["budget_usd"], queued[-1].data["requested_by"]) == (
        "0.5", "alice")
    run.feed(priced(RouterInput(envelope("task.admitted", {"reason": "a slot freed"}, id="admit-1"))))
    opened = of_type(run.records, "budget.opened")[0]
    assert (opened["limit_usd"], opened["user"]) == ("0.5", "alice") and run.state.status == "running"
    stored = json_round_trip(run.records)
    assert dumps(replay(stored)) == dumps(stored)


# --- the output gate's grounding judge ----------------------------------------------------------------

def judged_wf(model: str = "m-judge", max_tokens: int = 256) -> WorkflowManifest:
    from agent_engine.contracts.policy import JudgeRule, OutputPolicy, WorkflowPolicy

    judge = JudgeRule(provider="mock", model=model, max_tokens=max_tokens)
    return linear_workflow().model_copy(update={"policy": WorkflowPolicy(output=OutputPolicy(judge=judge))})


def test_a_dispatch_whose_output_is_judged_reserves_the_judges_worst_case_too() -> None:
    from agent_engine.contracts.events import NodeDispatched
    from agent_engine.router.budgets import judge_worst_case, prompt_bytes

    plain, judged = start(budgeted(linear_workflow(), "1")), start(budgeted(judged_wf(), "1"))
    [alone], [both] = reserved(plain), reserved(judged)
    built = NodeDispatched.model_validate(judged.dispatch("start").data)
    assert built.check_output is not None and built.check_output.judge is not None
    assert built.agent is not None
    size = prompt_bytes(built.agent, built.context, built.agent.output_schema_json, built.agent.tool_defs)
    extra = judge_worst_case(PRICES, built.check_output.judge, built.agent, size)
    assert isinstance(extra, Decimal) and extra > 0
    assert Decimal(both["amount_usd"]) == Decimal(alone["amount_usd"]) + extra
    assert built.budget_usd == both["amount_usd"]  # the node and its judge spend within it


def test_a_judge_model_without_a_price_fails_the_node_naming_it() -> None:
    run = start(budgeted(judged_wf(model="unpriced-judge"), "1"))
    [exceeded] = of_type(run.records, "budget.exceeded")
    assert "model 'unpriced-judge'" in exceeded["reason"] and exceeded["then"] == "fail"


def test_the_judges_call_listed_with_the_nodes_is_settled_with_them() -> None:
    run = start(budgeted(judged_wf(), "1"))
    dispatch = run.dispatch("start")
    calls = [{"provider": "mock", "model": "mock-1", "outcome": "valid", "cost_usd": c} for c in ("0.003", "0.001")]
    checked = completed(dispatch, {"text": "ok"}, llm_calls=calls)
    checked = replace(checked, event=checked.event.model_copy(update={"type": "node.output_checked"}))
    run.feed(checked)
    [done] = of_type(run.records, "budget.settled")
    assert done["cost_usd"] == "0.004"
