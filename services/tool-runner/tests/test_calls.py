"""Side-effecting tools run at most once per (task, node), with the call log in a real NATS KV bucket:
across redelivery, new attempts after a deadline, a runner that died mid-run, and two runners at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

from agent_engine.contracts import subject_for
from agent_engine.contracts.envelope import Envelope, caused_by, derive_id
from agent_engine.contracts.events import NodeDispatched, ToolCallCleared
from agent_engine.contracts.subjects import CLEARED_DURABLE, STREAM, TOOL_CALLS_BUCKET
from agent_engine.runtime import runner as runtime_runner
from agent_engine.runtime.bus import Bus, auth_options
from agent_engine.runtime.keyring import credential_from_env
from agent_engine.runtime.settings import Settings
from agent_engine.runtime.streams import ensure_streams
from agent_engine.tool_runner import service
from agent_engine.tool_runner.calls import CallLog, CallLogUnavailable, CallRecord, call_key
from agent_engine.tool_runner.config import ToolConfig
from agent_engine.tool_runner.mcp import NotReached
from agent_engine.tool_runner.service import SOURCE, ToolRunner
from agent_engine.tool_runner.tools import REGISTRY, Context, Tool

pytestmark = pytest.mark.integration


def append_args(line: str = "hello") -> dict[str, Any]:
    return {"path": "out.log", "text": line}


def runner(workspace: Path, calls: CallLog | None, registry: dict[str, Tool] | None = None,
           **config: Any) -> ToolRunner:
    return ToolRunner(ToolConfig(workspace=workspace, **config), registry, calls)


async def test_a_redelivered_dispatch_answers_with_the_stored_result(tool_dispatch, task_id, calls, tmp_path):
    cause, dispatch = tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id)
    tools = runner(tmp_path, calls)
    [first] = await tools.handle(cause, dispatch)
    [again] = await tools.handle(cause, dispatch)
    assert first.type == "node.completed"
    assert again == first  # same id, same time, same output: the event as first published
    assert (tmp_path / "out.log").read_text() == "hello\n"


async def test_a_new_attempt_after_a_completed_one_gets_that_completion(tool_dispatch, task_id, calls, tmp_path):
    """The router re-dispatches on a deadline with a new attempt and dispatch id: still the same call."""
    tools = runner(tmp_path, calls)
    [first] = await tools.handle(*tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id))
    [second] = await tools.handle(*tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id,
                                                 attempt=2))
    assert second == first and second.data["attempt"] == 1  # the router settles an open node with it
    assert (tmp_path / "out.log").read_text() == "hello\n"


async def test_a_call_claimed_by_a_runner_that_died_is_not_run_again(tool_dispatch, task_id, calls, tmp_path):
    cause, dispatch = tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id)
    await CallLog(calls.kv, runner="host-a pid 42").claim(call_key("acme", task_id, dispatch.node), dispatch)
    # ... host-a was killed here, mid-run; JetStream redelivers the dispatch to another runner
    [event] = await runner(tmp_path, calls).handle(cause, dispatch)
    assert (event.type, event.data["retryable"]) == ("node.errored", False)
    error = event.data["error"]
    assert error.startswith("tool 'log' has side effects and may have run already: attempt 1 started it at ")
    assert "(host-a pid 42) and left no result; not run twice; inspect and re-run by hand" in error
    assert f"call log key acme.{task_id}.gather_context" in error
    assert not (tmp_path / "out.log").exists()


async def test_a_later_attempt_of_a_call_that_died_is_not_run_either(tool_dispatch, task_id, calls, tmp_path):
    _, first = tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id)
    await CallLog(calls.kv, runner="host-a pid 42").claim(call_key("acme", task_id, first.node), first)
    [event] = await runner(tmp_path, calls).handle(*tool_dispatch(
        "workspace_append", append_args(), name="log", task_id=task_id, attempt=3))
    assert event.type == "node.errored" and event.data["attempt"] == 3
    assert "may have run already: attempt 1 started it" in event.data["error"]
    assert not (tmp_path / "out.log").exists()


async def test_a_failed_run_is_not_retried_and_a_new_attempt_is_told_why(tool_dispatch, task_id, calls, tmp_path):
    (tmp_path / "out.log").mkdir()  # appending to a directory fails
    tools = runner(tmp_path, calls)
    cause, dispatch = tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id)
    [first] = await tools.handle(cause, dispatch)
    assert (first.type, first.data["retryable"]) == ("node.errored", False)
    assert await tools.handle(cause, dispatch) == [first]
    [later] = await tools.handle(*tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id,
                                                attempt=2))
    assert later.type == "node.errored" and later.data["attempt"] == 2  # the router ignores attempt 1's error
    assert later.data["error"] == ("tool 'log' has side effects and already ran for node 'gather_context' in "
                                   "attempt 1, which failed: 'out.log' is a directory in the workspace, not a file; "
                                   "not run again")


async def test_a_node_a_person_resumed_after_failures_runs_its_side_effecting_tool_again(tool_dispatch, task_id,
                                                                                       calls, tmp_path):
    (tmp_path / "out.log").mkdir()
    tools = runner(tmp_path, calls)
    [first] = await tools.handle(*tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id))
    assert first.type == "node.errored"
    (tmp_path / "out.log").rmdir()  # the person fixed what made it fail, then approved the paused node
    [again] = await tools.handle(*tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id,
                                                attempt=4, resumed=3))
    assert again.type == "node.completed" and (tmp_path / "out.log").is_file()
    [redelivered] = await tools.handle(*tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id,
                                                      attempt=4, resumed=3))
    assert redelivered == again and (tmp_path / "out.log").read_text().count("\n") == 1  # still once


async def test_invalid_arguments_claim_nothing(tool_dispatch, task_id, calls, tmp_path):
    cause, dispatch = tool_dispatch("workspace_append", {"path": "out.log"}, name="log", task_id=task_id)
    [event] = await runner(tmp_path, calls).handle(cause, dispatch)
    assert "invalid arguments" in event.data["error"]
    assert await calls.get(call_key("acme", task_id, dispatch.node)) is None


async def test_different_nodes_and_tasks_are_different_calls(tool_dispatch, task_id, calls, tmp_path):
    tools = runner(tmp_path, calls)
    for task, node in ((task_id, "a"), (task_id, "b"), (task_id + "-other", "a")):
        [event] = await tools.handle(*tool_dispatch("workspace_append", append_args(f"{task} {node}"), name="log",
                                                    task_id=task, node=node))
        assert event.type == "node.completed"
    assert (tmp_path / "out.log").read_text().splitlines() == [
        f"{task_id} a", f"{task_id} b", f"{task_id}-other a"]


def _counter(idempotent: bool) -> tuple[Tool, list[int]]:
    runs: list[int] = []

    def count(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        runs.append(1)
        return {"runs": len(runs)}

    return Tool("count", "", {"type": "object"}, count, idempotent=idempotent), runs


async def test_side_effects_true_in_the_manifest_guards_an_idempotent_builtin(tool_dispatch, task_id, calls,
                                                                             tmp_path):
    tool, runs = _counter(idempotent=True)
    tools = runner(tmp_path, calls, {"count": tool})
    for attempt in (1, 1, 2):
        await tools.handle(*tool_dispatch("count", {}, name="bump", task_id=task_id, attempt=attempt,
                                          side_effects=True))
    assert runs == [1]


async def test_an_idempotent_tool_without_side_effects_runs_every_time(tool_dispatch, task_id, calls, tmp_path):
    tool, runs = _counter(idempotent=True)
    tools = runner(tmp_path, calls, {"count": tool})
    for attempt in (1, 1, 2):
        await tools.handle(*tool_dispatch("count", {}, name="bump", task_id=task_id, attempt=attempt))
    assert runs == [1, 1, 1]
    assert await calls.get(call_key("acme", task_id, "gather_context")) is None


async def test_two_runners_at_once_run_the_call_once(tool_dispatch, task_id, calls, tmp_path):
    runs: list[int] = []

    def slow_append(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        runs.append(1)
        time.sleep(0.2)
        return {"ok": True}

    tool = Tool("slow_append", "", {"type": "object"}, slow_append, idempotent=False)
    cause, dispatch = tool_dispatch("slow_append", {}, name="log", task_id=task_id)
    a = runner(tmp_path, CallLog(calls.kv, runner="a"), {"slow_append": tool})
    b = runner(tmp_path, CallLog(calls.kv, runner="b"), {"slow_append": tool})
    results = await asyncio.gather(a.handle(cause, dispatch), b.handle(cause, dispatch))
    assert runs == [1]
    assert sorted(event.type for [event] in results) == ["node.completed", "node.errored"]


async def test_a_timed_out_side_effecting_tool_is_not_retried(tool_dispatch, task_id, calls, tmp_path):
    tool = Tool("slow", "", {"type": "object"}, lambda args, ctx: time.sleep(0.3) or {}, idempotent=False)
    cause, dispatch = tool_dispatch("slow", {}, name="nap", task_id=task_id)
    [event] = await runner(tmp_path, calls, {"slow": tool}, timeout_s=0.05).handle(cause, dispatch)
    assert event.data["error"] == "tool 'nap' ran over 0.05s and may have had its effect; not retried"
    assert event.data["retryable"] is False


async def test_without_a_call_log_a_side_effecting_tool_is_refused(tool_dispatch, tmp_path):
    [event] = await runner(tmp_path, None).handle(*tool_dispatch("workspace_append", append_args(), name="log"))
    assert (event.type, event.data["retryable"]) == ("node.errored", False)
    assert event.data["error"] == ("tool 'log' has side effects (its built-in is not idempotent) and this "
                                   "tool-runner has no call log to make sure it runs only once; not run")
    assert not (tmp_path / "out.log").exists()


def test_call_keys() -> None:
    assert call_key("acme", "0b6c-uuid", "write") == "acme.0b6c-uuid.write"
    odd = call_key("acme", "task with spaces/and.dots", "write")
    assert odd.startswith("acme.h") and odd.endswith(".write") and odd.count(".") == 2
    assert odd == call_key("acme", "task with spaces/and.dots", "write")
    assert call_key("acme", "0b6c-uuid", "write", resumed=3) == "acme.0b6c-uuid.write.r3"


async def test_ensure_streams_creates_the_bucket(nats_url: str) -> None:
    nc = await nats.connect(nats_url, **auth_options(credential_from_env()))
    try:
        await ensure_streams(nc.jetstream())
        await ensure_streams(nc.jetstream())  # twice is fine: every service runs it
        status = await (await nc.jetstream().key_value(TOOL_CALLS_BUCKET)).status()
        assert status.bucket == TOOL_CALLS_BUCKET
    finally:
        await nc.close()


def test_workspace_append_is_the_only_non_idempotent_builtin() -> None:
    assert [n for n, t in REGISTRY.items() if not t.idempotent] == ["workspace_append"]


# --- NATS trouble while claiming or storing ---------------------------------------------------

class Flaky:
    """The real bucket, except that the next `fails` calls of `method` raise as during a NATS outage;
    with `lost_reply`, the operation is done first and only its reply is lost."""

    def __init__(self, kv: Any, method: str, fails: int, *, lost_reply: bool = False) -> None:
        self.kv, self.method, self.fails, self.lost_reply = kv, method, fails, lost_reply

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.kv, name)
        if name != self.method:
            return real

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.fails <= 0:
                return await real(*args, **kwargs)
            self.fails -= 1
            if self.lost_reply:
                await real(*args, **kwargs)
            raise nats.errors.TimeoutError

        return call


def _appender() -> tuple[Tool, list[int]]:
    runs: list[int] = []

    def append(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        runs.append(1)
        return {"runs": len(runs)}

    return Tool("append", "", {"type": "object"}, append, idempotent=False), runs


async def test_a_claim_whose_reply_was_lost_is_recognised_as_ours(tool_dispatch, task_id, calls, tmp_path):
    tool, runs = _appender()
    log = CallLog(Flaky(calls.kv, "create", 1, lost_reply=True), retry_delay_s=0)
    [event] = await runner(tmp_path, log, {"append": tool}).handle(*tool_dispatch("append", {}, task_id=task_id))
    assert event.type == "node.completed" and runs == [1]


async def test_storing_the_result_is_retried(tool_dispatch, task_id, calls, tmp_path):
    tool, runs = _appender()
    log = CallLog(Flaky(calls.kv, "put", 2), retry_delay_s=0)
    [event] = await runner(tmp_path, log, {"append": tool}).handle(*tool_dispatch("append", {}, task_id=task_id))
    stored = await calls.get(call_key("acme", task_id, "gather_context"))
    assert stored is not None and stored.state == "done" and stored.result() == event
    assert runs == [1]


async def test_a_result_that_could_not_be_stored_is_stored_and_answered_on_redelivery(tool_dispatch, task_id, calls,
                                                                                      tmp_path):
    tool, runs = _appender()
    flaky = Flaky(calls.kv, "put", 1000)
    tools = runner(tmp_path, CallLog(flaky, retry_delay_s=0, tries=3), {"append": tool})
    cause, dispatch = tool_dispatch("append", {}, task_id=task_id)
    with pytest.raises(CallLogUnavailable, match="could not store the result of tool call"):
        await tools.handle(cause, dispatch)  # the runner loop naks: JetStream redelivers
    flaky.fails = 0  # NATS is back
    [event] = await tools.handle(cause, dispatch)
    assert event.type == "node.completed" and runs == [1]
    stored = await calls.get(call_key("acme", task_id, "gather_context"))
    assert stored is not None and stored.result() == event


def _unreached_once() -> tuple[Tool, list[int]]:
    """A side-effecting tool whose first call finds no server to take it (as an MCP server with every process
    busy), then runs."""
    tries: list[int] = []

    def send(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        tries.append(1)
        if len(tries) == 1:
            raise NotReached("MCP server 'mail' has no process free (the call was not made)")
        return {"tries": len(tries)}

    return Tool("send", "", {"type": "object"}, send, idempotent=False), tries


async def test_a_call_that_never_reached_its_server_is_retryable_and_claims_nothing(tool_dispatch, task_id, calls,
                                                                                   tmp_path):
    tool, tries = _unreached_once()
    tools = runner(tmp_path, calls, {"send": tool})
    [refused] = await tools.handle(*tool_dispatch("send", {}, name="notify", task_id=task_id))
    assert (refused.type, refused.data["retryable"]) == ("node.errored", True)
    assert refused.data["error"] == "MCP server 'mail' has no process free (the call was not made)"
    assert await calls.get(call_key("acme", task_id, "gather_context")) is None
    [ran] = await tools.handle(*tool_dispatch("send", {}, name="notify", task_id=task_id, attempt=2))
    assert ran.type == "node.completed" and tries == [1, 1]


async def test_a_claim_that_could_not_be_withdrawn_is_withdrawn_on_redelivery(tool_dispatch, task_id, calls,
                                                                             tmp_path):
    tool, tries = _unreached_once()
    flaky = Flaky(calls.kv, "delete", 1000)
    tools = runner(tmp_path, CallLog(flaky, retry_delay_s=0, tries=2), {"send": tool})
    cause, dispatch = tool_dispatch("send", {}, name="notify", task_id=task_id)
    with pytest.raises(CallLogUnavailable, match="could not withdraw the claim"):
        await tools.handle(cause, dispatch)  # the runner loop naks: JetStream redelivers
    flaky.fails = 0  # NATS is back
    [ran] = await tools.handle(cause, dispatch)
    assert ran.type == "node.completed" and tries == [1, 1]


async def test_only_a_claim_still_ours_is_withdrawn(tool_dispatch, task_id, calls):
    _, dispatch = tool_dispatch("send", {}, name="notify", task_id=task_id)
    key = call_key("acme", task_id, dispatch.node)
    assert await CallLog(calls.kv, runner="host-a pid 42").claim(key, dispatch) is None
    await CallLog(calls.kv, runner="host-b pid 7").release(key, dispatch)
    theirs = await calls.get(key)
    assert theirs is not None and theirs.runner == "host-a pid 42"


async def test_a_late_redelivery_still_gets_the_stored_result(tool_dispatch, task_id, calls, tmp_path):
    """Past its deadline a dispatch is not run, but a call that already ran answers with its result."""
    tools = runner(tmp_path, calls)
    [first] = await tools.handle(*tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id))
    [late] = await tools.handle(*tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id,
                                               deadline_s=-1))
    assert late == first


async def test_a_side_effecting_dispatch_past_its_deadline_is_not_run_or_claimed(tool_dispatch, task_id, calls,
                                                                               tmp_path):
    cause, dispatch = tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id, deadline_s=-1)
    [event] = await runner(tmp_path, calls).handle(cause, dispatch)
    assert (event.type, event.data["retryable"]) == ("node.errored", True)
    assert "could start; not run" in event.data["error"]
    assert await calls.get(call_key("acme", task_id, "gather_context")) is None
    assert not (tmp_path / "out.log").exists()


# --- once published, the call log keeps a marker, not the result ----------------------------------

SECRET = "jane.doe@example.com"


def _secret_tool() -> tuple[Tool, list[int]]:
    runs: list[int] = []

    def send(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        runs.append(1)
        return {"sent_to": SECRET, "runs": len(runs)}

    return Tool("send", "", {"type": "object"}, send, idempotent=False), runs


def _cleared(cause: Envelope, dispatch: NodeDispatched) -> Envelope:
    """The tool gate's answer letting the dispatch through, the only thing the tool-runner consumes."""
    data = ToolCallCleared(**dispatch.model_dump(), dispatch_event=cause.id, rules=[])
    return caused_by(cause, data, id=derive_id(cause.id, "cleared"), source="agent-engine/guardrails")


