"""`agentctl keyring init DIR`, the credentials of a compose or Kubernetes deployment, and `tenant add` on such a
keyring, whose NATS server runs elsewhere: no servers, files only."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent_engine.cli.main import main
from agent_engine.cli.stack import SERVICES
from agent_engine.contracts.credentials import load_credential
from agent_engine.runtime.auth import public_key
from agent_engine.runtime.keyring import CREDENTIAL_ENV, KEYRING_ENV, Keyring

SECRETS = [*(f"services/{name}.json" for name in SERVICES), "platform/admin.json", "master.key", "auth.conf"]


def _contents(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in SECRETS}


def test_init_writes_every_file_a_deployment_needs_readable_by_its_owner_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "keyring"
    assert main(["keyring", "init", str(root)]) == 0
    out = capsys.readouterr().out
    for name in SECRETS:
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o600, name
        assert f"made   {name}" in out or name == "auth.conf"
    assert "wrote  auth.conf" in out
    conf = (root / "auth.conf").read_text()
    for name in SERVICES:
        credential = load_credential(root / "services" / f"{name}.json")
        assert credential.kind == "service" and credential.user == name
        assert public_key(credential.seed) in conf, f"auth.conf does not let {name} connect"
    assert public_key(load_credential(root / "platform" / "admin.json").seed) in conf
    key = (root / "master.key").read_text().strip()
    assert len(bytes.fromhex(key)) == 32  # what the router's AE_MASTER_KEY_FILE must hold


def test_a_second_init_keeps_every_key_and_the_tenants_issued_since(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "keyring"
    assert main(["keyring", "init", str(root)]) == 0
    first = _contents(root)
    tenant = Keyring(root).issue("acme", "billing", "submitter")
    tenant_key = public_key(load_credential(tenant).seed)
    capsys.readouterr()
    assert main(["keyring", "init", str(root)]) == 0
    out = capsys.readouterr().out
    again = _contents(root)
    for name in SECRETS[:-1]:
        assert again[name] == first[name], f"{name} was replaced: every service would lose its credential"
        assert f"kept   {name}" in out
    assert tenant_key in (root / "auth.conf").read_text(), "re-rendering auth.conf dropped a tenant's credential"


def test_init_fills_in_a_missing_credential_and_keeps_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "keyring"
    assert main(["keyring", "init", str(root)]) == 0
    router = (root / "services" / "router.json").read_bytes()
    (root / "services" / "telemetry.json").unlink()
    assert main(["keyring", "init", str(root)]) == 0
    assert (root / "services" / "router.json").read_bytes() == router
    assert load_credential(root / "services" / "telemetry.json").user == "telemetry"


def test_init_prints_the_kubernetes_secrets_and_the_compose_reload(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "keyring"
    assert main(["keyring", "init", str(root)]) == 0
    out = capsys.readouterr().out
    for name in SERVICES:
        assert (f"kubectl -n agent-engine create secret generic agent-engine-{name}-nats "
                f"--from-file=credential.json={root}/services/{name}.json") in out
    assert (f"kubectl -n agent-engine create secret generic agent-engine-master-key "
            f"--from-file=master.key={root}/master.key") in out
    assert f"kubectl -n nats create secret generic agent-engine-nats-auth --from-file=auth.conf={root}/auth.conf" in out
    assert "agent-engine-postgres --from-literal=url=" in out
    assert "agent-engine-provider --from-file=anthropic-api-key=" in out
    assert "docker compose kill -s HUP nats" in out


def test_init_refuses_a_damaged_credential_instead_of_replacing_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "keyring"
    assert main(["keyring", "init", str(root)]) == 0
    (root / "services" / "router.json").write_text("{not json")
    capsys.readouterr()
    assert main(["keyring", "init", str(root)]) == 1
    err = capsys.readouterr().err
    assert f"{root}/services/router.json is not an Agent Engine credential" in err
    assert (root / "services" / "router.json").read_text() == "{not json"


def test_init_on_a_path_under_a_file_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    assert main(["keyring", "init", str(tmp_path / "file" / "keyring")]) == 1
    assert "is a file, not a directory" in capsys.readouterr().err


def test_tenant_add_on_a_keyring_whose_server_runs_elsewhere_says_how_to_reload_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """As in docker compose: the NATS server is in another container, so servers.json names no live server;
    the credential is issued and auth.conf rewritten, and the operator is told to reload the server."""
    root = tmp_path / "keyring"
    assert main(["keyring", "init", str(root)]) == 0
    (root / "servers.json").write_text('[{"conf": "/elsewhere/auth.conf", "pid": 999999999, "log": "/nope"}]\n')
    monkeypatch.setenv(KEYRING_ENV, str(root))
    monkeypatch.setenv("AE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(CREDENTIAL_ENV, raising=False)
    capsys.readouterr()
    assert main(["tenant", "add", "acme"]) == 0
    out = capsys.readouterr()
    path = Path(out.out.strip())
    assert path == root / "tenants" / "acme" / "client.json"
    assert public_key(load_credential(path).seed) in (root / "auth.conf").read_text()
    assert "none was reloaded" in out.err
    assert f"{root}/auth.conf" in out.err and "docker compose kill -s HUP nats" in out.err
