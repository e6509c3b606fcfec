"""Each service reads only the streams its rights name, against a real nats-server (docs/security.md, Rights).

The rights were a deny-list: a message get on any stream (`STREAM.MSG.GET.*`, what artifact reads need) but the
engine's own streams, named. A stream added later was open to every service until someone remembered to add it.
Now every stream is named: a stream made here, which no list knows, is refused to every service; the artifact
bucket of a tenant the keyring serves is open to the services that store or show artifacts, and a bucket of
a tenant it does not serve is not, until the tenant is declared (then at once, on the open connection)."""

from __future__ import annotations

import asyncio
import uuid

import nats
import pytest
from nats.js.api import StreamConfig

from agent_engine.contracts.artifacts import TEXT
from agent_engine.runtime.artifacts import ArtifactError, ArtifactStore
from agent_engine.runtime.keyring import SERVICES, Keyring
from agent_engine.testkit.buckets import router_made_buckets
from agent_engine.testkit.connections import connected

pytestmark = pytest.mark.integration
READERS = ("agent-runner", "tool-runner", "guardrails", "dashboard")
"""The services that store or show artifacts: they serve every tenant, so they read every served tenant's bucket."""


async def _refusal(errors: list[str], stream: str) -> None:
    """Wait for the server's -ERR naming `stream` (it arrives on its own, after the request timed out)."""
    for _ in range(100):
        if any("permissions violation" in e and stream.lower() in e for e in errors):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no permissions violation for {stream}: {errors}")


@pytest.mark.parametrize("service", SERVICES)
async def test_a_stream_no_right_names_is_refused_to_every_service(nats_url: str, keyring: Keyring,
                                                                   service: str) -> None:
    name = f"NEW_{uuid.uuid4().hex[:8]}"
    async with connected(nats_url, keyring.admin) as platform:
        js = platform.jetstream()
        await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
        await js.publish(f"{name.lower()}.x", b"not for services")
    try:
        errors: list[str] = []
        async with connected(nats_url, keyring.service(service), errors) as nc:
            with pytest.raises(nats.errors.TimeoutError):  # the request never reached JetStream
                await nc.jetstream(timeout=1.5).get_msg(name, seq=1)
            await _refusal(errors, name)
    finally:
        async with connected(nats_url, keyring.admin) as platform:
            await platform.jetstream().delete_stream(name)


async def test_a_served_tenants_bucket_is_open_to_the_services_that_use_artifacts_and_no_other(
        nats_url: str, keyring: Keyring) -> None:
    served, unserved = (f"t{uuid.uuid4().hex[:10]}" for _ in range(2))
    await router_made_buckets(nats_url, keyring, served)
    async with connected(nats_url, keyring.service("router")) as router:  # its tasks start: the router makes
        await ArtifactStore(router.jetstream()).ensure_bucket(unserved)  # its bucket, served or not
    async with connected(nats_url, keyring.admin) as platform:
        store = ArtifactStore(platform.jetstream())
        refs = {t: await store.put(t, f"content of {t}".encode() * 5000, TEXT, "n.f") for t in (served, unserved)}

    for service in SERVICES:
        errors: list[str] = []
        async with connected(nats_url, keyring.service(service), errors) as nc:
            store = ArtifactStore(nc.jetstream(timeout=1.5))
            if service in READERS:
                assert await store.get(served, refs[served].artifact) == f"content of {served}".encode() * 5000
            else:  # the router makes buckets and never reads one; the others never touch them
                with pytest.raises(ArtifactError, match="did not answer"):
                    await store.get(served, refs[served].artifact)
            with pytest.raises(ArtifactError, match=f"bucket of tenant '{unserved}' .* did not answer: .*"
                                                    f"agentctl tenant declare {unserved}"):
                await store.get(unserved, refs[unserved].artifact)
            await _refusal(errors, f"OBJ_ae_artifacts_{unserved}")


@pytest.mark.parametrize("service", ["agent-runner", "tool-runner", "guardrails"])
async def test_declaring_a_tenant_opens_its_bucket_to_a_connection_already_open(nats_url: str, keyring: Keyring,
                                                                                service: str) -> None:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    async with connected(nats_url, keyring.service("router")) as router:
        await ArtifactStore(router.jetstream()).ensure_bucket(tenant)
    async with connected(nats_url, keyring.service(service)) as nc:
        store = ArtifactStore(nc.jetstream(timeout=1.5))
        with pytest.raises(ArtifactError, match=f"agentctl tenant declare {tenant}"):
            await store.put(tenant, b"a large output", TEXT, "n.f")
        assert keyring.declare(tenant) is True  # every server reloads its rights before this returns
        ref = await store.put(tenant, b"a large output", TEXT, "n.f")
        assert await store.get(tenant, ref.artifact) == b"a large output"
