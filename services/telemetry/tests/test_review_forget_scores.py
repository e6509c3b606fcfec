"""A tenant's forget leaves nothing of its tasks in the agent scores' tables (review of issue #16).

`tenant forget` drops the ledger's per-task rows (docs/data-lifecycle.md); the scores keep, besides the call
attempts (dropped), one row per task naming its workflow (`_task_workflows`, from task.started), which stayed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import LlmCalled, Usage
from agent_engine.telemetry.ledger import Ledger, Message
from agent_engine.telemetry.projection import PgLedger


def envelope(type_: str, data: dict[str, Any], task: str, tenant: str) -> Envelope:
    return Envelope(id=str(uuid.uuid4()), source="test", type=type_, time=datetime.now(UTC), tenant=tenant,
                    task_id=task, correlation_id=task, data=data)


def started(task: str, tenant: str) -> list[Message]:
    call = LlmCalled(dispatch_id="d", node="n", provider="anthropic", model="m", usage=Usage(), cost_usd="0.01",
                     agent="writer")
    events = [envelope("task.started", {"workflow": "triage", "revision": "r1"}, task, tenant),
              envelope("llm.called", call.model_dump(mode="json", exclude_none=True), task, tenant)]
    return [Message(i + 1, f"ae.{e.tenant}.{e.type}", e, None) for i, e in enumerate(events)]


def test_in_memory_a_forgotten_tasks_workflow_is_dropped() -> None:
    ledger = Ledger()
    ledger.apply(started("t1", "acme"))
    ledger.forget("acme", None)
    assert not ledger.scores.attempts and not ledger.scores.workflows



@pytest.mark.integration
def test_in_postgresql_a_forgotten_tasks_workflow_is_dropped(pg: PgLedger) -> None:
    pg.apply(started("t1", "acme"))
    pg.forget("acme", None)
    with pg._conn() as conn:
        left = conn.execute(f"SELECT count(*) FROM {pg.p}_task_workflows WHERE tenant = 'acme'").fetchone()
    assert left is not None and left[0] == 0