class Serving:
    """The tool-runner's consumer loop (runtime.runner.serve) over real NATS, recording what it publishes."""

    def __init__(self, bus: Bus, tools: ToolRunner) -> None:
        self.bus, self.tools, self.stop, self.sent = bus, tools, asyncio.Event(), []  # type: list[Envelope]
        self.last = 0
        publish = bus.publish

        async def recording(envelope: Envelope, *, under: str | None = None, body: bytes | None = None) -> None:
            await publish(envelope, under=under, body=body)
            self.sent.append(envelope)

        bus.publish = recording  # type: ignore[method-assign]
        self.task = asyncio.create_task(runtime_runner.serve(bus, "tool", SOURCE, tools.handle, Settings(), self.stop,
                                                     published=tools.published))

    async def deliver(self, message: Envelope, *, again: bool = False) -> None:
        """Publish a clearance and wait until the tool-runner has acked it; `again`: without its Nats-Msg-Id, so the
        stream keeps it as a new message, which the tool-runner takes as a redelivery of the same dispatch."""
        headers = {} if again else {"Nats-Msg-Id": message.id}
        ack = await self.bus.js.publish(subject_for(message), message.to_bytes(), headers=headers)
        for _ in range(200):
            info = await self.bus.js.consumer_info(STREAM, CLEARED_DURABLE)
            if info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= ack.seq:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the tool-runner did not ack the clearance")

    async def close(self) -> None:
        self.stop.set()
        await self.task


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    opened = await Bus.open(nats_url, "tool-runner")
    yield opened
    await opened.close()


