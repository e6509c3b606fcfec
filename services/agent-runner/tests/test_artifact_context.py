"""The agent-runner and artifacts, against a real nats-server: an earlier tool result stored as an artifact
reaches the model as its content (in the tool_result block), never as the reference; an artifact that is
gone fails the node, not retryable, naming it."""

from __future__ import annotations

import json
from typing import Any

import nats
import pytest
from test_tool_use import EARLIER, VALID, anthropic_gateway, tool_dispatch

from agent_engine.agent_runner.service import AgentRunner
from agent_engine.contracts.artifacts import TEXT, artifact_id
from agent_engine.contracts.credentials import load_credential
from agent_engine.contracts.events import ToolStep, ToolTurn
from agent_engine.runtime.artifacts import ArtifactStore
from agent_engine.runtime.bus import auth_options
from agent_engine.runtime.keyring import Keyring
from agent_engine.testkit.buckets import router_made_buckets

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")]
LOG = "".join(f"row {i:06d}: all quiet\n" for i in range(8_000))  # about 180 KiB


def with_result(output: dict[str, Any]) -> ToolTurn:
    return ToolTurn(turn=0, thought="Reading the log.", calls=[
        ToolStep(call_id="t0-c0", tool="read", args={"path": "log.txt"}, output=output)])


async def test_a_stored_tool_result_reaches_the_model_as_its_content(nats_url: str, keyring: Keyring,
                                                                    fake_anthropic: Any, agent_dispatch: Any) -> None:
    await router_made_buckets(nats_url, keyring, "acme")
    nc = await nats.connect(nats_url, **auth_options(load_credential(keyring.service("agent-runner"))))
    try:
        store = ArtifactStore(nc.jetstream())
        ref = await store.put("acme", LOG.encode(), TEXT, "read.content")
        fake_anthropic.body = VALID
        cause, dispatch = tool_dispatch(agent_dispatch, provider="anthropic", turn=1,
                                        conversation=[with_result({"content": ref.model_dump(), "bytes": len(LOG)})])

        events = await AgentRunner(anthropic_gateway(fake_anthropic), artifacts=store).handle(cause, dispatch)

        assert events[-1].type == "node.completed"
        sent = json.dumps(fake_anthropic.calls()[-1]["messages"])
        assert "row 007999: all quiet" in sent and ref.artifact not in sent

        gone = with_result({"content": {**ref.model_dump(), "artifact": artifact_id(b"never stored")}})
        cause, dispatch = tool_dispatch(agent_dispatch, provider="anthropic", turn=1, conversation=[EARLIER, gone])
        events = await AgentRunner(anthropic_gateway(fake_anthropic), artifacts=store).handle(cause, dispatch)
        assert [e.type for e in events] == ["node.errored"]
        assert events[0].data["retryable"] is False
        assert events[0].data["error"].startswith("an upstream artifact could not be read: tenant 'acme' has no "
                                                  "artifact sha256:")
    finally:
        await nc.close()
