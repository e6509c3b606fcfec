"""Run a tool dispatch: look the tool up, validate its arguments, run it with a time limit."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import NodeCompleted, NodeDispatched
from agent_engine.runtime.runner import errored, result
from agent_engine.tool_runner.tools import REGISTRY, Tool, ToolError

SOURCE = "agent-engine/tool-runner"
log = logging.getLogger("tool-runner")


class ToolRunner:
    def __init__(self, workspace: Path, registry: dict[str, Tool] | None = None, timeout_s: float = 30.0) -> None:
        self.workspace = workspace
        self.registry = registry if registry is not None else REGISTRY
        self.timeout_s = timeout_s

    async def handle(self, cause: Envelope, dispatch: NodeDispatched) -> list[Envelope]:
        call = dispatch.tool
        if call is None:
            return [errored(cause, SOURCE, dispatch, "tool dispatch carries no tool", retryable=False)]
        tool = self.registry.get(call.builtin)
        if tool is None:
            return [errored(cause, SOURCE, dispatch, f"tool '{call.name}' names built-in '{call.builtin}', which "
                            f"this tool-runner does not have; it has {sorted(self.registry)}", retryable=False)]
        started = time.perf_counter()
        try:
            tool.check(call.args)
            output = await asyncio.wait_for(asyncio.to_thread(tool.run, call.args, self.workspace), self.timeout_s)
        except ToolError as exc:
            return [errored(cause, SOURCE, dispatch, str(exc), retryable=False)]
        except TimeoutError:
            return [errored(cause, SOURCE, dispatch, f"tool '{call.name}' ran over {self.timeout_s:g}s",
                            retryable=tool.idempotent)]
        log.debug("node %s ran tool %s", dispatch.node, call.builtin)
        return [result(cause, SOURCE, NodeCompleted(
            dispatch_id=dispatch.dispatch_id, node=dispatch.node, attempt=dispatch.attempt, output=output,
            provider=f"tool:{call.builtin}", duration_ms=round((time.perf_counter() - started) * 1000, 2)),
            "completed")]