def _unique(cause: Envelope) -> Envelope:
    """The dispatch under a tenant of its own, so counting its tenant's stream messages counts only this test's."""
    return cause.model_copy(update={"tenant": f"t{uuid.uuid4().hex[:10]}"})


async def _kept(bus: Bus, key: str) -> bytes:
    return (await (await bus.js.key_value(TOOL_CALLS_BUCKET)).get(key)).value or b""


async def test_once_its_result_is_published_the_call_log_keeps_no_content(tool_dispatch, task_id, calls, bus,
                                                                          tmp_path):
    tool, runs = _secret_tool()
    cause, dispatch = tool_dispatch("send", {}, name="notify", task_id=task_id)
    cause = _unique(cause)
    key = call_key(cause.tenant, task_id, dispatch.node)
    serving = Serving(bus, runner(tmp_path, calls, {"send": tool}))
    try:
        await serving.deliver(_cleared(cause, dispatch))
    finally:
        await serving.close()
    [completed] = serving.sent
    assert completed.data["output"]["sent_to"] == SECRET and runs == [1]
    kept = await _kept(bus, key)
    assert SECRET.encode() not in kept and b"sent_to" not in kept  # no content of the result
    record = CallRecord.from_bytes(kept)
    assert (record.state, record.event, record.attempt) == ("published", None, 1)
    assert record.published is not None
    assert {k: record.published[k] for k in ("id", "type")} == {"id": completed.id, "type": "node.completed"}
    stored = await bus.js.get_last_msg(STREAM, subject_for(completed))
    assert stored.data is not None
    assert (record.published["sha256"], record.published["bytes"]) == (hashlib.sha256(stored.data).hexdigest(),
                                                                        len(stored.data))


