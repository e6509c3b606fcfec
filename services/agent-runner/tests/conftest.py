from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


MESSAGE = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "{\"goal\": \"x\"}"}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 3,
              "cache_creation_input_tokens": 2},
}


@dataclass
class FakeAnthropic:
    """Just enough of the Anthropic Messages API: POST /v1/messages answers with `status` and `body`."""

    port: int = 0
    status: int = 200
    body: dict[str, Any] = field(default_factory=lambda: dict(MESSAGE))
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def fake_anthropic(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropic]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    state = FakeAnthropic()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            state.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                   "json": json.loads(raw or b"{}")})
            payload = json.dumps(state.body).encode()
            self.send_response(state.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
