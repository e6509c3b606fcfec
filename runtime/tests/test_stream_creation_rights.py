"""Only the router creates the engine's streams, and a service creates consumers under its own names only: against
a real nats-server with a fresh store (no stream yet), each test its own (docs/security.md, "Only the router
creates streams").

A right to create AE_EVENTS or AE_DLQ lets its holder make it, while it is missing, with any subjects (another
tenant's inbox, say) and read what it captures; a right to create a consumer of any name lets a service update the
router's durable (its filter, its position) and disturb it. Every other service now waits for the router's
streams at start, and each service's consumer rights name its own consumers, but for telemetry's unnamed create
(its ordered consumer's), which remains a known gap."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from agent_engine.contracts.subjects import (
    CLEARED_DURABLE,
    STREAM,
    STREAM_SUBJECTS,
    TOOL_GATE_DURABLE,
    dispatch_subject,
    tenant_inbox,
    type_subject,
)
from agent_engine.runtime import embedded, mcp_catalogue
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.keyring import CREDENTIAL_ENV, SERVICES, Keyring
from agent_engine.runtime.streamowner import ENGINE_STREAMS, ROUTER_BUCKETS
from agent_engine.runtime.streams import ensure_streams
from agent_engine.testkit.connections import connected

pytestmark = pytest.mark.integration
OTHERS = [s for s in SERVICES if s != "router"]
ROUTERS = (*ENGINE_STREAMS, *(f"KV_{b}" for b in ROUTER_BUCKETS[1:]))
"""Every stream only the router may create: the engine's, the workflow registry, the MCP catalogue."""


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[tuple[str, Keyring]]:
    """A nats-server of its own, with authorization on and no stream yet (the session's has them all)."""
    ring = Keyring(tmp_path / "keys").ensure_platform()
    server = embedded.start_nats(tmp_path / "nats", keyring=ring)
    yield server.url, ring
    server.stop()


async def _missing(url: str, ring: Keyring, names: tuple[str, ...] = ENGINE_STREAMS) -> set[str]:
    async with connected(url, ring.admin) as platform:
        js, missing = platform.jetstream(), set()
        for name in names:
            try:
                await js.stream_info(name)
            except NotFoundError:
                missing.add(name)
        return missing


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def _ask(nc: Client, errors: list[str], subject: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """JetStream's answer to an API request, or None when the server refused the request outright (a
    permissions violation naming `subject`, which is never answered)."""
    errors.clear()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=1)
    await nc.publish(subject, json.dumps(body).encode(), reply=inbox)
    refused = f'"{subject.lower()}"'
    for _ in range(400):
        try:
            answer: dict[str, Any] = json.loads((await sub.next_msg(timeout=0.05)).data)
            return answer
        except nats.errors.TimeoutError:
            if any("permissions violation" in e and refused in e for e in errors):
                return None
    raise AssertionError(f"neither an answer nor a refusal for {subject}: {errors}")


@pytest.mark.parametrize("service", OTHERS)
async def test_a_service_other_than_the_router_is_refused_creating_the_engines_streams(
        bare: tuple[str, Keyring], service: str) -> None:
    url, ring = bare
    errors: list[str] = []
    async with connected(url, ring.service(service), errors) as nc:
        for name in ROUTERS:  # on another tenant's inbox: what it could read if the create went through
            config = StreamConfig(name=name, subjects=[f"{tenant_inbox('victim', 'alice')}.>"])
            assert await _ask(nc, errors, f"$JS.API.STREAM.CREATE.{name}", config.as_dict()) is None, name
    assert await _missing(url, ring, ROUTERS) == set(ROUTERS)