async def test_a_redelivery_after_the_publish_neither_runs_nor_publishes(tool_dispatch, task_id, calls, bus,
                                                                         tmp_path, caplog):
    tool, runs = _secret_tool()
    cause, dispatch = tool_dispatch("send", {}, name="notify", task_id=task_id)
    cause = _unique(cause)
    message = _cleared(cause, dispatch)
    serving = Serving(bus, runner(tmp_path, calls, {"send": tool}))
    try:
        await serving.deliver(message)
        [completed] = serving.sent
        caplog.set_level(logging.INFO, logger="tool-runner")
        await serving.deliver(message, again=True)  # the same clearance delivered again
        # and a later attempt the router made after a deadline: the completion in the stream settles the node
        cause2, dispatch2 = tool_dispatch("send", {}, name="notify", task_id=task_id, attempt=2)
        await serving.deliver(_cleared(cause2.model_copy(update={"tenant": cause.tenant}), dispatch2))
    finally:
        await serving.close()
    assert runs == [1]
    assert serving.sent == [completed]  # nothing answered either later delivery
    said = [r.getMessage() for r in caplog.records if "is in the stream" in r.getMessage()]
    assert len(said) == 2 and not any(SECRET in r.getMessage() for r in caplog.records)
    info = await bus.js.stream_info(STREAM, subjects_filter=f"ae.{cause.tenant}.node.>")
    assert info.state.subjects == {subject_for(completed): 1}


