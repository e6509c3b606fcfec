"""The token and cost ledger: exact sums per task, tenant, model and day; each event counted once."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import Usage
from agent_engine.telemetry.ledger import Ledger
from agent_engine.testkit.events import llm_called, other


def ledger_of(*events: Envelope) -> Ledger:
    ledger = Ledger()
    for event in events:
        ledger.observe(event)
    return ledger


def test_costs_sum_exactly_per_task() -> None:
    ledger = ledger_of(llm_called(cost="0.1"), llm_called(cost="0.2"), llm_called(task="t2", cost="0.7"))
    line = ledger.query(task_id="t1")
    assert line["cost_usd"] == "0.3"  # 0.1 + 0.2 in floats would be 0.30000000000000004
    assert Decimal(line["cost_usd"]) == Decimal("0.3")
    assert line["calls"] == 2
    assert (line["input_tokens"], line["output_tokens"]) == (200, 20)
    assert (line["cache_read_tokens"], line["cache_write_tokens"]) == (80, 10)
    assert ledger.query(task_id="t2")["cost_usd"] == "0.7"


def test_a_task_line_lists_each_call_and_sums_each_node() -> None:
    ledger = ledger_of(llm_called(node="draft", cost="0.1"), llm_called(node="review", cost="0.02"),
                       llm_called(node="draft", cost="0.3"), llm_called(task="t2", node="draft", cost="9"))
    line = ledger.query(task_id="t1")
    assert [(c["node"], c["cost_usd"]) for c in line["call_log"]] == [("draft", "0.1"), ("review", "0.02"),
                                                                       ("draft", "0.3")]
    assert {n: (v["calls"], v["cost_usd"]) for n, v in line["nodes"].items()} == {"draft": (2, "0.4"),
                                                                                   "review": (1, "0.02")}
    assert sum(Decimal(c["cost_usd"]) for c in line["call_log"]) == Decimal(line["cost_usd"])


def test_many_small_costs_stay_exact() -> None:
    ledger = ledger_of(*(llm_called(cost="0.000003") for _ in range(1000)))
    assert ledger.query(task_id="t1")["cost_usd"] == "0.003000"
    assert Decimal(ledger.query(task_id="t1")["cost_usd"]) == Decimal("0.003")


def test_lines_per_tenant_model_and_day() -> None:
    ledger = ledger_of(
        llm_called(task="t1", tenant="acme", cost="1.5", day=1),
        llm_called(task="t2", tenant="acme", model="claude-haiku-4-5", cost="0.25", day=2),
        llm_called(task="t3", tenant="globex", cost="2", day=2),
    )
    assert ledger.query(tenant="acme")["cost_usd"] == "1.75"
    assert ledger.query(tenant="acme")["calls"] == 2
    assert ledger.query(tenant="globex")["cost_usd"] == "2"
    overall = ledger.query()
    assert {k: v["cost_usd"] for k, v in overall["tenants"].items()} == {"acme": "1.75", "globex": "2"}
    assert {k: v["cost_usd"] for k, v in overall["models"].items()} == {
        "anthropic/claude-sonnet-4-5": "3.5", "anthropic/claude-haiku-4-5": "0.25"}
    assert {k: v["cost_usd"] for k, v in overall["days"].items()} == {"2026-03-01": "1.5", "2026-03-02": "2.25"}
    assert overall["events_by_type"] == {"llm.called": 3}


def test_a_duplicate_event_id_is_counted_once() -> None:
    event = llm_called(cost="0.5", event_id="same")
    ledger = ledger_of(event, event, llm_called(cost="0.5", event_id="same", task="t1"))
    line = ledger.query(task_id="t1")
    assert (line["calls"], line["cost_usd"], line["input_tokens"]) == (1, "0.5", 100)
    assert ledger.query()["events_by_type"] == {"llm.called": 1}


def test_unpriced_calls_are_counted_not_guessed() -> None:
    ledger = ledger_of(llm_called(cost="0.4"), llm_called(model="claude-nova-9", cost="unpriced"))
    line = ledger.query(task_id="t1")
    assert (line["calls"], line["unpriced_calls"], line["cost_usd"]) == (2, 1, "0.4")
    assert line["input_tokens"] == 200  # tokens of unpriced calls still count
    assert ledger.query()["models"]["anthropic/claude-nova-9"]["unpriced_calls"] == 1


def test_mock_calls_are_counted_and_cost_nothing() -> None:
    ledger = ledger_of(llm_called(provider="mock", model="mock-1", cost="0"), llm_called(cost="0.2"))
    line = ledger.query(task_id="t1")
    assert (line["calls"], line["mock_calls"], line["cost_usd"]) == (2, 1, "0.2")
    assert ledger.query()["models"]["mock/mock-1"]["mock_calls"] == 1


def test_events_by_type_counts_only_the_events_folded_into_lines() -> None:
    ledger = ledger_of(other("task.started"), other("node.completed"), other("node.completed"), llm_called())
    # events_by_type counts what was folded into lines (as in PostgreSQL); every message counts by subject
    assert ledger.query()["events_by_type"] == {"llm.called": 1}
    assert ledger.query(task_id="t1")["calls"] == 1


def test_an_unknown_task_or_tenant_is_an_empty_line() -> None:
    ledger = ledger_of(llm_called())
    empty: dict[str, Any] = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0,
                             "cache_write_tokens": 0, "cost_usd": "0", "unpriced_calls": 0, "mock_calls": 0}
    assert ledger.query(task_id="nope") == {"task_id": "nope", **empty, "nodes": {}, "call_log": []}
    assert ledger.query(tenant="nobody") == {"tenant": "nobody", **empty}
    assert "nope" not in ledger.by_task and "nope" not in ledger.calls  # a query does not create lines


def test_query_answers_are_json() -> None:
    ledger = ledger_of(llm_called(cost="0.000001"), llm_called(tenant="globex", cost="unpriced"))
    for answer in (ledger.query(), ledger.query(task_id="t1"), ledger.query(tenant="acme")):
        assert json.loads(json.dumps(answer)) == answer


def test_messages_are_counted_by_subject_type_without_parsing() -> None:
    ledger = Ledger()
    for subject in ("ae.acme.node.dispatched.agent", "ae.acme.node.dispatched.agent", "ae.beta.task.started"):
        ledger.count(subject)
    assert ledger.query()["messages_by_subject"] == {"node.dispatched.agent": 2, "task.started": 1}


def test_a_cost_that_is_no_decimal_is_refused_and_changes_nothing() -> None:
    """A forged llm.called must not break the ledger, nor hide a later genuine event with its id."""
    ledger = ledger_of(llm_called(cost="0.5"))
    bad = llm_called(cost="lots", event_id="e-x")
    try:
        ledger.observe(bad)
    except ValueError as exc:
        assert "cost_usd 'lots' is not a decimal" in str(exc)
    else:
        raise AssertionError("an llm.called costing 'lots' was folded")
    assert ledger.query()["tenants"]["acme"]["cost_usd"] == "0.5"
    ledger.observe(llm_called(cost="0.25", event_id="e-x"))
    assert ledger.query()["tenants"]["acme"]["cost_usd"] == "0.75"


def test_a_task_query_scoped_to_another_tenant_reads_as_a_task_with_no_calls() -> None:
    ledger = ledger_of(llm_called(task="t-beta", tenant="beta", cost="2"))
    assert ledger.query("t-beta", "beta")["cost_usd"] == "2"
    assert ledger.query("t-beta", "alpha") == ledger.query("no-such-task", "alpha") | {"task_id": "t-beta"}


def test_another_tenants_call_naming_a_task_id_never_shows_in_its_owners_line() -> None:
    """Found by the fuzz suite: an intruder's llm.called naming a victim's task id was added to its line."""
    ledger = ledger_of(llm_called(task="t-v", tenant="victim", cost="1"),
                       llm_called(task="t-v", tenant="intruder", cost="1000"))
    assert ledger.query("t-v", "victim")["cost_usd"] == "1"
    assert ledger.query("t-v", "intruder")["cost_usd"] == "1000"
    assert "several tenants (intruder, victim)" in ledger.query("t-v")["error"]
    assert ledger_of(llm_called(task="t-1", cost="2")).query("t-1")["cost_usd"] == "2"  # one tenant: no need to ask


def test_a_forgotten_tenants_task_lines_go_and_read_as_erased() -> None:
    ledger = ledger_of(llm_called(task="a", tenant="gone"), llm_called(task="b", tenant="gone"),
                       llm_called(task="c", tenant="kept"))
    assert ledger.forget("gone", ["a"]) == 1  # one data subject's task
    assert ledger.query("a")["erased"] is True and ledger.query("b")["calls"] == 1
    assert ledger.forget("gone", None) == 1  # then the whole tenant
    assert ledger.query("b", "gone")["erased"] is True and "nodes" not in ledger.query("b", "gone")
    assert ledger.query("c")["calls"] == 1  # another tenant's line stays
    assert ledger.query(tenant="gone")["calls"] == 2  # totals name no task, and keep their sums


def test_tokens_out_of_range_are_refused() -> None:
    """A forged count beyond any call's would overflow the sums of every tenant (in PostgreSQL, bigint)."""
    for usage in (Usage(input_tokens=10**30), Usage(output_tokens=-1)):
        try:
            Ledger().observe(llm_called(usage=usage))
        except ValueError as exc:
            assert "out of range" in str(exc)
        else:
            raise AssertionError(f"{usage} was folded")
