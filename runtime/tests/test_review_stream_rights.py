"""A runner's artifact rights must not let it read what it may not subscribe to (review of issue #16).

A service that may create a stream may create one on *any* subject and then read what it captured (by message
get, which artifact reads need): another tenant's query answers on `_INBOX.<tenant>.<user>.>` (task outputs),
which its own subscribe rights refuse. So only the router creates streams (each tenant's artifact bucket,
router/buckets.py); the server refuses the services that store or read artifacts."""

from __future__ import annotations

import uuid

import pytest
from nats.js.api import StreamConfig

from agent_engine.contracts.subjects import tenant_inbox
from agent_engine.runtime.keyring import Keyring
from agent_engine.testkit.connections import connected

pytestmark = pytest.mark.integration



@pytest.mark.parametrize("service", ["tool-runner", "agent-runner", "guardrails", "dashboard"])
async def test_a_runner_cannot_capture_another_tenants_inbox_in_a_stream_of_its_own(
        nats_url: str, keyring: Keyring, service: str) -> None:
    victim = f"v{uuid.uuid4().hex[:10]}"
    inbox = f"{tenant_inbox(victim, 'alice')}.>"
    name = f"SPY_{uuid.uuid4().hex[:8]}"
    async with connected(nats_url, keyring.service(service)) as runner:
        js = runner.jetstream(timeout=2)
        try:
            await js.add_stream(StreamConfig(name=name, subjects=[inbox]))
        except Exception:  # noqa: BLE001  refused (as it should be): nothing captured
            return
        try:
            async with connected(nats_url, keyring.admin) as platform:  # a reply to the victim's query
                await platform.publish(f"{tenant_inbox(victim, 'alice')}.reply1", b'{"output": "victim secret"}')
                await platform.flush()
            captured = await js.get_msg(name, seq=1)
            assert captured.data != b'{"output": "victim secret"}', "a runner read another tenant's query reply"
        finally:
            async with connected(nats_url, keyring.admin) as platform:
                await platform.jetstream().delete_stream(name)