async def test_a_crash_between_run_and_publish_publishes_the_stored_result_once(tool_dispatch, task_id, calls, bus,
                                                                               tmp_path):
    tool, runs = _secret_tool()
    cause, dispatch = tool_dispatch("send", {}, name="notify", task_id=task_id)
    cause = _unique(cause)
    key = call_key(cause.tenant, task_id, dispatch.node)
    # a tool-runner ran the call and stored its result, then died before publishing it
    [lost] = await runner(tmp_path, CallLog(calls.kv, runner="host-a pid 42"), {"send": tool}).handle(cause, dispatch)
    before = CallRecord.from_bytes(await _kept(bus, key))
    assert before.state == "done" and before.result() == lost  # what an entry written before markers looks like
    serving = Serving(bus, runner(tmp_path, calls, {"send": tool}))
    try:
        await serving.deliver(_cleared(cause, dispatch))  # JetStream redelivers the clearance to another runner
    finally:
        await serving.close()
    assert runs == [1]
    assert serving.sent == [lost]  # the stored result, published once
    info = await bus.js.stream_info(STREAM, subjects_filter=f"ae.{cause.tenant}.node.>")
    assert info.state.subjects == {subject_for(lost): 1}
    after = CallRecord.from_bytes(await _kept(bus, key))
    assert after.state == "published" and after.published is not None and after.published["id"] == lost.id
    assert SECRET.encode() not in await _kept(bus, key)


