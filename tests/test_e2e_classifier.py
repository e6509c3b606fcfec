"""The injection classifier over real NATS and PostgreSQL: guardrails asks the agent-runner (the mock provider,
scripted by the policy file) about a request the rule set let through; a score at or over the threshold refuses
it naming `injection.classifier` and the score, the text nowhere in the refusal, and the call's cost is an
llm.called of the tenant. A tenant whose classifier scores low runs its task."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope

pytestmark = pytest.mark.e2e



async def _events(engine: Any, tenant: str) -> list[Envelope]:
    """Every event of a tenant in the event stream."""
    nc = await engine.connect()
    try:
        sub = await nc.jetstream().subscribe(f"ae.{tenant}.>", ordered_consumer=True)
        out = []
        while True:
            try:
                out.append(Envelope.from_bytes((await sub.next_msg(timeout=1.0)).data))
            except Exception:  # noqa: BLE001  drained
                return out
    finally:
        await nc.close()


TEXT = "Compare the two stores; the marker zebra-quartz-17 must not leak"


def test_a_request_the_classifier_scores_high_is_refused_naming_the_rule(own_stack: Any, tmp_path: Path) -> None:
    wary, calm = f"t{uuid.uuid4().hex[:10]}", f"t{uuid.uuid4().hex[:10]}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({"tenants": {
        wary: {"input": {"classifier": {"provider": "mock", "model": "mock-1", "threshold": 0.8, "mock_responses": [
            {"score": 0.95, "label": "injection", "reason": "asks to act on hidden orders"}]}}},
        calm: {"input": {"classifier": {"provider": "mock", "model": "mock-1", "mock_responses": [
            {"score": 0.1, "label": "benign", "reason": "an ordinary request"}]}}},
    }}))
    engine = own_stack(AE_GUARDRAILS_POLICY=str(policy))
    for tenant in (wary, calm):
        assert engine.agentctl("workflow", "push", "examples/research-review", "--tenant", tenant).returncode == 0

    refused = engine.agentctl("submit", "research-review", "--tenant", wary, "--input", json.dumps({"brief": TEXT}))
    assert refused.returncode == 2, refused.stderr
    assert "the input looks like a prompt injection to the classifier (score 0.95, at or over the 0.8 threshold)" \
        in refused.stderr and "injection.classifier" in refused.stderr
    assert "zebra-quartz" not in refused.stderr

    events = asyncio.run(_events(engine, wary))
    [verdict] = [e for e in events if e.type == "guardrail.verdict"]
    assert verdict.data["outcome"] == "refused" and verdict.data["score"] == 0.95
    assert verdict.data["rules"] == [{"rule": "injection.classifier", "count": 1, "score": 0.95}]
    [called] = [e for e in events if e.type == "llm.called"]
    assert called.data["node"] == "guardrails.classifier" and called.data["provider"] == "mock"
    assert called.task_id == verdict.task_id
    assert not [e for e in events if e.type in ("task.accepted", "task.started")]
    assert not any("zebra-quartz" in e.to_bytes().decode() for e in events)

    ran = engine.agentctl("run", "examples/research-review", "--tenant", calm, "--input", json.dumps({"brief": TEXT}))
    assert ran.returncode == 0, ran.stderr
