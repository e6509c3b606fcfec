from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from agent_engine.contracts.upcasting import upcast

RequestBody = Callable[..., dict[str, Any]]


@pytest.fixture(params=["v1", "v2"])
def request_body(request: pytest.FixtureRequest) -> RequestBody:
    """A valid task.requested envelope as a dict, as a v1 client or a v2 one writes it (every test runs with
    both: guardrails accepts both versions); keyword arguments override top-level fields by their v1 names."""

    def build(**overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "specversion": "1.0", "id": "req-1", "source": "test", "type": "task.requested",
            "time": "2026-03-01T12:00:00Z", "tenant": "acme", "task_id": "task-1", "correlation_id": "corr-1",
            "schema_version": 1,
            "data": {"workflow": "research-review", "input": {"brief": "hello"},
                     "idempotency_key": "k-1", "requested_by": "tester"},
        }
        body.update(overrides)
        return upcast(body) if request.param == "v2" else body

    return build


@pytest.fixture
def encode() -> Callable[[Any], bytes]:
    return lambda value: json.dumps(value).encode()
