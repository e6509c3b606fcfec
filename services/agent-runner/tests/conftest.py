from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import DispatchedAgent, NodeContext, NodeDispatched

Dispatch = Callable[..., tuple[Envelope, NodeDispatched]]

INTERPRETATION = {
    "type": "object",
    "required": ["goal", "constraints"],
    "properties": {"goal": {"type": "string", "minLength": 1},
                   "constraints": {"type": "array", "items": {"type": "string"}}},
}


@pytest.fixture
def agent_dispatch() -> Dispatch:
    """(cause envelope, dispatch) for one agent node; keyword arguments configure the agent."""

    def build(*, attempt: int = 1, **agent: Any) -> tuple[Envelope, NodeDispatched]:
        spec: dict[str, Any] = {"name": "interpreter", "provider": "mock", "model": "claude-sonnet-4-5",
                                "system": "You are careful.", "prompt": "Interpret the brief.",
                                "output_schema": "interpretation", "output_schema_json": INTERPRETATION}
        spec.update(agent)
        now = datetime.now(UTC)
        dispatch = NodeDispatched(
            dispatch_id="disp-7", node="interpretation", kind="agent", attempt=attempt,
            deadline=now + timedelta(seconds=60), agent=DispatchedAgent(**spec),
            context=NodeContext(input={"brief": "Compare engines."}, upstream={"gather_context": {"words": 2}}))
        cause = Envelope(id=f"evt-dispatch-{attempt}", source="agent-engine/router", type=NodeDispatched.TYPE,
                         time=now, tenant="acme", task_id="task-1", correlation_id="corr-1",
                         data=dispatch.model_dump(mode="json", exclude_none=True))
        return cause, dispatch

    return build


sys.path.insert(0, str(Path(__file__).parent))
from fake_llm import FakeServer, fake_anthropic_server, fake_openai_server, serve  # noqa: E402


@pytest.fixture
def fake_anthropic(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    """A local server speaking the Anthropic Messages API (see fake_llm.py)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with serve(fake_anthropic_server()) as server:
        yield server


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    """A local server speaking the OpenAI chat-completions API (see fake_llm.py)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with serve(fake_openai_server()) as server:
        yield server

