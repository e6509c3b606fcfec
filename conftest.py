"""Test layers for every suite: a test that needs a real NATS or PostgreSQL carries the `integration`
marker (or `e2e` when it needs the whole stack), so `make test-unit` runs no servers at all."""

from __future__ import annotations

import pytest

SERVER_FIXTURES = frozenset({"postgres_url", "nats_url", "servers", "engine", "own_stack", "live_engine"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items
                if SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
                and not ({"integration", "e2e"} & set(item.keywords))]
    if unmarked:
        raise pytest.UsageError("tests that start real servers must be marked integration (or e2e): "
                                + ", ".join(unmarked[:5]))
