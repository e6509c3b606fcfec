"""The agent-runner's own work per dispatch, in one process and without the bus: read a `node.dispatched` message
as the runner does, validate it, answer it with the mock provider, check the results' size and encode what would be
published. CPU time (`time.process_time`), so other work on a shared machine moves it far less than throughput.

    python bench/agent_path.py [--dispatches 3000] [--repeat 5]

Two dispatches of `bench/workflows/linear5`'s shape (the third node: two upstream outputs), one without and one
with an output schema (docs/performance.md, "The agent-runner's mock path").
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from agent_engine.agent_runner.providers import Gateway
from agent_engine.agent_runner.service import SOURCE, AgentRunner
from agent_engine.contracts.envelope import Envelope
from agent_engine.runtime.runner import _as_dispatch, _outgoing

T = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
SCHEMA = {"type": "object", "required": ["goal", "constraints"],
          "properties": {"goal": {"type": "string", "minLength": 1},
                         "constraints": {"type": "array", "items": {"type": "string"}}}}


def message(schema: dict[str, Any] | None) -> bytes:
    agent: dict[str, Any] = {"name": "step", "provider": "mock", "model": "claude-sonnet-4-5", "system": "",
                             "prompt": "Take one step."}
    if schema is not None:
        agent["output_schema_json"] = schema
    data = {"dispatch_id": "d-3", "node": "n3", "kind": "agent", "attempt": 1,
            "deadline": (T + timedelta(seconds=60)).isoformat(), "agent": agent,
            "context": {"input": {}, "upstream": {"n1": {}, "n2": {}}}}
    return Envelope(id="evt-3", source="agent-engine/router", type="node.dispatched", time=T, tenant="bench",
                    task_id="task-1", correlation_id="task-1", data=data).to_bytes()


async def answer(runner: AgentRunner, body: bytes) -> list[bytes]:
    cause, dispatch = _as_dispatch(Envelope.from_bytes(body), "agent")
    events, bodies = _outgoing(await runner.handle(cause, dispatch), SOURCE, cause, dispatch)
    return [e.to_bytes() if b is None else b for e, b in zip(events, bodies, strict=True)]


async def measure(dispatches: int, repeat: int) -> None:
    runner = AgentRunner(Gateway())
    for label, schema in (("no output schema", None), ("an output schema", SCHEMA)):
        body = message(schema)
        for _ in range(200):  # warm: caches filled, code paths imported
            await answer(runner, body)
        runs = []
        for _ in range(repeat):
            began = time.process_time()
            for _ in range(dispatches):
                await answer(runner, body)
            runs.append((time.process_time() - began) / dispatches * 1e6)
        print(f"{label}: {min(runs):.0f} µs CPU per dispatch (best of {repeat}; all {[round(r) for r in runs]})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dispatches", type=int, default=3000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    asyncio.run(measure(args.dispatches, args.repeat))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
