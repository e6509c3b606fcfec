"""Replaying a finished task's recorded router inputs reproduces its recorded router events exactly."""

from __future__ import annotations

import asyncio

import pytest

from agent_engine.router.core import replay

pytestmark = pytest.mark.e2e



def test_replay_of_a_finished_task_matches_its_history(engine, tenant):
    status, history = asyncio.run(engine.run_to_end(tenant, {"brief": "replay me"}))
    assert status == "succeeded"
    replayed = replay(history)
    assert [e.model_dump(mode="json") for e in replayed] == [e.model_dump(mode="json") for e in history]
    assert len(history) > 10
