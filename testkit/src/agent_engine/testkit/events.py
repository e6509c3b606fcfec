"""Events for the tests of what reads them (telemetry's ledgers): each with a fresh id unless one is given."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import LlmCalled, Usage


def llm_called(*, task: str = "t1", tenant: str = "acme", provider: str = "anthropic",
               model: str = "claude-sonnet-4-5", cost: str = "0.1", day: int = 1, event_id: str | None = None,
               usage: Usage | None = None, node: str = "n") -> Envelope:
    data = LlmCalled(dispatch_id="d", node=node, provider=provider, model=model, cost_usd=cost,
                     usage=usage or Usage(input_tokens=100, output_tokens=10, cache_read_tokens=40,
                                          cache_write_tokens=5))
    return Envelope(id=event_id or f"e-{uuid.uuid4().hex}", source="agent-engine/agent-runner", type=LlmCalled.TYPE,
                    time=datetime(2026, 3, day, 12, tzinfo=UTC), tenant=tenant, task_id=task, correlation_id=task,
                    data=data.model_dump(mode="json"))


def other(event_type: str, task: str = "t1") -> Envelope:
    """An event of another type, which a ledger counts but does not fold."""
    return Envelope(id=f"e-{uuid.uuid4().hex}", source="x", type=event_type, time=datetime(2026, 3, 1, tzinfo=UTC),
                    tenant="acme", task_id=task, correlation_id=task, data={})
