"""Run a tool dispatch: look the tool up, validate its arguments, run it within its time limit,
validate its result; and never run a side-effecting tool twice for one node of a task."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import DispatchedTool, NodeCompleted, NodeDispatched
from agent_engine.runtime import metrics
from agent_engine.runtime.artifacts import ArtifactStore
from agent_engine.runtime.runner import MAX_RESULT_BYTES, errored, offloaded, result
from agent_engine.tool_runner import workspace_files
from agent_engine.tool_runner.calls import CallLog, CallRecord, call_key
from agent_engine.tool_runner.config import ToolConfig
from agent_engine.tool_runner.mcp import NotReached
from agent_engine.tool_runner.tools import REGISTRY, Context, Scope, Tool, ToolError

SOURCE = "agent-engine/tool-runner"
COMPLETED = ("node.completed", "node.output_produced")
MAX_CONCURRENT = 16
"""Tool runs at once per tool-runner; more dispatches wait their turn (their time limit runs meanwhile)."""
MAX_TO_MARK = 1024
"""Answers kept waiting for their publish to be acknowledged (`to_mark`), at most; beyond, the oldest is forgotten."""
log = logging.getLogger("tool-runner")


class ToolRunner:
    def __init__(self, config: ToolConfig, registry: dict[str, Tool] | None = None,
                 calls: CallLog | None = None, artifacts: ArtifactStore | None = None) -> None:
        self.config = config
        self.artifacts = artifacts
        """Where output fields too large for an event go (docs/observability.md, "Artifacts"); without it they
        are refused over MAX_RESULT_BYTES as before."""
        self.registry = registry if registry is not None else REGISTRY
        self.calls = calls
        """Without a call log, side-effecting tools are refused rather than run unguarded."""
        self.threads = ThreadPoolExecutor(max_workers=MAX_CONCURRENT, thread_name_prefix="tool")
        """Tools block (files, HTTP, a snippet's process); their own pool keeps them off asyncio's default one."""
        self.to_mark: OrderedDict[str, tuple[str, CallRecord]] = OrderedDict()
        """Per dispatch event answered with a result the call log stores: its key and record, to replace with a
        marker once the stream holds the result (`published`). An answer whose publish failed stays until its
        redelivery here answers it again; one redelivered to another replica, or dead-lettered, never comes back,
        so at most MAX_TO_MARK are kept, the oldest forgotten first (its result stays stored, as after a crash,
        and a later delivery of the dispatch marks it)."""

    async def handle(self, cause: Envelope, dispatch: NodeDispatched) -> list[Envelope]:
        answer = await self._respond(cause, dispatch)
        if not answer:  # a call whose result the stream already holds: nothing ran, nothing to publish
            return answer
        # each answered delivery counts: a redelivered dispatch of an idempotent tool really runs again
        outcome = "completed" if any(e.type in COMPLETED for e in answer) else "errored"
        metrics.tool_ran(cause.tenant, dispatch.tool.name if dispatch.tool else "none", outcome)
        return answer

    async def published(self, cause: Envelope, dispatch: NodeDispatched, events: list[Envelope]) -> None:
        """The stream has acknowledged `events`, the answer to `cause`: a result the call log stores for it goes,
        replaced by a marker, so the bucket keeps no content (a crash before this point leaves the result stored,
        and the redelivery publishes it, a duplicate the stream drops, and marks it then)."""
        pending = self.to_mark.pop(cause.id, None)
        if pending is None or self.calls is None:
            return
        key, record = pending
        stored = record.result()
        if stored is not None and any(e.id == stored.id for e in events):
            await self.calls.mark_published(key, record, stored)

    def _mark_later(self, cause: Envelope, key: str, record: CallRecord) -> None:
        self.to_mark[cause.id] = (key, record)
        self.to_mark.move_to_end(cause.id)
        while len(self.to_mark) > MAX_TO_MARK:
            self.to_mark.popitem(last=False)

    async def _respond(self, cause: Envelope, dispatch: NodeDispatched) -> list[Envelope]:
        call = dispatch.tool
        if call is None:
            return [errored(cause, SOURCE, dispatch, "tool dispatch carries no tool", retryable=False)]
        tool = self.registry.get(call.builtin)
        if tool is None:
            return [errored(cause, SOURCE, dispatch, f"tool '{call.name}' names built-in '{call.builtin}', which "
                            f"this tool-runner does not have; it has {sorted(self.registry)}", retryable=False)]
        try:
            tool.check(call.args)
        except ToolError as exc:
            return [errored(cause, SOURCE, dispatch, str(exc), retryable=False)]
        limit = self.time_limit(dispatch)
        if not tool.idempotent or call.side_effects:
            return await self._run_once(cause, dispatch, call, tool, limit)
        if limit <= 0:
            return [self._too_late(cause, dispatch, call)]
        return [await self._run(cause, dispatch, call, tool, limit, guarded=False)]

    def time_limit(self, dispatch: NodeDispatched) -> float:
        """AE_TOOL_TIMEOUT_S, cut short by the dispatch's deadline: past it the router has moved on."""
        deadline = dispatch.deadline if dispatch.deadline.tzinfo else dispatch.deadline.replace(tzinfo=UTC)
        return min(self.config.timeout_s, (deadline - datetime.now(UTC)).total_seconds())

    async def _run_once(self, cause: Envelope, dispatch: NodeDispatched, call: DispatchedTool, tool: Tool,
                        limit: float) -> list[Envelope]:
        """A side-effecting call: claim it, run it, store the result; or answer from what is stored (nothing, when
        the stream holds the result already)."""
        why = "its built-in is not idempotent" if not tool.idempotent else "tools.yaml declares side_effects: true"
        if self.calls is None:
            return [errored(cause, SOURCE, dispatch, f"tool '{call.name}' has side effects ({why}) and this "
                            "tool-runner has no call log to make sure it runs only once; not run", retryable=False)]
        key = call_key(cause.tenant, cause.task_id, dispatch.node, dispatch.call.call_id if dispatch.call else None,
                       call.resumed)
        prior = await self.calls.recorded(key)  # first: a late redelivery still gets the stored result
        if prior is None:
            if limit <= 0:
                return [self._too_late(cause, dispatch, call)]
            prior = await self.calls.claim(key, dispatch)
        if prior is not None:
            return await self._answer_from(prior, key, cause, dispatch, call)
        try:
            event = await self._run(cause, dispatch, call, tool, limit, guarded=True)
        except NotReached as exc:  # nothing ran: withdraw the claim, so the next attempt is a fresh call
            log.info("node %s: tool %s did not reach its server (%s); claim withdrawn", dispatch.node, call.name, exc)
            await self.calls.release(key, dispatch)
            return [errored(cause, SOURCE, dispatch, str(exc), retryable=True)]
        self._mark_later(cause, key, await self.calls.finish(key, dispatch, event))
        return [event]

    def _too_late(self, cause: Envelope, dispatch: NodeDispatched, call: DispatchedTool) -> Envelope:
        return errored(cause, SOURCE, dispatch, f"the dispatch's deadline ({dispatch.deadline.isoformat()}) passed "
                       f"before tool '{call.name}' could start; not run", retryable=True)

    async def _answer_from(self, prior: CallRecord, key: str, cause: Envelope, dispatch: NodeDispatched,
                           call: DispatchedTool) -> list[Envelope]:
        if prior.state == "published" and prior.published is not None:
            return self._answer_published(prior, prior.published, cause, dispatch, call)
        stored = prior.result()
        if stored is not None and (stored.type == "node.completed" or prior.dispatch_id == dispatch.dispatch_id):
            # The event as first answered, same id: if it was never published (a crash in between, or a call log
            # entry written before results were replaced by markers), the router takes it now, and a completion of
            # an earlier attempt settles a node that is still open; else JetStream and the router drop a duplicate.
            log.info("node %s: tool %s already ran (attempt %d); answering with its stored result",
                     dispatch.node, call.name, prior.attempt)
            self._mark_later(cause, key, prior)
            return [stored]
        if stored is not None:  # an earlier attempt's error: the router ignores those, so answer this one
            error = stored.data.get("error", "")
            # and keep only the marker: that attempt is over (published or not, the router has moved on), and its
            # error text (a path, say) must not stay in the bucket for its TTL; this answer carries it instead
            if self.calls is not None:
                await self.calls.mark_published(key, prior, stored)
            return [errored(cause, SOURCE, dispatch, f"tool '{call.name}' has side effects and already ran for "
                            f"node '{dispatch.node}' in attempt {prior.attempt}, which failed: {error}; "
                            "not run again", retryable=False)]
        log.warning("node %s: tool %s was claimed by %s at %s (attempt %d) and has no result; not running it again",
                    dispatch.node, call.name, prior.runner, prior.at, prior.attempt)
        return [errored(cause, SOURCE, dispatch, f"tool '{call.name}' has side effects and may have run already: "
                        f"attempt {prior.attempt} started it at {prior.at} ({prior.runner}) and left no result; "
                        f"not run twice; inspect and re-run by hand (call log key {key})", retryable=False)]

    def _answer_published(self, prior: CallRecord, marker: dict[str, Any], cause: Envelope, dispatch: NodeDispatched,
                          call: DispatchedTool) -> list[Envelope]:
        """A call whose result the stream holds: a completion (of any attempt), or this dispatch's own error, is
        not published again (the router has it, or will: it settles a node still open); an earlier attempt's
        error, which the router ignores, gets an answer for this attempt."""
        if marker.get("type") != "node.errored" or prior.dispatch_id == dispatch.dispatch_id:
            log.info("node %s: tool %s already ran (attempt %d) and its result event %s is in the stream; "
                     "not run or published again", dispatch.node, call.name, prior.attempt, marker.get("id"))
            return []
        return [errored(cause, SOURCE, dispatch, f"tool '{call.name}' has side effects and already ran for node "
                        f"'{dispatch.node}' in attempt {prior.attempt}, which failed (its error is event "
                        f"{marker.get('id')}); not run again", retryable=False)]

    async def _run(self, cause: Envelope, dispatch: NodeDispatched, call: DispatchedTool, tool: Tool,
                   limit: float, *, guarded: bool) -> Envelope:
        """Run the tool once and turn what happened into the event answering the dispatch."""
        started = time.perf_counter()
        ctx = Context(self.config, limit, scope=Scope(cause.tenant, cause.task_id, dispatch.node, call.project))
        maybe_ran = " and may have had its effect; not retried" if guarded else ""
        try:
            running = asyncio.get_running_loop().run_in_executor(self.threads, tool.run, call.args, ctx)
            output = await asyncio.wait_for(running, limit)
            tool.check_result(output)
        except NotReached as exc:
            if guarded:  # the call never reached its tool: _run_once withdraws the claim
                raise
            return errored(cause, SOURCE, dispatch, str(exc), retryable=True)
        except ToolError as exc:
            return errored(cause, SOURCE, dispatch, str(exc), retryable=exc.retryable and not guarded)
        except TimeoutError:
            return errored(cause, SOURCE, dispatch, f"tool '{call.name}' ran over {limit:g}s{maybe_ran}",
                           retryable=not guarded)
        except Exception as exc:  # a bug in a tool becomes the node's error, not a redelivery loop
            log.exception("tool %s failed on node %s", call.builtin, dispatch.node)
            return errored(cause, SOURCE, dispatch, f"tool '{call.name}' failed: {type(exc).__name__}: {exc}"
                           f"{maybe_ran}", retryable=not guarded)
        log.debug("node %s ran tool %s", dispatch.node, call.builtin)
        event = result(cause, SOURCE, NodeCompleted(
            dispatch_id=dispatch.dispatch_id, node=dispatch.node, attempt=dispatch.attempt, output=output,
            provider=f"tool:{call.builtin}", duration_ms=round((time.perf_counter() - started) * 1000, 2)),
            "completed")
        if self.artifacts is not None:  # before the call log stores the event: a replay answers with references
            if ctx.written:
                files = await workspace_files.stored(self.artifacts, cause.tenant, ctx.workspace, ctx.written)
                if files:
                    event = event.model_copy(update={"data": {**event.data, "files": [f.model_dump() for f in files]}})
            event = await offloaded(self.artifacts, event, SOURCE, cause, dispatch)
        return _within_limit(event, cause, dispatch)


def _within_limit(event: Envelope, cause: Envelope, dispatch: NodeDispatched) -> Envelope:
    """The runner loop makes the same check; doing it here first means the call log stores what is published."""
    size = len(event.to_bytes())
    if size <= MAX_RESULT_BYTES:
        return event
    return errored(cause, SOURCE, dispatch, f"output is {size // 1024} KiB, over the {MAX_RESULT_BYTES // 1024} KiB "
                   "a node result may carry with its large fields stored as artifacts", retryable=False)

