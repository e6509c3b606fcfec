"""A data subject forgotten before telemetry has read its tasks' events (it was behind on the stream): the
events read afterwards add to the tenant's totals but give the task no line again; its line answers "erased".

Found by the e2e ledger rebuild under load (CI, 2026-12-04): the forget note came while telemetry was still
folding the stream from its first message; the task had no line yet, so it was not remembered as erased, and
its calls were noted when they came."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import LlmCalled, Usage
from agent_engine.telemetry.ledger import Ledger, Message
from agent_engine.telemetry.projection import PgLedger


def called(task: str, tenant: str, sequence: int) -> Message:
    call = LlmCalled(dispatch_id=f"d{sequence}", node="draft", provider="anthropic", model="claude-haiku-4-5",
                     usage=Usage(input_tokens=100, output_tokens=10), cost_usd="0.25")
    event = Envelope(id=str(uuid.uuid4()), source="test", type=LlmCalled.TYPE, time=datetime.now(UTC),
                     tenant=tenant, task_id=task, correlation_id=task, data=call.model_dump(mode="json"))
    return Message(sequence, f"ae.{tenant}.{event.type}", event, call)


def check(ledger: Any) -> None:
    assert ledger.forget("acme", ["early"]) == 0  # nothing of it noted yet
    ledger.apply([called("early", "acme", 1), called("kept", "acme", 2), called("early", "acme", 3)])
    line = ledger.query(task_id="early", tenant="acme")
    assert line.get("erased") is True, line
    assert ledger.query(task_id="kept", tenant="acme")["calls"] == 1
    tenant = ledger.query(tenant="acme")
    assert tenant["calls"] == 3 and tenant["cost_usd"] == "0.75"  # the erased task's calls count in the sums


def test_in_memory_a_task_forgotten_before_its_events_are_read_gets_no_line() -> None:
    check(Ledger())


@pytest.mark.integration
def test_in_postgresql_a_task_forgotten_before_its_events_are_read_gets_no_line(pg: PgLedger) -> None:
    check(pg)


def test_a_whole_tenant_forgotten_remembers_no_task_ahead() -> None:
    """Without task ids (the whole tenant), nothing is named ahead: a later task of the same tenant name is a
    new tenant's and is noted (the streams are purged of the forgotten tenant's messages by `tenant forget`)."""
    ledger = Ledger()
    assert ledger.forget("acme", None) == 0
    ledger.apply([called("later", "acme", 1)])
    assert ledger.query(task_id="later", tenant="acme")["calls"] == 1
