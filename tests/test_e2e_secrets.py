"""Secrets never reach events, the store, logs or services that do not need them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from agent_engine.testkit.leaks import everything_on_the_bus

pytestmark = pytest.mark.e2e


def test_a_planted_api_key_is_nowhere_but_in_the_agent_runners_environment(engine, servers, tenant):
    ran = engine.agentctl("run", "examples/research-review", "--tenant", tenant, "--input", '{"brief": "secrets"}')
    assert ran.returncode == 0, ran.stderr
    key = engine.env["ANTHROPIC_API_KEY"].encode()  # planted by the engine fixture
    assert key.startswith(b"sk-ant-planted")

    bus = asyncio.run(everything_on_the_bus(engine))
    assert len(bus) > 1000 and key not in bus

    with psycopg.connect(servers["postgres"]) as conn:
        rows = conn.execute("SELECT state FROM router_events").fetchall()
    assert rows and not any(key in bytes(row[0]) for row in rows)

    for log in (engine.home / "logs").glob("*.log"):
        assert key not in log.read_bytes(), log

    for name, pid in engine.pids().items():
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert (key in environ) == (name == "agent-runner"), name
