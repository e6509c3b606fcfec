"""Running on a NATS cluster: AE_NATS_URL as a list of servers, AE_STREAM_REPLICAS, and the embedded 3-node
cluster the end-to-end failover test uses (real nats-servers with routes and authorization)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import KeyValueConfig, StorageType, StreamConfig

from agent_engine.contracts.credentials import load_credential
from agent_engine.contracts.subjects import DLQ_STREAM, STREAM, TOOL_CALLS_BUCKET, WORKFLOW_BUCKET
from agent_engine.runtime import embedded, workflows
from agent_engine.runtime.bus import Bus, auth_options, connect
from agent_engine.runtime.keyring import Keyring
from agent_engine.runtime.settings import Settings, nats_servers, stream_replicas
from agent_engine.runtime.streams import apply_replicas, ensure_bucket, ensure_stream


def test_a_cluster_url_list_is_split_with_spaces_around_items_dropped() -> None:
    assert nats_servers("nats://127.0.0.1:4222") == ["nats://127.0.0.1:4222"]
    assert nats_servers(" nats://n1:4222 , nats://n2:4222,nats://n3:4222 ") == [
        "nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]


@pytest.mark.parametrize(("value", "message"), [
    ("nats://n1:4222,,nats://n3:4222", "AE_NATS_URL='nats://n1:4222,,nats://n3:4222' has an empty item .number 2"),
    ("nats://n1:4222,", "has an empty item .number 2"),
    (" , ", "AE_NATS_URL is empty"),
    ("nats://n1:4222 nats://n2:4222", "has a space inside it; separate URLs with commas"),
])
def test_a_malformed_url_list_is_named(value: str, message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        nats_servers(value)


def test_a_service_with_a_malformed_url_list_stops_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_NATS_URL", "nats://n1:4222,,nats://n2:4222")
    with pytest.raises(SystemExit, match="AE_NATS_URL="):
        Settings()
    monkeypatch.setenv("AE_NATS_URL", "")
    assert Settings().nats_url == "nats://127.0.0.1:4222"  # empty is unset


def test_stream_replicas_are_one_unless_set_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AE_STREAM_REPLICAS", raising=False)
    assert stream_replicas() == 1
    monkeypatch.setenv("AE_STREAM_REPLICAS", " 3 ")
    assert stream_replicas() == 3
    for bad in ("0", "6", "2.5", "three", "-1"):
        monkeypatch.setenv("AE_STREAM_REPLICAS", bad)
        with pytest.raises(SystemExit, match=rf"AE_STREAM_REPLICAS='{bad}' must be a whole number from 1 to 5"):
            stream_replicas()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, keyring: Keyring) -> Iterator[embedded.NatsCluster]:
    running = embedded.start_nats_cluster(Path(tmp_path_factory.mktemp("cluster")), keyring=keyring)
    yield running
    running.stop()


def peers(info: object) -> set[str]:
    found = info.cluster  # type: ignore[attr-defined]
    return {found.leader, *(p.name for p in found.replicas or [])}


@pytest.mark.integration
async def test_every_stream_and_bucket_is_held_by_three_servers(cluster: embedded.NatsCluster,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_STREAM_REPLICAS", "3")
    bus = await Bus.open(cluster.url, "replicas-test")  # the whole list, as AE_NATS_URL gives it
    try:
        await workflows.bucket(bus.js)
        for name in (STREAM, DLQ_STREAM, f"KV_{TOOL_CALLS_BUCKET}", f"KV_{WORKFLOW_BUCKET}"):
            info = await bus.js.stream_info(name)
            assert info.config.num_replicas == 3 and peers(info) == {"n1", "n2", "n3"}, (name, info.cluster)
        consumer = await bus.pull(f"replicas-{uuid.uuid4().hex[:8]}", ["ae.nobody.>"], ack_wait=5)
        held = (await consumer.consumer_info()).cluster
        assert held is not None and len(held.replicas or []) == 2  # a durable consumer is R3 with its stream
    finally:
        await bus.close()


@pytest.mark.integration
async def test_an_existing_stream_changes_replicas_only_when_the_variable_is_set(
        cluster: embedded.NatsCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AE_STREAM_REPLICAS", raising=False)
    nc = await connect(cluster.url, "replicas-test")
    js = nc.jetstream(timeout=10)
    name = f"T_{uuid.uuid4().hex[:8]}"
    config = StreamConfig(name=name, subjects=[f"{name.lower()}.>"], storage=StorageType.FILE)
    bucket = KeyValueConfig(bucket=f"b_{uuid.uuid4().hex[:8]}", history=1)
    try:
        await ensure_stream(js, config)
        await ensure_bucket(js, bucket)
        assert (await js.stream_info(name)).config.num_replicas == 1
        await apply_replicas(js, name)  # unset: nothing changes
        assert (await js.stream_info(name)).config.num_replicas == 1
        monkeypatch.setenv("AE_STREAM_REPLICAS", "3")
        await ensure_bucket(js, KeyValueConfig(bucket=bucket.bucket, history=1))
        await apply_replicas(js, name, "NO_SUCH_STREAM")  # agentctl's way to the streams of the router
        for stream in (name, f"KV_{bucket.bucket}"):
            info = await js.stream_info(stream)
            assert info.config.num_replicas == 3, stream
            assert info.config.subjects and info.config.subjects[0].startswith(("t_", "$KV."))  # the rest kept
        monkeypatch.setenv("AE_STREAM_REPLICAS", "1")  # set: down again too
        await ensure_stream(js, StreamConfig(name=name, subjects=[f"{name.lower()}.>"], storage=StorageType.FILE))
        assert (await js.stream_info(name)).config.num_replicas == 1
        monkeypatch.delenv("AE_STREAM_REPLICAS")  # a process without the variable never undoes what was set
        await ensure_bucket(js, KeyValueConfig(bucket=bucket.bucket, history=1))
        assert (await js.stream_info(f"KV_{bucket.bucket}")).config.num_replicas == 3
    finally:
        await js.delete_stream(name)
        await js.delete_key_value(bucket.bucket)
        await nc.close()


@pytest.mark.integration
async def test_replicas_asked_of_a_single_server_stop_the_process(nats_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_STREAM_REPLICAS", "3")
    nc = await connect(nats_url, "replicas-test")
    try:
        name = f"T_{uuid.uuid4().hex[:8]}"
        with pytest.raises(SystemExit, match="AE_STREAM_REPLICAS=3, but the NATS server is not part of a cluster"):
            await ensure_stream(nc.jetstream(), StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
    finally:
        await nc.close()


@pytest.mark.integration
async def test_a_node_killed_and_restarted_keeps_its_port_data_and_the_keyrings_reloads(
        cluster: embedded.NatsCluster, keyring: Keyring) -> None:
    cluster.kill("n2")
    cluster.start("n2")
    cluster.wait_ready()
    attached = {s["conf"]: s["pid"] for s in keyring.servers()}
    for name, server in cluster.servers.items():  # the restarted node is attached under its new pid
        assert attached[str(cluster.data_dir / name / "auth.conf")] == server.pid, name
    tenant = f"t{uuid.uuid4().hex[:8]}"
    credential = load_credential(keyring.issue(tenant, "ops", "viewer"))  # every node reloads
    try:
        for node in cluster.nodes.values():  # each node on its own: its authorization knows the new key
            nc = await nats.connect(f"nats://127.0.0.1:{node.port}", allow_reconnect=False,
                                    **auth_options(credential))
            await nc.close()
    finally:
        keyring.revoke(tenant)
