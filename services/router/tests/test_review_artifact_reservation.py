"""A budgeted dispatch reserves the prompt the agent-runner will really send (review of issue #16).

The router reserves an agent dispatch's worst case from `prompt_bytes(context)`; the agent-runner replaces each
artifact reference in the context by its content before building the prompt (agent_runner/service.with_content),
then refuses any call whose worst case is over the reservation (allowance.py) with a non-retryable error. A
reference is ~200 bytes; the content it stands for is over AE_ARTIFACT_THRESHOLD (64 KiB) by construction. So in
any task with a budget, a node that reads an upstream output stored as an artifact is reserved for the reference
and then refused: the node fails "over its reservation" whatever the budget has left."""

from __future__ import annotations

import json

from agent_engine.contracts.artifacts import TEXT, artifact_id
from agent_engine.contracts.events import NodeContext
from agent_engine.contracts.manifest import AgentSpec
from agent_engine.router.budgets import prompt_bytes

REPORT = "a line of the fetched page\n" * 5_000  # 135 KB: stored as an artifact (over the 64 KiB threshold)


def test_the_reserved_prompt_bounds_the_prompt_with_the_artifact_resolved() -> None:
    agent = AgentSpec(provider="mock", model="m-1", prompt="summarise the page", max_tokens=256)
    ref = {"artifact": artifact_id(REPORT.encode()), "size": len(REPORT.encode()), "media_type": TEXT,
           "name": "fetch.content"}
    as_routed = NodeContext(upstream={"fetch": {"content": ref, "status": 200}})
    as_prompted = NodeContext(upstream={"fetch": {"content": REPORT, "status": 200}})  # after with_content
    reserved_for = prompt_bytes(agent, as_routed, None, None)
    sent = prompt_bytes(agent, as_prompted, None, None)
    assert sent > len(json.dumps(REPORT))  # the prompt shows the whole page
    assert reserved_for >= sent, f"reserved a prompt of {reserved_for} bytes for one of {sent}"