async def test_a_service_waits_for_the_router_to_create_the_streams_then_goes_on(
        bare: tuple[str, Keyring], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    url, ring = bare
    caplog.set_level(logging.INFO, logger="agent_engine.runtime.streamowner")
    monkeypatch.setenv(CREDENTIAL_ENV, str(ring.service("guardrails")))
    opening = asyncio.create_task(Bus.open(url, "guardrails"))
    try:
        await _until(lambda: any("waits for the router to create stream AE_EVENTS" in r.getMessage()
                                 for r in caplog.records), "guardrails saying it waits for the router")
        assert not opening.done() and await _missing(url, ring) == set(ENGINE_STREAMS)  # it made none
        monkeypatch.setenv(CREDENTIAL_ENV, str(ring.service("router")))
        router = await Bus.open(url, "router")
        guardrails = await asyncio.wait_for(opening, 60)  # a bound on a hang only: it goes on once they exist
    finally:
        opening.cancel()
    await guardrails.close()
    await router.close()
    assert await _missing(url, ring) == set()


async def test_the_tool_runner_waits_for_the_routers_mcp_catalogue_bucket(
        bare: tuple[str, Keyring], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The tool-runner publishes its MCP tools at start into a bucket the router makes at start."""
    url, ring = bare
    caplog.set_level(logging.INFO, logger="agent_engine.runtime.streamowner")
    monkeypatch.setenv(CREDENTIAL_ENV, str(ring.service("tool-runner")))
    async with connected(url, ring.service("tool-runner")) as nc:
        opening = asyncio.create_task(mcp_catalogue.bucket(nc.jetstream(timeout=5)))
        try:
            await _until(lambda: any("tool-runner waits for the router to create stream KV_ae_mcp_tools"
                                     in r.getMessage() for r in caplog.records), "the tool-runner waiting")
            monkeypatch.setenv(CREDENTIAL_ENV, str(ring.service("router")))
            async with connected(url, ring.service("router")) as router:
                await mcp_catalogue.bucket(router.jetstream(timeout=5))
            kv = await asyncio.wait_for(opening, 60)  # a bound on a hang only
        finally:
            opening.cancel()
        await kv.put("srv.tool", b"{}")  # and writes its catalogue into it


async def test_no_service_may_create_or_update_the_routers_durable_and_each_still_creates_its_own(
        bare: tuple[str, Keyring]) -> None:
    url, ring = bare
    async with connected(url, ring.admin) as platform:
        await ensure_streams(platform.jetstream())
    router_filter = type_subject("task.accepted")
    async with connected(url, ring.service("router")) as nc:
        await Bus(nc, nc.jetstream(), "router").pull("router", [router_filter], ack_wait=30)

    other_filter = type_subject("node.dispatched")
    config = {"durable_name": "router", "name": "router", "ack_policy": "explicit", "deliver_policy": "all",
              "filter_subject": other_filter}
    attempts = [  # every subject form the server takes for a create or update of a consumer named "router"
        (f"$JS.API.CONSUMER.CREATE.{STREAM}.router", config),
        (f"$JS.API.CONSUMER.CREATE.{STREAM}.router.{other_filter}", config),
        (f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.router", config),
        (f"$JS.API.CONSUMER.CREATE.{STREAM}", config),  # the unnamed create telemetry may use, with a durable
    ]
    # Not here: the unnamed create with only `name` in its body, which the server takes as an update of the
    # consumer so named (the router's filter changed, its durable name dropped). Telemetry's ordered consumer
    # needs that subject, so telemetry can still do it: a known gap (docs/security.md, "Only the router creates
    # streams"); every other service is refused that subject outright.
    unnamed = (f"$JS.API.CONSUMER.CREATE.{STREAM}", {k: v for k, v in config.items() if k != "durable_name"})
    for service in OTHERS:
        errors: list[str] = []
        async with connected(url, ring.service(service), errors) as nc:
            for subject, body in [*attempts, *([unnamed] if service != "telemetry" else [])]:
                answer = await _ask(nc, errors, subject, {"stream_name": STREAM, "config": body})
                assert answer is None or "error" in answer, (service, subject, answer)
    async with connected(url, ring.admin) as platform:
        info = await platform.jetstream().consumer_info(STREAM, "router")
    assert (info.config.filter_subjects or [info.config.filter_subject]) == [router_filter]

    own = {"guardrails": [("guardrails", type_subject("task.requested"), False),
                          (TOOL_GATE_DURABLE, dispatch_subject("tool"), False),
                          ("guardrails-output", type_subject("node.output_produced"), False)],
           "agent-runner": [("agent-runner", dispatch_subject("agent"), False)],
           "tool-runner": [(CLEARED_DURABLE, type_subject("tool.call_cleared"), True)]}
    for service, durables in own.items():
        async with connected(url, ring.service(service)) as nc:
            bus = Bus(nc, nc.jetstream(timeout=5), service)
            for durable, subject, pinned in durables:
                await bus.pull(durable, [subject], ack_wait=30, pinned=pinned)
    async with connected(url, ring.service("telemetry")) as nc:  # its ordered consumer, as telemetry makes it
        sub = await nc.jetstream(timeout=5).subscribe(STREAM_SUBJECTS[0], stream=STREAM, ordered_consumer=True)
        await sub.unsubscribe()
