"""Secret settings from a file (`<NAME>_FILE`, as a Kubernetes Secret or compose secret is mounted): the
PostgreSQL URL with its password never needs to sit in the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_engine.runtime.settings import Settings


def test_the_postgres_url_may_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AE_POSTGRES_URL", raising=False)
    (tmp_path / "url").write_text("postgresql://engine:s3cret@db:5432/engine\n")
    monkeypatch.setenv("AE_POSTGRES_URL_FILE", str(tmp_path / "url"))
    assert Settings().postgres_url == "postgresql://engine:s3cret@db:5432/engine"


@pytest.mark.parametrize(("env", "message"), [
    ({"AE_POSTGRES_URL": "postgresql://x", "AE_POSTGRES_URL_FILE": "/x"},
     "both AE_POSTGRES_URL and AE_POSTGRES_URL_FILE are set; set one of them"),
    ({"AE_POSTGRES_URL_FILE": "/nonexistent/url"}, "AE_POSTGRES_URL_FILE=/nonexistent/url: cannot read the file"),
])
def test_a_bad_postgres_url_setting_stops_the_service_naming_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                                          env: dict[str, str], message: str) -> None:
    monkeypatch.delenv("AE_POSTGRES_URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=message):
        Settings()


def test_an_empty_url_file_is_refused_rather_than_read_as_no_postgres(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    monkeypatch.delenv("AE_POSTGRES_URL", raising=False)
    (tmp_path / "url").write_text("\n")
    monkeypatch.setenv("AE_POSTGRES_URL_FILE", str(tmp_path / "url"))
    with pytest.raises(SystemExit, match="AE_POSTGRES_URL_FILE=.*: the file is empty"):
        Settings()
