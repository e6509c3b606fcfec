"""The metrics rules as an operator relies on them: what each published event adds (exact tokens and cost, one
verdict per rule), event types kept to the contracts' list, samplers that refresh at most every
few seconds and survive a failing one, and /metrics served on the health port in the text format."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_engine.runtime import health, metrics


def _value(name: str, **labels: str) -> float:
    """The current value of one series of the process registry (0 when it has no such series yet)."""
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value(name, {"service": metrics.SERVICE[0], **labels}) or 0.0


CALL: dict[str, Any] = {"provider": "anthropic", "model": "claude-x", "outcome": "valid", "cost_usd": "0.0125",
                        "usage": {"input_tokens": 1000, "output_tokens": 120, "cache_read_tokens": 600,
                                  "cache_write_tokens": 0}}


def test_an_llm_call_adds_one_call_its_tokens_by_kind_and_its_cost():
    route = {"tenant": "acme", "provider": "anthropic", "model": "claude-x"}
    before = {k: _value("ae_llm_tokens_total", **route, kind=k) for k in metrics.TOKEN_KINDS}
    calls, cost = _value("ae_llm_calls_total", **route, outcome="valid"), _value("ae_llm_cost_usd_total", **route)
    metrics.published("llm.called", "acme", CALL)
    assert _value("ae_llm_calls_total", **route, outcome="valid") == calls + 1
    assert _value("ae_llm_cost_usd_total", **route) == pytest.approx(cost + 0.0125)
    added = {k: _value("ae_llm_tokens_total", **route, kind=k) - before[k] for k in metrics.TOKEN_KINDS}
    assert added == {"input": 1000, "output": 120, "cache_read": 600, "cache_write": 0}


def test_an_unpriced_call_costs_nothing_and_is_counted_as_unpriced():
    [*_, cost, unpriced] = metrics.counts_of("llm.called", "acme", {**CALL, "cost_usd": "unpriced"})
    assert cost[0] is metrics.LLM_COST and cost[2] == 0
    assert unpriced[0] is metrics.LLM_UNPRICED and unpriced[2] == 1


def test_a_failed_call_counts_as_an_error_by_its_class():
    [(counter, labels, amount)] = metrics.counts_of("llm.call_failed", "acme", {
        "provider": "anthropic", "model": "claude-x", "error_class": "rate_limited", "message": "slow down"})
    assert counter is metrics.LLM_ERRORS and labels == ("acme", "anthropic", "claude-x", "rate_limited")
    assert amount == 1


def test_a_verdict_counts_once_per_rule_and_as_none_without_rules():
    refused = metrics.counts_of("guardrail.verdict", "acme", {"gate": "input", "outcome": "refused", "rules": [
        {"rule": "injection.ignore-previous"}, {"rule": "injection.reveal-system-prompt"}]})
    assert [labels for _, labels, _ in refused] == [("acme", "input", "refused", "injection.ignore-previous"),
                                                     ("acme", "input", "refused", "injection.reveal-system-prompt")]
    [(_, labels, _)] = metrics.counts_of("guardrail.verdict", "acme", {"gate": "tool", "outcome": "allowed"})
    assert labels == ("acme", "tool", "allowed", "none")


def test_other_events_add_nothing():
    assert metrics.counts_of("node.completed", "acme", {"output": {"secret": "x"}}) == []


def test_event_types_are_the_contracts_types_and_anything_else_is_other():
    assert metrics.event_type("ae.acme.task.requested") == "task.requested"
    assert metrics.event_type("ae.acme.node.dispatched.agent") == "node.dispatched.agent"
    assert metrics.event_type("ae.acme.task.requested.billing") == "task.requested"  # a sender's token
    assert metrics.event_type("ae.acme.node.completed.7") == "node.completed"  # a partition's
    assert metrics.event_type("ae.acme.node.dispatched.evil") == "node.dispatched"
    assert metrics.event_type("ae.acme.made.up.by.a.client") == "other"


def test_hop_time_is_observed_from_when_the_stream_stored_it():
    labels = {"consumer": "unit-hop", "event_type": "task.requested"}
    count = _value("ae_hop_seconds_count", **labels)
    metrics.handled("unit-hop", [("ae.acme.task.requested", 100.0), ("ae.acme.task.requested", None)], now=100.25)
    assert _value("ae_hop_seconds_count", **labels) == count + 1  # a message with no stored time is skipped
    assert _value("ae_hop_seconds_bucket", **labels, le="0.25") >= 1


async def test_samplers_run_at_most_every_few_seconds_and_a_failing_one_is_counted():
    samplers = metrics.Samplers()
    runs: list[str] = []

    async def good() -> None:
        runs.append("good")

    async def bad() -> None:
        raise ConnectionError("NATS away")

    samplers.add("good", good)
    samplers.add("unit-bad", bad)
    errors = _value("ae_metrics_sample_errors_total", sampler="unit-bad")
    await samplers.sample()
    await samplers.sample()  # within SAMPLE_EVERY_S: the last values stand
    assert runs == ["good"]
    assert _value("ae_metrics_sample_errors_total", sampler="unit-bad") == errors + 1
    samplers.at -= metrics.SAMPLE_EVERY_S
    await samplers.sample()
    assert runs == ["good", "good"]


async def test_metrics_are_served_on_the_health_port_in_the_text_format():
    metrics.published("llm.called", "served", CALL)
    server = await health.serve(health.Health(), 0, "127.0.0.1")
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = await reader.read()
        writer.close()
    finally:
        server.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    [sample] = [s for s in families["ae_llm_calls"].samples if s.labels.get("tenant") == "served"]
    assert sample.value == 1 and sample.labels["model"] == "claude-x"
    assert "process_resident_memory_bytes" in families or "process_cpu_seconds" in families


def test_a_label_takes_at_most_so_many_values_and_the_rest_are_other(monkeypatch: pytest.MonkeyPatch):
    """A model or tool name comes from a workflow a tenant pushed: new names past the bound add no series."""
    monkeypatch.setattr(metrics, "_seen", {})
    monkeypatch.setattr(metrics, "MAX_VALUES", 2)
    failed = [metrics.counts_of("llm.call_failed", "acme", {"provider": "p", "model": f"m{i}", "error_class": "E"})
             for i in range(4)]
    assert [labels[2] for [(_, labels, _)] in failed] == ["m0", "m1", "other", "other"]
    again = metrics.counts_of("llm.call_failed", "acme", {"provider": "p", "model": "m1", "error_class": "E"})
    assert again[0][1][2] == "m1"  # a value already seen keeps its name
