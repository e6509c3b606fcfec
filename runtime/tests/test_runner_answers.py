"""What a runner sends back for a dispatch: each result encoded once (the bytes measured against the result limit
are the bytes published), and the keep-alive that beats while a call runs and stops when it is answered."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import DispatchedAgent, LlmCalled, NodeCompleted, NodeDispatched, Usage
from agent_engine.contracts.policy import OutputPolicy
from agent_engine.contracts.subjects import heartbeat_subject
from agent_engine.runtime.runner import MAX_RESULT_BYTES, _KeepAlive, _outgoing, result

T = datetime(2026, 12, 1, tzinfo=UTC)
SOURCE = "agent-engine/agent-runner"


def dispatch(**extra: Any) -> tuple[Envelope, NodeDispatched]:
    data = NodeDispatched(dispatch_id="d-1", node="n", kind="agent", attempt=1, deadline=T + timedelta(seconds=60),
                          agent=DispatchedAgent(name="a", provider="mock"), **extra)
    cause = Envelope(id="evt-1", source="router", type=data.TYPE, time=T, tenant="acme", task_id="t-1",
                     correlation_id="t-1", data=data.model_dump(mode="json", exclude_none=True))
    return cause, data


def answers(cause: Envelope, data: NodeDispatched, output: dict[str, Any]) -> list[Envelope]:
    called = LlmCalled(dispatch_id="d-1", node="n", provider="mock", model="mock-1", usage=Usage(), cost_usd="0",
                       price_table="v", outcome="valid")
    done = NodeCompleted(dispatch_id="d-1", node="n", attempt=1, output=output, provider="mock", model="mock-1")
    return [result(cause, SOURCE, called, "llm"), result(cause, SOURCE, done, "completed")]


def test_a_completion_is_published_as_the_bytes_its_size_was_measured_from() -> None:
    cause, data = dispatch()
    results = answers(cause, data, {"goal": "ship"})
    events, bodies = _outgoing(results, SOURCE, cause, data)
    assert events == results
    assert bodies == [None, results[1].to_bytes()]  # llm.called is not measured: encoded when published


def test_a_completion_sent_to_the_output_gate_is_encoded_as_what_is_sent() -> None:
    cause, data = dispatch(check_output=OutputPolicy())
    events, bodies = _outgoing(answers(cause, data, {"goal": "ship"}), SOURCE, cause, data)
    assert [e.type for e in events] == ["llm.called", "node.output_produced"]
    assert bodies == [None, None]


def test_a_completion_over_the_limit_is_replaced_by_an_error_encoded_when_sent() -> None:
    cause, data = dispatch()
    events, bodies = _outgoing(answers(cause, data, {"text": "x" * MAX_RESULT_BYTES}), SOURCE, cause, data)
    assert [e.type for e in events] == ["llm.called", "node.errored"] and bodies == [None, None]


class Delivery:
    def __init__(self, fail_after: int = 1000) -> None:
        self.progress = 0
        self.fail_after = fail_after

    async def in_progress(self) -> None:
        if self.progress >= self.fail_after:
            raise ConnectionError("gone")
        self.progress += 1


async def test_the_keep_alive_beats_while_a_call_runs_and_stops_when_cancelled() -> None:
    cause, data = dispatch()
    beats: list[tuple[str, dict[str, Any]]] = []

    async def publish(subject: str, body: bytes) -> None:
        beats.append((subject, json.loads(body)))

    msg = Delivery()
    keep = _KeepAlive(SimpleNamespace(nc=SimpleNamespace(publish=publish)), msg, cause, data,  # type: ignore[arg-type]
                      SimpleNamespace(ack_wait_s=10.0, heartbeat_s=0.05))  # type: ignore[arg-type]
    await asyncio.sleep(0.28)
    keep.cancel()
    seen = len(beats)
    assert 3 <= seen <= 6 and msg.progress == seen
    assert beats[0] == (heartbeat_subject("acme"), {"task_id": "t-1", "node": "n", "dispatch_id": "d-1"})
    await asyncio.sleep(0.15)
    assert len(beats) == seen  # answered: no more beats


async def test_an_answer_before_the_first_beat_sends_none() -> None:
    cause, data = dispatch()
    msg = Delivery()
    keep = _KeepAlive(SimpleNamespace(), msg, cause, data, SimpleNamespace(ack_wait_s=10.0, heartbeat_s=0.05))  # type: ignore[arg-type]
    keep.cancel()
    await asyncio.sleep(0.12)
    assert msg.progress == 0


async def test_the_keep_alive_stops_when_the_server_is_gone() -> None:
    cause, data = dispatch()
    msg = Delivery(fail_after=2)

    async def publish(subject: str, body: bytes) -> None:
        return None

    keep = _KeepAlive(SimpleNamespace(nc=SimpleNamespace(publish=publish)), msg, cause, data,  # type: ignore[arg-type]
                      SimpleNamespace(ack_wait_s=10.0, heartbeat_s=0.03))  # type: ignore[arg-type]
    await asyncio.sleep(0.25)
    assert msg.progress == 2 and keep.timer is None  # the failed beat scheduled no other
    keep.cancel()
