from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

RequestBody = Callable[..., dict[str, Any]]


@pytest.fixture
def request_body() -> RequestBody:
    """A valid task.requested envelope as a dict; keyword arguments override top-level fields."""

    def build(**overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "specversion": "1.0", "id": "req-1", "source": "test", "type": "task.requested",
            "time": "2026-03-01T12:00:00Z", "tenant": "acme", "task_id": "task-1", "correlation_id": "corr-1",
            "schema_version": 1,
            "data": {"workflow": "research-review", "input": {"brief": "hello"},
                     "idempotency_key": "k-1", "requested_by": "tester"},
        }
        body.update(overrides)
        return body

    return build


@pytest.fixture
def encode() -> Callable[[Any], bytes]:
    return lambda value: json.dumps(value).encode()
