"""Side-effecting tools run at most once per (task, node), with the call log in a real NATS KV bucket:
across redelivery, new attempts after a deadline, a runner that died mid-run, and two runners at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import nats
import pytest

from agent_engine.contracts.subjects import TOOL_CALLS_BUCKET
from agent_engine.runtime.bus import auth_options, ensure_streams
from agent_engine.runtime.keyring import credential_from_env
from agent_engine.tool_runner.calls import CallLog, CallLogUnavailable, call_key
from agent_engine.tool_runner.config import ToolConfig
from agent_engine.tool_runner.service import ToolRunner
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
