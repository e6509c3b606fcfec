"""A retryable error schedules the retry after its backoff; the router's timer dispatches it."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
WORKFLOW = Path(__file__).parent / "workflows" / "backoff"



def test_the_retry_waits_for_its_backoff_then_succeeds(engine, tenant):
    status, history = asyncio.run(engine.run_to_end(tenant, {}, WORKFLOW))
    assert status == "succeeded"
    types = [e.type for e in history]
    assert "node.retry_scheduled" in types
    scheduled = next(e for e in history if e.type == "node.retry_scheduled")
    retried = [e for e in history if e.type == "node.dispatched" and e.data["attempt"] == 2]
    assert len(retried) == 1 and "output does not match" in retried[0].data["reason"]
    assert retried[0].time >= datetime.fromisoformat(scheduled.data["at"])  # not before its time
    assert 0.25 <= scheduled.data["delay_s"] < 0.5
