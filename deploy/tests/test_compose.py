"""docker-compose.yml, checked without a Docker engine: valid by the Compose Specification's JSON Schema, and what
the deployment promises: health checks, start order, each service with its own credential only, no secret in the
file, targets and files that exist. And its nats-server configuration, run by the real nats-server."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import health_stub  # deploy/tests, on the path through conftest.py
import jsonschema
import nats
import pytest
import yaml

from agent_engine.cli.main import main
from agent_engine.cli.stack import SERVICES
from agent_engine.contracts.credentials import load_credential
from agent_engine.runtime.bus import auth_options
from agent_engine.runtime.embedded import free_port, nats_binary

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "compose-spec" / "compose-spec.json"
CREDENTIAL = "/var/run/agent-engine/nats/credential.json"
MASTER_KEY = "/var/run/agent-engine/master-key/master.key"
DEV_PASSWORD = "agent-engine-dev-only"
ONE_SHOT = {"keyring", "agentctl"}
"""Run to completion, not kept up: the keyring job and the operators' CLI."""


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Every volume of the service in the long syntax (short `source:target[:mode]` entries converted)."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            kind = "bind" if source.startswith((".", "/")) else "volume"
            out.append({"type": kind, "source": source, "target": target, "read_only": mode == ["ro"]})
        else:
            out.append(volume)
    return out


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_compose_file_is_valid_by_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


def test_the_schema_check_rejects_a_wrong_start_condition() -> None:
    """The check bites: a condition Compose does not know is an error, not ignored."""
    broken = copy.deepcopy(compose())
    broken["services"]["router"]["depends_on"]["nats"]["condition"] = "healthy"
    assert any("depends_on" in e for e in schema_errors(broken))


def test_the_whole_stack_is_in_the_file() -> None:
    assert set(services()) == {*SERVICES, "nats", "postgres", "keyring", "agentctl"}


def test_every_service_has_a_healthcheck_and_only_one_shot_jobs_disable_it() -> None:
    for name, service in services().items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        if name in ONE_SHOT:
            assert check == {"disable": True} and service["restart"] == "no", name
        else:
            assert check["test"][0] == "CMD" and check.get("interval"), f"{name}: {check}"
            assert service["restart"] == "unless-stopped", name


def test_each_engine_service_is_checked_for_readiness_on_its_health_port() -> None:
    for name in SERVICES:
        command = services()[name]["healthcheck"]["test"]
        assert command[1:3] == ["python", "-c"] and "/readyz" in command[3] and "AE_HEALTH_PORT" in command[3]


def test_nats_and_postgres_have_their_own_health_probes() -> None:
    nats_check = services()["nats"]["healthcheck"]["test"]
    assert any("/healthz?js-enabled-only=true" in word for word in nats_check)
    assert services()["postgres"]["healthcheck"]["test"][1] == "pg_isready"


def test_every_service_starts_after_the_keyring_is_made_and_what_it_needs_is_healthy() -> None:
    needs_postgres = {"router", "agent-runner", "tool-runner", "telemetry"}
    for name in SERVICES:
        depends = services()[name]["depends_on"]
        expected = {"keyring": "service_completed_successfully", "nats": "service_healthy"}
        if name in needs_postgres:
            expected["postgres"] = "service_healthy"
        assert {k: v["condition"] for k, v in depends.items()} == expected, name
    assert services()["nats"]["depends_on"]["keyring"]["condition"] == "service_completed_successfully"


def test_each_service_mounts_its_own_credential_and_nothing_else_of_the_keyring() -> None:
    for name in SERVICES:
        service = services()[name]
        env = environment(service)
        assert env["AE_NATS_CREDENTIAL"] == CREDENTIAL
        assert "AE_CREDENTIALS_DIR" not in env, f"{name} would find every credential"
        keyring = {m["target"]: m for m in mounts(service) if m["source"] == "keyring"}
        expected = {CREDENTIAL: f"services/{name}.json"}
        if name == "router":
            expected[MASTER_KEY] = "master.key"
        assert {t: m.get("volume", {}).get("subpath") for t, m in keyring.items()} == expected, name
        assert all(m["read_only"] for m in keyring.values()), f"{name} could change the keyring"


def test_only_the_router_gets_the_master_key_and_only_the_agent_runner_provider_keys() -> None:
    provider = re.compile(r"^(ANTHROPIC|OPENAI)_|^AE_OPENAI_")
    for name, service in services().items():
        env = environment(service)
        assert ("AE_MASTER_KEY_FILE" in env) == (name == "router"), name
        assert bool([k for k in env if provider.match(k)]) == (name == "agent-runner"), name
    assert environment(services()["router"])["AE_MASTER_KEY_FILE"] == MASTER_KEY
    assert environment(services()["agent-runner"])["AE_PROVIDER"] == "${AE_PROVIDER:-mock}"


def test_only_the_keyring_job_and_the_operators_cli_may_write_the_keyring() -> None:
    for name, service in services().items():
        for mount in mounts(service):
            if mount["source"] == "keyring" and not mount.get("read_only"):
                assert name in ONE_SHOT, f"{name} mounts the keyring writable"
    assert services()["keyring"]["command"] == ["keyring", "init", "/keyring"]


INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::-(?P<default>[^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|API_KEY")


def test_no_secret_value_is_in_the_compose_file() -> None:
    """Every password or key comes from the operator's environment (or .env), or is a file path; the one default
    is PostgreSQL's dev-only password, which the file says is for a laptop only."""
    text = COMPOSE.read_text()
    assert not re.search(r"\bS[UNOAC][A-Z2-7]{40,}\b", text), "an nkey seed is in the file"
    assert not re.search(r"\b[0-9a-f]{64}\b", text), "a 32-byte hex key is in the file"
    assert not re.search(r"sk-[A-Za-z0-9_-]{16,}", text), "a provider API key is in the file"
    for name, service in services().items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                match = INTERPOLATION.fullmatch(value)
                assert match, f"{name}: {key} is not from the environment"
                assert match["default"] in (None, "", DEV_PASSWORD), f"{name}: {key} has a default secret"
            for url in re.findall(r"postgresql://[^@\s]+@", value):
                assert "${AE_POSTGRES_PASSWORD" in url, f"{name}: {key} has a password written in"
    assert "dev-only" in text and "laptop only" in text, "the dev default is not documented as such"


def test_every_image_is_built_from_a_target_of_the_dockerfile() -> None:
    dockerfile = (REPO / "deploy" / "docker" / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.MULTILINE))
    for name, service in services().items():
        if "build" not in service:
            continue
        build = service["build"]
        assert build["context"] == "." and (REPO / build["dockerfile"]).is_file(), name
        assert build["target"] in targets, f"{name} builds target {build['target']}, not in the Dockerfile"
        assert service["image"] == f"agent-engine/{build['target']}"
    built = {s["build"]["target"] for s in services().values() if "build" in s}
    assert built == {*SERVICES, "agentctl"}


def test_every_file_mounted_from_the_repository_exists_and_every_volume_is_declared() -> None:
    declared = set(compose()["volumes"])
    for name, service in services().items():
        for mount in mounts(service):
            if mount["type"] == "bind":
                assert (REPO / mount["source"]).exists(), f"{name} mounts {mount['source']}, which does not exist"
            else:
                assert mount["source"] in declared, f"{name} uses volume {mount['source']}, not declared"


def test_images_of_other_projects_are_pinned_to_a_release() -> None:
    for name in ("nats", "postgres"):
        image = services()[name]["image"]
        assert re.fullmatch(r"[a-z]+:\d+\.\d+(\.\d+)?-[a-z0-9.]+", image), f"{name}: {image}"


# ---- the nats-server configuration, run for real ----------------------------------------------------------------

def _container_layout(tmp: Path) -> Path:
    """The files as the nats container sees them, under tmp: /etc/nats/agent-engine.conf and /keyring (made
    by `agentctl keyring init`, as the keyring job does). Returns the config file."""
    mount = next(m for m in mounts(services()["nats"]) if m["source"].endswith("nats.conf"))
    conf = tmp / mount["target"].lstrip("/")
    conf.parent.mkdir(parents=True)
    text = (REPO / mount["source"]).read_text()
    store = re.search(r'store_dir: "([^"]+)"', text)
    data = next(m["target"] for m in mounts(services()["nats"]) if m["source"] == "nats-data")
    assert store and store[1].startswith(data + "/"), "JetStream does not store in the nats-data volume"
    conf.write_text(text.replace(store[0], f'store_dir: "{tmp / store[1].lstrip("/")}"'))
    assert main(["keyring", "init", str(tmp / "keyring")]) == 0
    command = services()["nats"]["command"]
    assert command[-1] == mount["target"], "nats is not started with the mounted configuration"
    return conf


def test_the_nats_configuration_includes_the_keyring_authorization(tmp_path: Path) -> None:
    conf = _container_layout(tmp_path)
    done = subprocess.run([nats_binary(), "-c", str(conf), "-t"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    (tmp_path / "keyring" / "auth.conf").unlink()
    done = subprocess.run([nats_binary(), "-c", str(conf), "-t"], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "auth.conf" in done.stderr + done.stdout  # really included, not ignored


@pytest.mark.integration
def test_nats_as_configured_for_compose_serves_jetstream_health_and_only_keyring_credentials(
        tmp_path: Path) -> None:
    """The committed nats.conf run by the real nats-server (ports and store directory moved to free ones here):
    the healthcheck's URL answers 200 once JetStream is up, a service's credential connects and may use
    JetStream, and a connection without a credential is refused."""
    conf = _container_layout(tmp_path)
    port, monitor = free_port(), free_port()
    log = tmp_path / "nats.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([nats_binary(), "-c", str(conf), "-a", "127.0.0.1", "-p", str(port),
                                   "-m", str(monitor)],
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        health = f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"
        assert any(word.endswith(health.split(f":{monitor}")[1]) for word in services()["nats"]["healthcheck"]["test"])
        assert _wait_ok(health), log.read_text()

        async def connect(credential: Path | None, jetstream: bool = False) -> str:
            options = auth_options(load_credential(credential)) if credential else {}
            try:
                nc = await nats.connect(f"nats://127.0.0.1:{port}", connect_timeout=3, allow_reconnect=False,
                                        max_reconnect_attempts=0, **options)
            except Exception as exc:  # noqa: BLE001  the refusal is what is checked
                return f"refused: {exc}"
            try:
                await nc.flush(timeout=3)
                if jetstream:  # a right only the platform administrator has among these
                    await nc.jetstream().account_info()
                return "connected"
            finally:
                await nc.close()

        keyring = tmp_path / "keyring"
        for name in SERVICES:
            assert asyncio.run(connect(keyring / "services" / f"{name}.json")) == "connected", name
        assert asyncio.run(connect(keyring / "platform" / "admin.json", jetstream=True)) == "connected"
        assert asyncio.run(connect(None)).startswith("refused")
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_ok(url: str, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def test_the_compose_readiness_check_passes_on_200_and_fails_on_503_or_no_server() -> None:
    command = services()["router"]["healthcheck"]["test"][1:]
    with health_stub.serving("/readyz") as (port, handler):
        assert health_stub.check_passes(command, port)
        handler.status = 503
        assert not health_stub.check_passes(command, port)
    assert not health_stub.check_passes(command, free_port())
