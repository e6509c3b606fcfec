"""Agent scores: what each call attempt counts for, the percentiles, and the filters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import LlmCalled, LlmCallFailed, Usage
from agent_engine.telemetry.ledger import Ledger, Message
from agent_engine.telemetry.scores import Filter, percentile, read_filter

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def envelope(type_: str, data: dict[str, Any], task: str, tenant: str = "acme", at: int = 0) -> Envelope:
    return Envelope.model_validate({"specversion": "1.0", "id": str(uuid.uuid4()), "source": "test", "type": type_,
                                    "time": (T0 + timedelta(hours=at)).isoformat(), "tenant": tenant, "taskid": task,
                                    "correlationid": task, "schemaversion": 2, "data": data})


def called(task: str, agent: str, model: str, *, outcome: str = "valid", repair: int = 0, latency: float = 100,
           cost: str = "0.01", at: int = 0, tenant: str = "acme") -> Envelope:
    data = LlmCalled(dispatch_id="d", node="n", provider="anthropic", model=model, usage=Usage(), cost_usd=cost,
                     repair=repair, outcome=outcome, agent=agent, latency_ms=latency)  # type: ignore[arg-type]
    return envelope("llm.called", data.model_dump(mode="json", exclude_none=True), task, tenant, at)


def failed(task: str, agent: str, model: str, error: str = "InternalServerError") -> Envelope:
    data = LlmCallFailed(dispatch_id="d", node="n", provider="anthropic", model=model, error_class=error, call=1,
                         then="fallback", agent=agent)
    return envelope("llm.call_failed", data.model_dump(mode="json", exclude_none=True), task)


def fold(*events: Envelope) -> Ledger:
    ledger = Ledger()
    ledger.apply([Message(i + 1, f"ae.{e.tenant}.{e.type}", e) for i, e in enumerate(events)])
    return ledger


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 50) == 10 and percentile(values, 95) == 19 and percentile([7.0], 95) == 7
    assert percentile([], 50) is None


def test_success_rate_repairs_latency_and_cost_per_agent_and_model() -> None:
    ledger = fold(
        called("t1", "writer", "good", latency=100), called("t1", "writer", "good", outcome="invalid", latency=300),
        called("t1", "writer", "good", repair=1, latency=200), failed("t1", "writer", "bad"),
        failed("t1", "writer", "bad"), called("t2", "writer", "bad", cost="unpriced"),
        failed("t2", "writer", "skipped", error="CircuitOpen"),  # never asked: not counted
        called("t2", "reviewer", "good", cost="0.5"))
    rows = {(r["agent"], r["model"]): r for r in ledger.agents(Filter())}
    assert set(rows) == {("writer", "good"), ("writer", "bad"), ("reviewer", "good")}
    good = rows[("writer", "good")]
    assert (good["attempts"], good["successes"], good["invalid"], good["repairs"]) == (3, 2, 1, 1)
    assert good["success_rate"] == pytest.approx(0.6667)
    assert (good["latency_ms_p50"], good["latency_ms_p95"]) == (200, 300)
    assert good["cost_usd"] == "0.03" and good["cost_per_call_usd"] == "0.01"
    bad = rows[("writer", "bad")]
    assert (bad["attempts"], bad["failed"], bad["successes"], bad["unpriced_calls"]) == (3, 2, 1, 1)
    assert bad["cost_usd"] == "0"


def test_each_attempt_counts_once_and_the_ledger_is_unchanged_by_the_scores_events() -> None:
    event = called("t1", "writer", "good")
    ledger = fold(event, event, failed("t1", "writer", "bad"))
    assert ledger.agents(Filter())[0]["attempts"] == 1
    assert ledger.query()["events_by_type"] == {"llm.called": 1}


def test_filters_by_tenant_workflow_and_since() -> None:
    ledger = Ledger()
    ledger.scores.observe(started_event("t1", "alpha"))
    ledger.scores.observe(started_event("t2", "beta"))
    for e in (called("t1", "w", "m", at=0), called("t2", "w", "m", at=5), called("t3", "w", "m", tenant="other")):
        ledger.scores.observe(e)
    assert ledger.agents(Filter(tenant="acme"))[0]["attempts"] == 2
    assert ledger.agents(Filter(workflow="beta"))[0]["attempts"] == 1
    assert ledger.agents(Filter(since=T0 + timedelta(hours=1)))[0]["attempts"] == 1  # t2's only
    assert ledger.agents(Filter(tenant="acme", workflow="nope")) == []
    ledger.forget("acme", ["t1"])
    assert ledger.agents(Filter(tenant="acme"))[0]["attempts"] == 1


def started_event(task: str, workflow: str) -> Envelope:
    """Only what the scores read of a task.started: its workflow."""
    return envelope("task.started", {"workflow": workflow}, task)


def test_a_tenants_scope_replaces_the_tenant_it_names_and_bad_filters_are_named() -> None:
    assert read_filter({"tenant": "other"}, "acme").tenant == "acme"
    with pytest.raises(ValueError, match="since 'last week' is not an ISO 8601 time"):
        read_filter({"since": "last week"}, None)
    with pytest.raises(ValueError, match="has no time zone"):
        read_filter({"since": "2026-12-01T00:00:00"}, None)


def test_a_call_attempt_the_scores_cannot_read_is_skipped_not_retried_for_ever() -> None:
    from types import SimpleNamespace

    from agent_engine.telemetry.__main__ import message_of

    bad = envelope("llm.call_failed", {"dispatch_id": "d", "node": "n", "provider": "p", "model": "m"}, "t1")
    good = failed("t1", "writer", "m")

    def msg(event: Envelope, sequence: int) -> Any:
        return SimpleNamespace(subject=f"ae.acme.{event.type}", data=event.to_bytes(), headers=None,
                               metadata=SimpleNamespace(sequence=SimpleNamespace(stream=sequence)))

    skipped, kept = message_of(msg(bad, 1)), message_of(msg(good, 2))
    assert skipped.event is None and kept.event is not None
    ledger = Ledger()
    assert ledger.apply([skipped, kept]) == 2
    assert ledger.agents(Filter())[0]["attempts"] == 1
