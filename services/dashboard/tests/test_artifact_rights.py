"""The dashboard's credential against a real nats-server with authorization on: it reads any served tenant's
artifact (it shows every tenant's tasks), exactly, through the Link the pages use, and the server refuses it
a message get on the engine's own streams (its rights name each served tenant's bucket and no other stream)."""

from __future__ import annotations

import asyncio
import os
import uuid

import nats
import pytest

from agent_engine.contracts.artifacts import TEXT
from agent_engine.contracts.credentials import load_credential
from agent_engine.contracts.subjects import AUDIT_STREAM, DLQ_STREAM, STREAM
from agent_engine.dashboard.link import Link, QueryError
from agent_engine.runtime.artifacts import ArtifactStore
from agent_engine.runtime.bus import Bus, auth_options
from agent_engine.runtime.keyring import Keyring
from agent_engine.testkit.buckets import router_made_buckets

pytestmark = pytest.mark.integration
CONTENT = os.urandom(300_000)  # a few chunks


async def test_the_dashboard_reads_artifacts_exactly_and_no_engine_stream(nats_url: str, keyring: Keyring) -> None:
    tenants = [f"t{uuid.uuid4().hex[:10]}" for _ in range(2)]
    await router_made_buckets(nats_url, keyring, *tenants)
    runner = await nats.connect(nats_url, **auth_options(load_credential(keyring.service("tool-runner"))))
    try:
        refs = [await ArtifactStore(runner.jetstream()).put(t, CONTENT + t.encode(), TEXT, "read.content")
                for t in tenants]
    finally:
        await runner.close()

    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(nats_url, error_cb=on_error, allow_reconnect=False,
                            **auth_options(load_credential(keyring.service("dashboard"))))
    try:
        link = Link(Bus(nc, nc.jetstream(timeout=1.5), "dashboard"))
        for tenant, ref in zip(tenants, refs, strict=True):
            assert await link.artifact(tenant, ref.artifact) == CONTENT + tenant.encode()
        with pytest.raises(QueryError, match="has no artifact"):  # another tenant's id, from this one's bucket
            await link.artifact(tenants[0], refs[1].artifact)
        js = nc.jetstream(timeout=1.5)
        for stream in (STREAM, DLQ_STREAM, AUDIT_STREAM):
            with pytest.raises(nats.errors.TimeoutError):  # the request never reached JetStream
                await js.get_msg(stream, seq=1)
        for _ in range(50):  # the server's -ERR arrives on its own
            if len(errors) >= 3:
                break
            await asyncio.sleep(0.05)
        for stream in (STREAM, DLQ_STREAM, AUDIT_STREAM):
            assert any("permissions violation" in e and stream.lower() in e for e in errors), (stream, errors)
    finally:
        await nc.close()


async def test_a_download_is_read_chunk_by_chunk_and_a_missing_artifact_fails_before_any_byte(
        nats_url: str, keyring: Keyring) -> None:
    """The download streams: the size first (its Content-Length), then the stored chunks one at a time."""
    tenant = f"t{uuid.uuid4().hex[:10]}"
    await router_made_buckets(nats_url, keyring, tenant)
    runner = await nats.connect(nats_url, **auth_options(load_credential(keyring.service("tool-runner"))))
    try:
        ref = await ArtifactStore(runner.jetstream()).put(tenant, CONTENT, TEXT, "read.content")
    finally:
        await runner.close()
    nc = await nats.connect(nats_url, **auth_options(load_credential(keyring.service("dashboard"))))
    try:
        link = Link(Bus(nc, nc.jetstream(timeout=1.5), "dashboard"))
        size, chunks = await link.artifact_chunks(tenant, ref.artifact)
        read = [chunk async for chunk in chunks]
        assert size == len(CONTENT) and b"".join(read) == CONTENT and len(read) == 3  # 128 KiB chunks
        with pytest.raises(QueryError, match="has no artifact"):
            await link.artifact_chunks(tenant, "sha256:" + "0" * 64)
    finally:
        await nc.close()
