"""Across agent-runner and telemetry: a dispatch that needs a 429 retry and a schema repair against the
Anthropic-speaking test server is costed in the ledger exactly as the sum of its calls."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from agent_engine.agent_runner.providers import Gateway, RetryPolicy
from agent_engine.agent_runner.providers.anthropic import AnthropicProvider
from agent_engine.agent_runner.service import AgentRunner
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import DispatchedAgent, NodeContext, NodeDispatched
from agent_engine.telemetry.ledger import Ledger

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services" / "agent-runner" / "tests"))
from fake_llm import FakeServer, Reply, anthropic_message, fake_anthropic_server, rate_limited, serve

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")
SCHEMA = {"type": "object", "required": ["verdict"], "properties": {"verdict": {"enum": ["approve", "reject"]}}}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with serve(fake_anthropic_server()) as s:
        yield s


def dispatch() -> tuple[Envelope, NodeDispatched]:
    now = datetime.now(UTC)
    data = NodeDispatched(dispatch_id="d-1", node="review", kind="agent", attempt=1, deadline=now + timedelta(minutes=1),
                          agent=DispatchedAgent(name="reviewer", provider="anthropic", model="claude-sonnet-4-5",
                                                output_schema_json=SCHEMA), context=NodeContext())
    cause = Envelope(id="evt-d-1", source="agent-engine/router", type=NodeDispatched.TYPE, time=now, tenant="acme",
                     task_id="task-42", correlation_id="task-42", data=data.model_dump(mode="json", exclude_none=True))
    return cause, data


async def test_the_ledger_total_is_the_sum_of_every_call_including_repairs(server: FakeServer) -> None:
    server.then(rate_limited("0.01"),
                Reply(200, anthropic_message('{"verdict": "maybe"}', input_tokens=1000, output_tokens=40,
                                             cache_read=800, cache_write=100)))
    server.body = anthropic_message('{"verdict": "approve"}', input_tokens=1300, output_tokens=30, cache_read=900,
                                    cache_write=0)
    gateway = Gateway({"anthropic": lambda: AnthropicProvider("test-key", server.url)},
                      retry=RetryPolicy(backoff_s=0.01, budget_s=1))

    events = await AgentRunner(gateway).handle(*dispatch())

    assert [e.type for e in events] == ["llm.call_failed", "llm.called", "llm.called", "node.completed"]
    ledger = Ledger()
    for event in events + events:  # redelivered: counted once
        ledger.observe(event)
    costs = [Decimal(e.data["cost_usd"]) for e in events if e.type == "llm.called"]
    # sonnet: 1000 plain*3 + 40*15 + 800*0.30 + 100*3.75 = 4215; then 1300 plain*3 + 30*15 + 900*0.30 = 4620 (per 1e6)
    assert costs == [Decimal("0.004215"), Decimal("0.00462")]
    line = ledger.query(task_id="task-42")
    assert Decimal(line["cost_usd"]) == sum(costs) == Decimal("0.008835")
    assert line["calls"] == 2
    assert line["input_tokens"] == (1000 + 800 + 100) + (1300 + 900)
