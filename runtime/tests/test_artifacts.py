"""The artifact store against a real nats-server with authorization on: a runner stores a large output
field once per content, a consumer reads the exact bytes back, a tenant reads its own tenant's artifacts and
the server refuses it another's, and forgetting a tenant deletes its bucket."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime

import pytest

from agent_engine.contracts.artifacts import TEXT, artifact_id, as_ref, dispatch_object, locator
from agent_engine.contracts.envelope import command
from agent_engine.contracts.events import DispatchedTool, NodeCompleted, NodeDispatched
from agent_engine.contracts.policy import OutputPolicy
from agent_engine.runtime.artifacts import ArtifactError, ArtifactStore
from agent_engine.runtime.keyring import Keyring
from agent_engine.runtime.runner import offloaded, result
from agent_engine.testkit.buckets import router_made_buckets
from agent_engine.testkit.connections import connected

pytestmark = pytest.mark.integration
MIB = os.urandom(1024 * 1024 - 17)  # over one chunk many times, and not a whole number of chunks



@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def test_a_runner_stores_once_and_a_consumer_reads_the_exact_bytes(nats_url: str, keyring: Keyring,
                                                                       tenant: str) -> None:
    await router_made_buckets(nats_url, keyring, tenant)
    async with connected(nats_url, keyring.service("tool-runner")) as runner:
        store = ArtifactStore(runner.jetstream())
        first = await store.put(tenant, MIB, TEXT, "read.content")
        again = await store.put(tenant, MIB, TEXT, "again.content")
        assert first.artifact == again.artifact == artifact_id(MIB) and first.size == len(MIB)
        info = await runner.jetstream().stream_info(f"OBJ_ae_artifacts_{tenant}",
                                                     subjects_filter=f"$O.ae_artifacts_{tenant}.M.>")
        assert len(info.state.subjects or {}) == 1  # one object for the same content
        assert info.state.bytes < 2 * len(MIB)  # its chunks once, not twice
    async with connected(nats_url, keyring.service("agent-runner")) as consumer:
        assert await ArtifactStore(consumer.jetstream()).get(tenant, first.artifact) == MIB
        size, chunks = await ArtifactStore(consumer.jetstream()).open(tenant, first.artifact)
        read = [chunk async for chunk in chunks]  # as a writer gets them: one stored chunk at a time
        assert size == len(MIB) and b"".join(read) == MIB and len(read) == -(-len(MIB) // (128 * 1024))


async def test_offload_replaces_only_large_fields_and_resolve_gives_the_output_back(nats_url: str, keyring: Keyring,
                                                                                   tenant: str) -> None:
    output = {"content": "line\n" * 30_000, "bytes": 150_000, "truncated": False}
    await router_made_buckets(nats_url, keyring, tenant)
    async with connected(nats_url, keyring.service("agent-runner")) as nc:
        store = ArtifactStore(nc.jetstream(), threshold_bytes=64 * 1024)
        stored = await store.offload(tenant, output, "read")
        ref = as_ref(stored["content"])
        assert ref is not None and ref.name == "read.content" and ref.media_type == TEXT
        assert stored["bytes"] == 150_000 and stored["truncated"] is False
        assert await store.resolve(tenant, {"read": stored}) == {"read": output}
        small = {"text": "short"}
        assert await store.offload(tenant, small, "n") is small


async def test_an_artifact_over_the_limit_is_refused_naming_the_limit(nats_url: str, keyring: Keyring,
                                                                     tenant: str) -> None:
    async with connected(nats_url, keyring.service("tool-runner")) as nc:
        store = ArtifactStore(nc.jetstream(), threshold_bytes=1024, max_artifact_bytes=4096)
        with pytest.raises(ArtifactError, match=r"read.content is 0.0 MiB, over the 0.0 MiB an artifact may be "
                                                r"\(AE_ARTIFACT_MAX_BYTES\)"):
            await store.offload(tenant, {"content": "x" * 5000}, "read")


async def test_a_tenant_reads_its_own_artifacts_and_the_server_refuses_another_tenants(
        nats_url: str, keyring: Keyring, tenant: str) -> None:
    other = f"{tenant}x"
    await router_made_buckets(nats_url, keyring, tenant, other)
    async with connected(nats_url, keyring.service("tool-runner")) as runner:
        mine = await ArtifactStore(runner.jetstream()).put(tenant, b"ours: " + MIB[:200_000], TEXT, "a.b")
        theirs = await ArtifactStore(runner.jetstream()).put(other, b"theirs", TEXT, "a.b")
    errors: list[str] = []
    async with connected(nats_url, keyring.issue(tenant, "reader", "viewer"), errors) as nc:
        store = ArtifactStore(nc.jetstream(timeout=1.5))
        assert await store.get(tenant, mine.artifact) == b"ours: " + MIB[:200_000]
        with pytest.raises(ArtifactError, match=f"bucket of tenant '{other}' .* did not answer"):  # never reached JetStream
            await store.get(other, theirs.artifact)
        for _ in range(50):  # the server's -ERR arrives on its own
            if errors:
                break
            await asyncio.sleep(0.05)
        assert any("permissions violation" in e and f"ae_artifacts_{other}".lower() in e for e in errors), errors


async def test_a_missing_artifact_and_a_forgotten_tenant_say_so(nats_url: str, keyring: Keyring, tenant: str) -> None:
    async with connected(nats_url, keyring.admin) as nc:
        store = ArtifactStore(nc.jetstream())
        with pytest.raises(ArtifactError, match=f"tenant '{tenant}' has no artifact sha256:"):
            await store.get(tenant, artifact_id(b"never stored"))
        with pytest.raises(ArtifactError, match=f"tenant '{tenant}' has no artifact bucket"):
            await store.put(tenant, b"before its first task", TEXT, "n.f")
        await store.ensure_bucket(tenant)
        ref = await store.put(tenant, b"to be forgotten", TEXT, "n.f")
        assert await store.forget(tenant) == 1
        with pytest.raises(ArtifactError, match="has no artifact"):
            await store.get(tenant, ref.artifact)
        assert await store.forget(tenant) == 0


async def test_an_output_bound_for_the_output_gate_is_stored_as_its_dispatchs_own_copy(
        nats_url: str, keyring: Keyring, tenant: str) -> None:
    """The gate deletes the unredacted original of an output it redacted: the runner stores such an output under a
    name of its dispatch (the same again for a redelivered dispatch), every other output content-addressed, so
    the gate's delete takes nothing from another record; a shared object cannot be deleted alone."""
    text = "row\n" * 30_000
    checked = NodeDispatched(dispatch_id="d-1", node="read", kind="tool", attempt=1,
                             deadline=datetime(2030, 1, 1, tzinfo=UTC), check_output=OutputPolicy(),
                             tool=DispatchedTool(name="read", builtin="workspace_read", args={"path": "a"}))
    unchecked = checked.model_copy(update={"dispatch_id": "d-2", "check_output": None})
    await router_made_buckets(nats_url, keyring, tenant)
    async with connected(nats_url, keyring.service("tool-runner")) as nc:
        store = ArtifactStore(nc.jetstream(), threshold_bytes=64 * 1024)

        async def answered(dispatch: NodeDispatched) -> dict[str, object]:
            cause = command(dispatch, tenant=tenant, task_id="t-1", source="router")
            done = result(cause, "tool-runner", NodeCompleted(dispatch_id=dispatch.dispatch_id, node="read",
                                                              attempt=1, output={"content": text}), "completed")
            stored = await offloaded(store, done, "tool-runner", cause, dispatch)
            return dict(stored.data["output"]["content"])

        first, again, shared = await answered(checked), await answered(checked), await answered(unchecked)
        assert first == again and first["object"] == dispatch_object(artifact_id(text.encode()), "d-1")
        assert shared["artifact"] == first["artifact"] and "object" not in shared  # verifiable alike
        info = await nc.jetstream().stream_info(f"OBJ_ae_artifacts_{tenant}",
                                                subjects_filter=f"$O.ae_artifacts_{tenant}.M.>")
        assert len(info.state.subjects or {}) == 2  # the dispatch's copy once, the shared object once
        copy, common = as_ref(first), as_ref(shared)
        assert copy is not None and common is not None
        assert await store.resolve(tenant, [first, shared]) == [text, text]
    async with connected(nats_url, keyring.service("guardrails")) as nc:  # the one service that deletes
        store = ArtifactStore(nc.jetstream())
        with pytest.raises(ValueError, match="is shared content, not one dispatch's copy"):
            await store.delete(tenant, locator(common))
        await store.delete(tenant, locator(copy))
        assert await store.get(tenant, locator(common)) == text.encode()
        with pytest.raises(ArtifactError, match="has no artifact"):
            await store.get(tenant, locator(copy))
