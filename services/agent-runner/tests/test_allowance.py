"""Agent runner: the reservation a dispatch carries is enforced; no call starts whose worst case exceeds what is
left of it (a clear, non-retryable error instead), so a dispatch never spends more than it was given."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from agent_engine.agent_runner import pricing
from agent_engine.agent_runner.allowance import request_bytes
from agent_engine.agent_runner.providers import Gateway
from agent_engine.agent_runner.service import AgentRunner, build_request

PRICED_MOCK = {"version": "test-priced-mock", "models": {
    "mock": {"input": "100", "output": "200", "cache_read": "100", "cache_write": "100"}}}
"""A table that prices the mock (labelled as such), so these tests spend money honestly."""


@pytest.fixture
def priced_mock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pricing.PriceTable]:
    table = tmp_path / "prices.json"
    table.write_text(json.dumps(PRICED_MOCK))
    monkeypatch.setenv("AE_PRICE_TABLE", str(table))
    pricing.active.cache_clear()
    yield pricing.active()
    pricing.active.cache_clear()


def first_call_worst_case(table: pricing.PriceTable, dispatch) -> Decimal:  # type: ignore[no-untyped-def]
    worst = table.worst_case(["mock-1"], request_bytes(build_request(dispatch)), dispatch.agent.max_tokens)
    assert isinstance(worst, Decimal)
    return worst


async def test_a_repair_whose_worst_case_exceeds_what_is_left_is_not_started(priced_mock, agent_dispatch) -> None:
    cause, dispatch = agent_dispatch(mock_responses=[{"$mock_invalid": "not json"}, {"goal": "g"}], max_repairs=1,
                                     max_tokens=100)
    budget = first_call_worst_case(priced_mock, dispatch)
    dispatch = dispatch.model_copy(update={"budget_usd": str(budget)})
    events = await AgentRunner(Gateway()).handle(cause, dispatch)
    assert [e.type for e in events] == ["llm.called", "node.errored"]
    error = events[-1].data
    assert error["retryable"] is False
    assert error["error"].startswith("over budget: the next repair turn could cost up to $")
    assert f"of the ${budget} reserved for this dispatch; not started" in error["error"]
    spent = sum(Decimal(c["cost_usd"]) for c in error["llm_calls"])
    assert Decimal(0) < spent <= budget


async def test_a_reservation_too_small_for_the_first_call_starts_no_call(priced_mock, agent_dispatch) -> None:
    cause, dispatch = agent_dispatch(max_tokens=100)
    budget = first_call_worst_case(priced_mock, dispatch) - Decimal("0.000001")
    events = await AgentRunner(Gateway()).handle(cause, dispatch.model_copy(update={"budget_usd": str(budget)}))
    assert [e.type for e in events] == ["node.errored"]
    assert events[0].data["retryable"] is False
    assert events[0].data["error"].startswith("over budget: the next call could cost up to $")


async def test_a_reservation_that_covers_the_call_changes_nothing(priced_mock, agent_dispatch) -> None:
    cause, dispatch = agent_dispatch(max_tokens=100)
    budget = first_call_worst_case(priced_mock, dispatch)
    events = await AgentRunner(Gateway()).handle(cause, dispatch.model_copy(update={"budget_usd": str(budget)}))
    assert [e.type for e in events] == ["llm.called", "node.completed"]
    assert Decimal(0) < Decimal(events[0].data["cost_usd"]) <= budget
    assert events[0].data["price_table"] == "test-priced-mock"
