"""Make the router test helpers (`router_testkit`) importable: pytest runs with --import-mode=importlib,
which does not put test directories on sys.path. And the fixtures the store and shell tests share (a test file
defines its own to differ, as the snapshot tests do)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent_engine.router.store import TaskStore
from agent_engine.runtime.bus import Bus

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture
def store(postgres_url: str) -> Iterator[TaskStore]:
    opened = TaskStore(postgres_url)
    yield opened
    opened.close()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    opened = await Bus.open(nats_url, "router-test")
    yield opened
    await opened.close()
