"""What both runners share: consume node dispatches of one kind, answer each with result events.

A runner is stateless. It acks a dispatch only after its result is published, and result ids
derive from the dispatch id, so a redelivered dispatch yields the same ids (dropped by JetStream's
duplicate window, and by the router in any case).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg
from pydantic import ValidationError

from agent_engine.contracts.envelope import Envelope, Payload, caused_by, derive_id
from agent_engine.contracts.errors import validation_summary
from agent_engine.contracts.events import LlmCallNote, NodeDispatched, NodeErrored, NodeOutputProduced, ToolCallCleared
from agent_engine.contracts.events.guardrails import MAX_JUDGED_INPUTS
from agent_engine.contracts.subjects import CLEARED_DURABLE, dispatch_subject, heartbeat_subject, type_subject
from agent_engine.runtime import tracing
from agent_engine.runtime.artifacts import ArtifactError, ArtifactStore
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.inbox import read_all, refuse, settle, transient
from agent_engine.runtime.settings import Settings

log = logging.getLogger(__name__)
MAX_RESULT_BYTES = 256 * 1024
"""A node result event must leave room in later dispatches, which carry every upstream output. Output fields
over AE_ARTIFACT_THRESHOLD are stored as artifacts first (`offloaded`), so this caps what stays inline; one
field may be up to AE_ARTIFACT_MAX_BYTES (docs/observability.md, "Artifacts")."""
Handler = Callable[[Envelope, NodeDispatched], Awaitable[list[Envelope]]]
Published = Callable[[Envelope, NodeDispatched, list[Envelope]], Awaitable[None]]
"""Told, before the ack, that the stream acknowledged the events answering a dispatch (the tool-runner then drops
the result its call log kept for a crash before the publish); raising redelivers the dispatch."""


def result(cause: Envelope, source: str, data: Payload, suffix: str) -> Envelope:
    """An event answering a dispatch, with an id derived from the dispatch and `suffix`. Not validated again: every
    field is the runner's own (a payload model it built, a derived id) or the validated dispatch's."""
    return caused_by(cause, data, id=derive_id(cause.id, suffix), source=source, trusted=True)


def errored(cause: Envelope, source: str, dispatch: NodeDispatched, error: str, *, retryable: bool,
            llm_calls: list[LlmCallNote] | None = None) -> Envelope:
    return result(cause, source, NodeErrored(dispatch_id=dispatch.dispatch_id, node=dispatch.node,
                                             attempt=dispatch.attempt, error=error, retryable=retryable,
                                             llm_calls=llm_calls or None), "errored")


def to_gate(event: Envelope, dispatch: NodeDispatched) -> Envelope:
    """A completed answer to a dispatch whose workflow checks outputs goes to guardrails' output gate (as
    node.output_produced, same id and fields, plus the policy) instead of the router, which waits for the gate."""
    if dispatch.check_output is None or event.type != "node.completed":
        return event
    produced = NodeOutputProduced.model_validate({**event.data, "policy": dispatch.check_output,
                                                  "inputs": judged_inputs(dispatch), "budget_usd": dispatch.budget_usd})
    return event.model_copy(update={"type": produced.TYPE,
                                    "data": produced.model_dump(mode="json", by_alias=True, exclude_none=True)})


def judged_inputs(dispatch: NodeDispatched) -> dict[str, Any] | None:
    """What an agent node was given (the task input, the upstream outputs), for the output gate's grounding judge
    (the policy file may give a tenant one, which the runner cannot see); None for a tool node or when too large."""
    if dispatch.agent is None:
        return None
    inputs = {"input": dispatch.context.input, "upstream": dispatch.context.upstream}
    return inputs if len(json.dumps(inputs, default=str)) <= MAX_JUDGED_INPUTS else None


def _within_limit(event: Envelope, source: str, cause: Envelope, dispatch: NodeDispatched) -> Envelope:
    return _measured(event, source, cause, dispatch)[0]


def _measured(event: Envelope, source: str, cause: Envelope, dispatch: NodeDispatched) -> tuple[Envelope, bytes | None]:
    """`_within_limit`, with the bytes it measured (the event's `to_bytes`, None when it measured none), so a
    result is encoded once for both the limit and the publish."""
    if event.type not in ("node.completed", "node.tools_requested"):
        return event, None
    body = event.to_bytes()
    size = len(body)
    if size <= MAX_RESULT_BYTES:
        return event, body
    what = "output" if event.type == "node.completed" else "the model's request for tools"
    return errored(cause, source, dispatch, f"{what} is {size // 1024} KiB, over the {MAX_RESULT_BYTES // 1024} KiB "
                   "a node result may carry with its large fields stored as artifacts", retryable=False), None


def _outgoing(results: list[Envelope], source: str, cause: Envelope,
              dispatch: NodeDispatched) -> tuple[list[Envelope], list[bytes | None]]:
    """What answers the dispatch on the bus (each result within the limit, a completion to the output gate when
    the workflow checks outputs), with the bytes of those already encoded."""
    events: list[Envelope] = []
    bodies: list[bytes | None] = []
    for result_event in results:
        checked, body = _measured(result_event, source, cause, dispatch)
        sent = to_gate(checked, dispatch)
        events.append(sent)
        bodies.append(body if sent is checked else None)
    return events, bodies


async def offloaded(store: ArtifactStore, event: Envelope, source: str, cause: Envelope,
                    dispatch: NodeDispatched) -> Envelope:
    """A completion whose large output fields are stored as artifacts, with references in their place (the
    same event when none is large); an error answering the dispatch when a field is over the artifact limit."""
    if event.type != "node.completed" or not isinstance(event.data.get("output"), dict):
        return event
    try:
        # an output the output gate checks may be deleted by it: stored as this dispatch's own copy, never shared
        gated = dispatch.dispatch_id if dispatch.check_output is not None else None
        output = await store.offload(cause.tenant, event.data["output"], dispatch.node, dispatch=gated)
    except ArtifactError as exc:
        return errored(cause, source, dispatch, f"output not stored as an artifact: {exc}", retryable=False)
    if output is event.data["output"]:
        return event
    return event.model_copy(update={"data": {**event.data, "output": output}})


class _KeepAlive:
    """While a call runs: tell JetStream it is in progress (no redelivery meanwhile) and tell the router (a
    heartbeat, which extends the dispatch's deadline by the node's timeout), every `min(ack_wait / 2, heartbeat)`
    seconds after the last one. A timer rather than a task per dispatch: most answers (the mock's) come long
    before the first beat, and a timer costs less to start and to cancel."""

    def __init__(self, bus: Bus, msg: Msg, cause: Envelope, dispatch: NodeDispatched, settings: Settings) -> None:
        self.bus, self.msg, self.cause, self.dispatch = bus, msg, cause, dispatch
        self.every = min(settings.ack_wait_s / 2, settings.heartbeat_s)
        self.loop = asyncio.get_running_loop()
        self.beating: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = self.loop.call_later(self.every, self._due)

    def _due(self) -> None:
        self.timer = None
        self.beating = self.loop.create_task(self._beat())

    async def _beat(self) -> None:
        beat = json.dumps({"task_id": self.cause.task_id, "node": self.dispatch.node,
                           "dispatch_id": self.dispatch.dispatch_id}).encode()
        try:
            await self.msg.in_progress()
            await self.bus.nc.publish(heartbeat_subject(self.cause.tenant), beat)
        except Exception:  # noqa: BLE001  the final ack/nak reports real trouble
            return
        self.timer = self.loop.call_later(self.every, self._due)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.beating is not None:
            self.beating.cancel()


class NotCleared(Exception):
    """A tool dispatch that did not come through the tool gate."""


def _as_dispatch(envelope: Envelope, kind: str) -> tuple[Envelope, NodeDispatched]:
    """The dispatch a message carries, and the envelope its results derive from. A `tool.call_cleared` carries
    the router's dispatch with the id of its `node.dispatched` event: results derive their ids from that id, so
    they are exactly the ids a runner answering the dispatch itself would give (docs/guardrails.md). The
    tool-runner takes nothing else, even should its consumer still carry an older filter."""
    if kind == "tool":
        if envelope.type != ToolCallCleared.TYPE:
            raise NotCleared(f"the tool-runner runs only calls guardrails cleared (tool.call_cleared), not "
                             f"{envelope.type}; an old consumer filter? see docs/guardrails.md, upgrading")
        cleared = ToolCallCleared.model_validate(envelope.data)
        return envelope.model_copy(update={"id": cleared.dispatch_event}), cleared
    return envelope, NodeDispatched.model_validate(envelope.data)


async def serve(bus: Bus, kind: str, source: str, handler: Handler, settings: Settings, stop: asyncio.Event,
                *, published: Published | None = None) -> None:
    """Answer dispatches of one kind: the agent-runner takes `node.dispatched.agent`; the tool-runner takes only
    what guardrails' tool gate cleared (`tool.call_cleared`), never the router's tool dispatches themselves."""
    store = ArtifactStore(bus.js)

    async def handle_one(msg: Msg, received: Envelope) -> None:
        with tracing.processing(msg.headers, received, msg.subject):
            await answer_one(msg, received)

    async def answer_one(msg: Msg, received: Envelope) -> None:
        try:
            envelope, dispatch = _as_dispatch(received, kind)
        except ValidationError as exc:
            await refuse(bus, msg, f"not a valid {received.type} payload: {validation_summary(exc, count_rest=True)}")
            return
        except NotCleared as exc:
            await refuse(bus, msg, str(exc))
            return
        heartbeat = _KeepAlive(bus, msg, envelope, dispatch, settings)
        try:
            results = await _answer(handler, envelope, dispatch, source)
            results = [await offloaded(store, e, source, envelope, dispatch) for e in results]
            events, bodies = _outgoing(results, source, envelope, dispatch)
            await bus.publish_many(events, bodies)
            if published is not None:
                await published(envelope, dispatch, events)
        except Exception as exc:  # noqa: BLE001  the bus is down: settle decides (redeliver, or dead-letter)
            log.warning("could not answer dispatch %s of node %s: %s", dispatch.dispatch_id,
                        dispatch.node, exc)
            await settle(bus, msg, exc, max_deliver=settings.max_deliver)
            return
        finally:
            heartbeat.cancel()
        await msg.ack()

    async def handle_batch(msgs: list[Msg]) -> None:
        await asyncio.gather(*(handle_one(m, e) for m, e in await read_all(bus, msgs)))

    if kind == "tool":  # behind the gate: its credential may create no other consumer (runtime/auth.py)
        await bus.consume(CLEARED_DURABLE, [type_subject(ToolCallCleared.TYPE)], handle_batch, pinned=True,
                          batch=settings.batch_size, ack_wait=settings.ack_wait_s, stop=stop)
        return
    await bus.consume(f"{kind}-runner", [dispatch_subject(kind)], handle_batch,
                      batch=settings.batch_size, ack_wait=settings.ack_wait_s, stop=stop)


def operation_span(dispatch: NodeDispatched) -> tuple[str, dict[str, Any]]:
    """The GenAI span around answering a dispatch: `invoke_agent {agent}` or `execute_tool {tool}`."""
    node = {"ae.node": dispatch.node, "ae.dispatch.id": dispatch.dispatch_id, "ae.attempt": dispatch.attempt}
    if dispatch.agent is not None:
        agent = dispatch.agent
        return f"invoke_agent {agent.name}", {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent.name,
                                             "gen_ai.request.model": agent.model, **node}
    tool = dispatch.tool.name if dispatch.tool is not None else dispatch.node
    call = {"gen_ai.tool.call.id": dispatch.call.call_id} if dispatch.call is not None else {}
    return f"execute_tool {tool}", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                                    "gen_ai.tool.type": "function", **call, **node}


async def _answer(handler: Handler, envelope: Envelope, dispatch: NodeDispatched, source: str) -> list[Envelope]:
    """The handler's answer; a failure it did not turn into a result itself becomes the node's error,
    retryable, so the node's own policy (attempts, backoff) bounds it whether it is a bug or an outage no
    list names; a known outage is raised instead, so the dispatch is redelivered once the server is back."""
    name, attributes = operation_span(dispatch) if tracing.ENABLED else ("", {})
    try:
        with tracing.operation(name, attributes) as span:
            answered = await handler(envelope, dispatch)
            failed = next((e for e in answered if e.type == NodeErrored.TYPE), None)
            if failed is not None:
                tracing.fail(span, "node_errored")
            return answered
    except Exception as exc:
        if transient(exc):
            raise
        log.exception("dispatch %s of node %s failed", dispatch.dispatch_id, dispatch.node)
        return [errored(envelope, source, dispatch, f"{source} could not handle this dispatch: "
                        f"{type(exc).__name__}: {exc}"[:2000], retryable=True)]
