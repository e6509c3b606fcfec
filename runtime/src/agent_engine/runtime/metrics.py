"""Prometheus metrics for every service, served as `/metrics` on the health port (health.py).

One registry per process (prometheus-client's default one, which also carries the process collector: CPU,
memory, open files). The services feed it through small hooks:

- the bus: a histogram of each handled message's hop time (stored on the stream -> handled), and, for each
  event it publishes that the stream had not stored before, the LLM, guardrail and tool counters below
  (`published`). Counting only what JetStream did not report as a duplicate makes these distinct events, as
  the cost ledger counts them: a redelivered dispatch answered again within the stream's duplicate window
  (120 s) is not counted twice.
- samplers: gauges read on scrape (consumer lag, DLQ size, tasks by status), at most every SAMPLE_EVERY_S and
  never for longer than SAMPLE_TIMEOUT_S, so a scrape is quick and a scraper cannot load NATS or PostgreSQL.

Labels are kept few and bounded: a service, tenant, provider, model, tool, gate, rule, outcome, consumer or
event type, never a task id, a prompt or an answer. An event type outside the contracts' list is `other`, and
so is any value of a label past its first MAX_VALUES in the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from agent_engine.contracts.events import EVENT_TYPES

log = logging.getLogger(__name__)
disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series beside each counter: half the text, nothing a dashboard reads

SERVICE = ["unknown"]
"""This process's service name (set by service.run), the `service` label of every series."""
SAMPLE_EVERY_S = 2.0
SAMPLE_TIMEOUT_S = 3.0
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""What generate_latest writes (names escaped with underscores), in the version every Prometheus reads."""

HOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

HOP_SECONDS = Histogram(
    "ae_hop_seconds", "Time from an event being stored on the stream to a consumer having handled it (each delivery)",
    ["service", "consumer", "event_type"], buckets=HOP_BUCKETS)
CONSUMER_PENDING = Gauge(
    "ae_consumer_pending_messages", "Messages on the stream the durable consumer has not yet delivered (num_pending)",
    ["service", "consumer"])
CONSUMER_ACK_PENDING = Gauge(
    "ae_consumer_ack_pending_messages", "Messages delivered to the durable consumer and not yet acknowledged",
    ["service", "consumer"])
LLM_CALLS = Counter(
    "ae_llm_calls_total", "LLM calls answered by a provider (llm.called events), by what the reply was",
    ["service", "tenant", "provider", "model", "outcome"])
LLM_ERRORS = Counter(
    "ae_llm_call_errors_total", "LLM calls that failed (llm.call_failed events)",
    ["service", "tenant", "provider", "model", "error_class"])
LLM_TOKENS = Counter(
    "ae_llm_tokens_total", "Tokens of answered LLM calls, by kind (input, output, cache_read, cache_write)",
    ["service", "tenant", "provider", "model", "kind"])
LLM_COST = Counter(
    "ae_llm_cost_usd_total", "Cost of answered LLM calls in US dollars (an unpriced call adds 0)",
    ["service", "tenant", "provider", "model"])
LLM_UNPRICED = Counter(
    "ae_llm_unpriced_calls_total", "Answered LLM calls whose model has no price in the active price table",
    ["service", "tenant", "provider", "model"])
TOOL_RUNS = Counter(
    "ae_tool_runs_total", "Tool dispatches the tool-runner answered, by tool and outcome (completed, errored)",
    ["service", "tenant", "tool", "outcome"])
VERDICTS = Counter(
    "ae_guardrail_verdicts_total", "Guardrail verdicts (guardrail.verdict events), one per rule that matched "
    "(rule `none` when no rule did)", ["service", "tenant", "gate", "outcome", "rule"])
DLQ_MESSAGES = Gauge(
    "ae_dlq_messages", "Messages this service dead-lettered that the AE_DLQ stream still keeps", ["service"])
TASKS = Gauge(
    "ae_tasks", "Tasks in each status now (accepted, queued, running, succeeded, failed, cancelled, rejected, "
    "deduplicated), one per task, from telemetry's task index (kept in PostgreSQL, so right after a restart)",
    ["service", "status"])
SAMPLE_ERRORS = Counter(
    "ae_metrics_sample_errors_total", "Scrape-time samples (lag, DLQ, tasks) that failed; the gauge keeps its "
    "last value", ["service", "sampler"])

TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")
DISPATCH_KINDS = ("agent", "tool")


def event_type(subject: str) -> str:
    """The event type a stream subject `ae.<tenant>.<type>[.<partition or sender>]` carries (the longest known
    type it starts with); `other` for a type the contracts do not name, so what any client publishes cannot
    grow the label set."""
    tokens = subject.split(".", 2)[-1].split(".")
    for end in range(len(tokens), 0, -1):
        kind = ".".join(tokens[:end])
        head, _, tail = kind.rpartition(".")
        if kind in EVENT_TYPES or (head == "node.dispatched" and tail in DISPATCH_KINDS):
            return kind
    return "other"


def _usd(raw: object) -> Decimal | None:
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        return None
    return value if value.is_finite() and value >= 0 else None


MAX_VALUES = 200
"""Distinct values a label (model, tool, rule...) takes in one process at most; later new ones are `other`. A
model or tool name comes from a workflow a tenant pushed: without a bound, a tenant could add series at will."""
_seen: dict[str, set[str]] = {}


def _label(value: object, kind: str, default: str = "unknown") -> str:
    text = str(value)[:128] if value not in (None, "") else default
    seen = _seen.setdefault(kind, set())
    if text not in seen:
        if len(seen) >= MAX_VALUES:
            return "other"
        seen.add(text)
    return text


def counts_of(event_type: str, tenant: str, data: Mapping[str, Any]) -> list[tuple[Counter, tuple[str, ...], float]]:
    """What one published event adds to the counters: (counter, labels after `service`, amount). Pure, so the
    rules are unit-tested without a bus; an event of another type adds nothing."""
    if event_type == "llm.called":
        route = (tenant, _label(data.get("provider"), "provider"), _label(data.get("model"), "model"))
        usage = data.get("usage") or {}
        outcome = _label(data.get("outcome"), "outcome")
        out: list[tuple[Counter, tuple[str, ...], float]] = [(LLM_CALLS, (*route, outcome), 1)]
        out += [(LLM_TOKENS, (*route, kind), float(usage.get(f"{kind}_tokens") or 0)) for kind in TOKEN_KINDS]
        cost = _usd(data.get("cost_usd", "0"))
        out.append((LLM_COST, route, float(cost or 0)))
        if cost is None:
            out.append((LLM_UNPRICED, route, 1))
        return out
    if event_type == "llm.call_failed":
        return [(LLM_ERRORS, (tenant, _label(data.get("provider"), "provider"), _label(data.get("model"), "model"),
                              _label(data.get("error_class"), "error_class")), 1)]
    if event_type == "guardrail.verdict":
        head = (tenant, _label(data.get("gate"), "gate"), _label(data.get("outcome"), "outcome"))
        rules = [r.get("rule") for r in data.get("rules") or [] if isinstance(r, Mapping)]
        return [(VERDICTS, (*head, _label(rule, "rule")), 1) for rule in rules or ["none"]]
    return []


def published(event_type: str, tenant: str, data: Mapping[str, Any]) -> None:
    """Count an event this process published and the stream stored for the first time."""
    for counter, labels, amount in counts_of(event_type, tenant, data):
        counter.labels(SERVICE[0], *labels).inc(amount)


_hops: dict[tuple[str, str], Any] = {}
"""The histogram's child per (consumer, event type): both bounded, and a dict hit is cheaper than .labels()."""


