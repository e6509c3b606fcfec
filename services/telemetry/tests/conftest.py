"""A PostgreSQL ledger of its own for each test that asks for `pg`: fresh tables under a random prefix, on the
session's PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from agent_engine.telemetry.projection import PgLedger


@pytest.fixture
def pg(postgres_url: str) -> Iterator[PgLedger]:
    ledger = PgLedger(postgres_url, f"ae_ledger_t{uuid.uuid4().hex[:8]}")
    ledger.resume("AE_EVENTS created test", 0)
    yield ledger
    ledger.close()