async def test_a_published_failure_answers_a_later_attempt_without_its_text(tool_dispatch, task_id, calls, tmp_path):
    (tmp_path / "out.log").mkdir()  # appending to a directory fails
    tools = runner(tmp_path, calls)
    cause, dispatch = tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id)
    [first] = await tools.handle(cause, dispatch)
    assert first.type == "node.errored"
    await tools.published(cause, dispatch, [first])  # the stream acknowledged it
    assert await tools.handle(cause, dispatch) == []  # its own redelivery: the error is in the stream
    [later] = await tools.handle(*tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id,
                                                attempt=2))
    assert later.data["error"] == ("tool 'log' has side effects and already ran for node 'gather_context' in "
                                   f"attempt 1, which failed (its error is event {first.id}); not run again")


async def test_a_later_attempt_told_of_an_earlier_failure_leaves_only_the_marker(tool_dispatch, task_id, calls,
                                                                                  tmp_path):
    """The earlier attempt's error (its text names a path) is answered for the later attempt, and the call log
    keeps only the marker of it, not its text for the bucket's TTL."""
    (tmp_path / "out.log").mkdir()
    tools = runner(tmp_path, calls)
    [first] = await tools.handle(*tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id))
    key = call_key("acme", task_id, "gather_context")
    # the first answer's publish was never acknowledged (a crash), and the router moved on to attempt 2
    [later] = await tools.handle(*tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id,
                                                attempt=2))
    assert "which failed: 'out.log' is a directory in the workspace" in later.data["error"]
    raw = (await calls.kv.get(key)).value or b""
    assert b"out.log" not in raw and b"directory" not in raw
    record = CallRecord.from_bytes(raw)
    assert (record.state, record.event, record.attempt) == ("published", None, 1)
    assert record.published is not None and record.published["id"] == first.id
    [third] = await tools.handle(*tool_dispatch("workspace_append", append_args(), name="log", task_id=task_id,
                                                attempt=3))
    assert third.data["error"] == ("tool 'log' has side effects and already ran for node 'gather_context' in "
                                   f"attempt 1, which failed (its error is event {first.id}); not run again")


