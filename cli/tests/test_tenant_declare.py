"""`agentctl tenant declare T`: serve a tenant that has no credential, so the services may use its artifact
bucket (runtime/auth.py names each served tenant's bucket). Files only: the server runs elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_engine.cli.client import DEFAULT_TENANT
from agent_engine.cli.main import main
from agent_engine.runtime.keyring import CREDENTIAL_ENV, KEYRING_ENV, Keyring


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "keyring"
    assert main(["keyring", "init", str(root)]) == 0
    monkeypatch.setenv(KEYRING_ENV, str(root))
    monkeypatch.setenv("AE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(CREDENTIAL_ENV, raising=False)
    return root


def test_agentctls_default_tenant_is_served_without_a_declaration(root: Path) -> None:
    assert Keyring(root).tenants() == [DEFAULT_TENANT]
    assert f"$JS.API.STREAM.MSG.GET.OBJ_ae_artifacts_{DEFAULT_TENANT}" in (root / "auth.conf").read_text()


def test_declare_opens_the_tenants_bucket_in_auth_conf_once(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "OBJ_ae_artifacts_acme" not in (root / "auth.conf").read_text()
    capsys.readouterr()
    assert main(["tenant", "declare", "acme"]) == 0
    out = capsys.readouterr().out
    assert "tenant 'acme' is served" in out and "none was reloaded" in out
    assert "$JS.API.STREAM.MSG.GET.OBJ_ae_artifacts_acme" in (root / "auth.conf").read_text()
    assert Keyring(root).tenants() == ["acme", DEFAULT_TENANT]
    assert main(["tenant", "declare", "acme"]) == 0
    assert "was declared already" in capsys.readouterr().out


def test_declare_refuses_a_bad_name_and_a_tenant_credential(root: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tenant", "declare", "a.b"]) == 1
    assert "tenant name 'a.b' is not valid" in capsys.readouterr().err
    monkeypatch.setenv(CREDENTIAL_ENV, str(Keyring(root).issue("acme", "root", "admin")))
    assert main(["tenant", "declare", "beta"]) == 1
    assert "may not declare a tenant" in capsys.readouterr().err
    assert Keyring(root).tenants() == ["acme", DEFAULT_TENANT]  # acme by its credential; beta not declared
