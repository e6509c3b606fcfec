"""The dashboard's settings: a bad operators file or secret stops the start with what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_engine.dashboard.__main__ import load_config


def test_settings_are_read_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    operators, secret = tmp_path / "operators", tmp_path / "secret"
    operators.write_text("alice " + "t" * 20 + "\n")
    secret.write_text("s" * 32)
    monkeypatch.setenv("AE_DASHBOARD_OPERATORS", str(operators))
    monkeypatch.setenv("AE_DASHBOARD_SECRET_FILE", str(secret))
    config = load_config()
    assert list(config.operators) == ["alice"] and not config.open_read
    assert config.sessions.name_of(config.sessions.issue("alice", 0), 1) == "alice"

    operators.write_text("alice " + "t" * 20 + "\nbob short\n")
    with pytest.raises(SystemExit, match=r"AE_DASHBOARD_OPERATORS: .*operators line 2: the token of 'bob' is shorter"):
        load_config()
    monkeypatch.setenv("AE_DASHBOARD_OPERATORS", str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="AE_DASHBOARD_OPERATORS: .*No such file"):
        load_config()
    monkeypatch.delenv("AE_DASHBOARD_OPERATORS")
    secret.write_text("short")
    with pytest.raises(SystemExit, match="shorter than 16 bytes"):
        load_config()
