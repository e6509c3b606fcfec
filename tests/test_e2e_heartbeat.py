"""Heartbeats for long runs (R5): a call that takes 3 s on a node with a 1 s timeout is not
re-dispatched, because the agent-runner's heartbeats move the router's deadline while it works."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
SLOW = Path(__file__).parent / "workflows" / "slow"


def test_heartbeats_keep_a_long_call_from_being_redispatched(engine, tenant):
    status, history = asyncio.run(engine.run_to_end(tenant, {}, SLOW))
    assert status == "succeeded"
    dispatches = [e for e in history if e.type == "node.dispatched"]
    assert [(d.data["node"], d.data["attempt"]) for d in dispatches] == [("think", 1)]
    done = next(e for e in history if e.type == "node.succeeded")
    assert done.data["output"] == {"thought": "done thinking"}
    assert (done.time - dispatches[0].time).total_seconds() >= 3  # it really ran past its 1 s timeout