def handled(consumer: str, subjects_and_stored: Iterable[tuple[str, float | None]], now: float | None = None) -> None:
    """Observe each handled message's hop time: `now` minus when the stream stored it (epoch seconds)."""
    now = time.time() if now is None else now
    for subject, stored in subjects_and_stored:
        if stored is None:
            continue
        kind = event_type(subject)
        child = _hops.get((consumer, kind))
        if child is None:
            child = _hops[(consumer, kind)] = HOP_SECONDS.labels(SERVICE[0], consumer, kind)
        child.observe(max(0.0, now - stored))


def consumer_stopped(consumer: str) -> None:
    """A consume loop ended (a router partition moved to another owner, a drain): drop its lag series, which
    would otherwise show its last value for ever."""
    SAMPLERS.remove(f"consumer {consumer}")
    for gauge in (CONSUMER_PENDING, CONSUMER_ACK_PENDING):
        try:
            gauge.remove(SERVICE[0], consumer)
        except KeyError:  # never sampled
            pass


def tool_ran(tenant: str, tool: str, outcome: str) -> None:
    TOOL_RUNS.labels(SERVICE[0], tenant, _label(tool, "tool"), outcome).inc()


Sampler = Callable[[], Awaitable[None]]


class Samplers:
    """Gauges set on scrape by async samplers, each run at most every SAMPLE_EVERY_S (scrapes in between read
    the last values), all together bounded by SAMPLE_TIMEOUT_S; one that fails is counted and logged."""

    def __init__(self) -> None:
        self.samplers: dict[str, Sampler] = {}
        self.at = -1e18
        self.lock = asyncio.Lock()

    def add(self, name: str, sampler: Sampler) -> None:
        self.samplers[name] = sampler

    def remove(self, name: str) -> None:
        self.samplers.pop(name, None)

    async def sample(self) -> None:
        async with self.lock:
            if time.monotonic() - self.at < SAMPLE_EVERY_S:
                return
            names = list(self.samplers)
            results = await asyncio.gather(*(asyncio.wait_for(self.samplers[n](), SAMPLE_TIMEOUT_S) for n in names),
                                           return_exceptions=True)
            for name, outcome in zip(names, results, strict=True):
                if isinstance(outcome, BaseException):
                    SAMPLE_ERRORS.labels(SERVICE[0], name).inc()
                    log.warning("metrics sampler %s failed: %s", name, f"{type(outcome).__name__}: {outcome}"[:300])
            self.at = time.monotonic()


SAMPLERS = Samplers()
"""This process's samplers, as health.PROCESS is its readiness checks."""


async def exposition() -> bytes:
    """The /metrics body: samplers refreshed, then every metric in the text format."""
    await SAMPLERS.sample()
    return generate_latest()
