from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import DispatchedTool, NodeDispatched

Dispatch = Callable[..., tuple[Envelope, NodeDispatched]]


@pytest.fixture
def tool_dispatch() -> Dispatch:
    """(cause envelope, dispatch) for one tool node, as the router would publish it."""

    def build(builtin: str = "text_stats", args: dict[str, Any] | None = None, *, name: str = "brief_stats",
              attempt: int = 1, with_tool: bool = True) -> tuple[Envelope, NodeDispatched]:
        now = datetime.now(UTC)
        dispatch = NodeDispatched(
            dispatch_id="disp-1", node="gather_context", kind="tool", attempt=attempt,
            deadline=now + timedelta(seconds=60),
            tool=DispatchedTool(name=name, builtin=builtin, args=args or {}) if with_tool else None)
        cause = Envelope(id="evt-dispatch-1", source="agent-engine/router", type=NodeDispatched.TYPE, time=now,
                         tenant="acme", task_id="task-1", correlation_id="corr-1", causation_id="evt-0",
                         data=dispatch.model_dump(mode="json", exclude_none=True))
        return cause, dispatch

    return build
