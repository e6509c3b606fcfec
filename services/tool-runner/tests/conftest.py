from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import DispatchedTool, NodeDispatched
from agent_engine.runtime.bus import auth_options
from agent_engine.runtime.keyring import credential_from_env
from agent_engine.runtime.streams import ensure_streams
from agent_engine.tool_runner.calls import CallLog

Dispatch = Callable[..., tuple[Envelope, NodeDispatched]]


@pytest.fixture
def tool_dispatch() -> Dispatch:
    """(cause envelope, dispatch) for one tool node, as the router would publish it."""

    def build(builtin: str = "text_stats", args: dict[str, Any] | None = None, *, name: str = "brief_stats",
              attempt: int = 1, with_tool: bool = True, task_id: str = "task-1", node: str = "gather_context",
              side_effects: bool | None = None, deadline_s: float = 60.0, resumed: int | None = None,
              ) -> tuple[Envelope, NodeDispatched]:
        now = datetime.now(UTC)
        dispatch_id = f"disp-{task_id}-{node}-{attempt}"
        tool = DispatchedTool(name=name, builtin=builtin, args=args or {}, side_effects=side_effects, resumed=resumed)
        dispatch = NodeDispatched(
            dispatch_id=dispatch_id, node=node, kind="tool", attempt=attempt,
            deadline=now + timedelta(seconds=deadline_s), tool=tool if with_tool else None)
        cause = Envelope(id=f"evt-{dispatch_id}", source="agent-engine/router", type=NodeDispatched.TYPE, time=now,
                         tenant="acme", task_id=task_id, correlation_id="corr-1", causation_id="evt-0",
                         data=dispatch.model_dump(mode="json", exclude_none=True))
        return cause, dispatch

    return build


@pytest.fixture
def task_id() -> str:
    """A fresh task id, so call-log keys of different tests never meet."""
    return f"task-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def calls(nats_url: str) -> AsyncIterator[CallLog]:
    nc = await nats.connect(nats_url, **auth_options(credential_from_env()))
    js = nc.jetstream()
    await ensure_streams(js)
    yield await CallLog.open(js)
    await nc.close()

