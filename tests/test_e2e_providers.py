"""`agentctl providers`: the running agent-runner's providers and breaker states, never a key."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e


def test_providers_shows_configuration_and_breakers_but_no_key(engine, tenant):
    ran = engine.agentctl("run", "examples/research-review", "--tenant", tenant, "--input", '{"brief": "providers"}')
    assert ran.returncode == 0, ran.stderr

    shown = engine.agentctl("providers", "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["force"] == "mock"  # the e2e stack runs AE_PROVIDER=mock
    assert status["providers"]["anthropic"] == {"configured": True, "credential": "ANTHROPIC_API_KEY"}
    assert status["providers"]["openai"]["configured"] is False
    assert {"provider": "mock", "model": "mock-1", "state": "closed", "consecutive_failures": 0,
            "last_error": None, "opened_at": None} in status["breakers"]

    table = engine.agentctl("providers")
    assert table.returncode == 0, table.stderr
    assert "anthropic (key from ANTHROPIC_API_KEY)" in table.stdout
    assert any(line.split()[:3] == ["mock", "mock-1", "closed"] for line in table.stdout.splitlines())

    key = engine.env["ANTHROPIC_API_KEY"]
    assert key not in shown.stdout and key not in table.stdout