async def test_answers_whose_publish_never_came_back_are_not_kept_for_ever(tool_dispatch, task_id, calls, tmp_path,
                                                                          monkeypatch):
    """A result waits in memory for its publish to be acknowledged; one redelivered to another replica or
    dead-lettered never is: only the newest MAX_TO_MARK wait, and marking still works for them."""
    monkeypatch.setattr(service, "MAX_TO_MARK", 2)
    tool, runs = _secret_tool()
    tools = runner(tmp_path, calls, {"send": tool})
    answered = []
    for node in ("a", "b", "c", "d"):
        cause, dispatch = tool_dispatch("send", {}, name="notify", task_id=task_id, node=node)
        [event] = await tools.handle(cause, dispatch)  # its publish fails: published() is never called
        answered.append((cause, dispatch, event))
    assert runs == [1, 1, 1, 1]
    assert list(tools.to_mark) == [answered[2][0].id, answered[3][0].id]
    cause, dispatch, event = answered[3]
    await tools.published(cause, dispatch, [event])
    marked = await calls.get(call_key("acme", task_id, "d"))
    assert marked is not None and marked.state == "published" and list(tools.to_mark) == [answered[2][0].id]
    forgotten = await calls.get(call_key("acme", task_id, "a"))
    assert forgotten is not None and forgotten.state == "done"  # stays stored, as after a crash: a redelivery marks it


async def test_a_marker_is_written_only_for_what_was_published(tool_dispatch, task_id, calls, tmp_path):
    tool, _ = _secret_tool()
    tools = runner(tmp_path, calls, {"send": tool})
    cause, dispatch = tool_dispatch("send", {}, name="notify", task_id=task_id)
    [event] = await tools.handle(cause, dispatch)
    await tools.published(cause, dispatch, [])  # e.g. a different answer went out: keep the result
    stored = await calls.get(call_key("acme", task_id, dispatch.node))
    assert stored is not None and stored.state == "done" and stored.result() == event


def test_call_records_read_old_and_new_entries() -> None:
    claimed = CallRecord("claimed", "d-1", 1, "host pid 1")
    assert "published" not in json.loads(claimed.to_bytes())  # written as before markers existed
    assert CallRecord.from_bytes(claimed.to_bytes()) == claimed
    newer = {**json.loads(claimed.to_bytes()), "some_later_field": 1}
    assert CallRecord.from_bytes(json.dumps(newer).encode()) == claimed
