"""The tool runner's answer to a dispatch: ids derived from the dispatch, clear permanent errors,
results checked against the tool's result schema, and a time limit from config and the deadline."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from agent_engine.contracts.envelope import derive_id
from agent_engine.tool_runner.config import ToolConfig
from agent_engine.tool_runner.service import SOURCE, ToolRunner
from agent_engine.tool_runner.tools import Context, Tool

TEXT = "Alpha beta gamma. Beta gamma!\nGamma delta?"


def runner(workspace: Path, registry: dict[str, Tool] | None = None, **config: Any) -> ToolRunner:
    return ToolRunner(ToolConfig(workspace=workspace, **config), registry)


async def test_handle_completes_a_good_call(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("text_stats", {"text": TEXT, "top": 1})
    [event] = await runner(tmp_path).handle(cause, dispatch)
    assert event.type == "node.completed"
    assert event.id == derive_id(cause.id, "completed")
    assert (event.source, event.tenant, event.task_id, event.correlation_id, event.causation_id) == (
        SOURCE, "acme", "task-1", "corr-1", cause.id)
    data = event.data
    assert (data["dispatch_id"], data["node"], data["attempt"], data["provider"]) == (
        dispatch.dispatch_id, "gather_context", 1, "tool:text_stats")
    assert data["output"]["words"] == 7
    assert data["output"]["top_words"] == [{"word": "gamma", "count": 3}]
    assert 0 < data["duration_ms"] < 10_000  # measured, in milliseconds: not absent, not seconds


async def test_handle_reads_from_its_workspace(tool_dispatch, tmp_path: Path) -> None:
    (tmp_path / "brief.txt").write_text("the brief")
    cause, dispatch = tool_dispatch("workspace_read", {"path": "brief.txt"}, name="read_brief")
    [event] = await runner(tmp_path).handle(cause, dispatch)
    assert event.type == "node.completed"
    assert event.data["output"]["content"] == "the brief"


async def test_handle_runs_a_python_snippet(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("python", {"code": "result = data * 2", "data": 21}, name="double")
    [event] = await runner(tmp_path).handle(cause, dispatch)
    assert event.type == "node.completed"
    assert (event.data["output"]["result"], event.data["provider"]) == (42, "tool:python")


async def test_handle_unknown_builtin_is_a_permanent_error(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("web_search", {"q": "x"}, name="search")
    [event] = await runner(tmp_path).handle(cause, dispatch)
    assert event.type == "node.errored"
    assert event.id == derive_id(cause.id, "errored")
    assert event.data["retryable"] is False
    assert event.data["error"].startswith("tool 'search' names built-in 'web_search', which this tool-runner "
                                          "does not have")
    assert "http_fetch" in event.data["error"] and "python" in event.data["error"]


async def test_handle_bad_args_is_a_permanent_error(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("text_stats", {"txt": "typo"})
    [event] = await runner(tmp_path).handle(cause, dispatch)
    assert event.type == "node.errored"
    assert event.data["retryable"] is False
    assert "invalid arguments for tool 'text_stats'" in event.data["error"]
    assert "'text' is a required property" in event.data["error"]


async def test_handle_escape_attempt_is_a_permanent_error(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("workspace_read", {"path": "../../etc/passwd"}, name="read")
    [event] = await runner(tmp_path).handle(cause, dispatch)
    assert (event.type, event.data["retryable"]) == ("node.errored", False)
    assert "outside the workspace" in event.data["error"]


async def test_handle_dispatch_without_tool(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch(with_tool=False)
    [event] = await runner(tmp_path).handle(cause, dispatch)
    assert (event.type, event.data["error"], event.data["retryable"]) == (
        "node.errored", "tool dispatch carries no tool", False)


async def test_handle_is_deterministic_in_ids(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("text_stats", {"text": "x"})
    tools = runner(tmp_path)
    [first] = await tools.handle(cause, dispatch)
    [second] = await tools.handle(cause, dispatch)
    assert first.id == second.id


# --- result validation ------------------------------------------------------------------------

def _returning(output: dict[str, Any]) -> Tool:
    return Tool("count", "counts", {"type": "object"}, lambda args, ctx: output,
                result_schema={"type": "object", "required": ["count"],
                               "properties": {"count": {"type": "integer", "minimum": 0}}})


async def test_a_result_that_breaks_the_result_schema_is_a_clear_error(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("count", {}, name="counter")
    [event] = await runner(tmp_path, {"count": _returning({"count": -1})}).handle(cause, dispatch)
    assert (event.type, event.data["retryable"]) == ("node.errored", False)
    assert event.data["error"] == ("tool 'count' returned a result that does not match its result schema (a bug in "
                                   "the tool, not in the call): count: -1 is less than the minimum of 0")


async def test_a_result_that_fits_the_schema_is_published(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("count", {}, name="counter")
    [event] = await runner(tmp_path, {"count": _returning({"count": 3})}).handle(cause, dispatch)
    assert (event.type, event.data["output"]) == ("node.completed", {"count": 3})


async def test_a_tool_that_raises_unexpectedly_becomes_a_node_error(tool_dispatch, tmp_path: Path) -> None:
    def broken(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"ratio": 1 / 0}

    cause, dispatch = tool_dispatch("broken", {}, name="divide")
    [event] = await runner(tmp_path, {"broken": Tool("broken", "", {"type": "object"}, broken)}).handle(
        cause, dispatch)
    assert event.type == "node.errored"
    assert event.data["error"] == "tool 'divide' failed: ZeroDivisionError: division by zero"
    assert event.data["retryable"] is True  # idempotent: another attempt is harmless


async def test_an_oversized_result_becomes_a_node_error(tool_dispatch, tmp_path: Path) -> None:
    big = Tool("big", "", {"type": "object"}, lambda args, ctx: {"blob": "x" * 300_000})
    cause, dispatch = tool_dispatch("big", {}, name="dump")
    [event] = await runner(tmp_path, {"big": big}).handle(cause, dispatch)
    assert event.type == "node.errored" and "over the 256 KiB a node result may carry" in event.data["error"]


# --- time limits ------------------------------------------------------------------------------

def _sleeper(seconds: float) -> Tool:
    return Tool("slow", "sleeps", {"type": "object"}, lambda args, ctx: time.sleep(seconds) or {})


async def test_the_configured_timeout_stops_a_slow_tool_retryably(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("slow", {}, name="nap")
    [event] = await runner(tmp_path, {"slow": _sleeper(0.3)}, timeout_s=0.05).handle(cause, dispatch)
    assert event.type == "node.errored"
    assert event.data["error"] == "tool 'nap' ran over 0.05s"
    assert event.data["retryable"] is True  # idempotent tools may be retried


async def test_the_dispatch_deadline_shortens_the_limit(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("slow", {}, name="nap", deadline_s=0.2)
    tools = runner(tmp_path, {"slow": _sleeper(0.6)}, timeout_s=30)
    assert 0 < tools.time_limit(dispatch) <= 0.2
    [event] = await tools.handle(cause, dispatch)
    assert event.type == "node.errored" and event.data["error"].startswith("tool 'nap' ran over 0.")


async def test_the_config_limit_applies_when_the_deadline_is_later(tool_dispatch, tmp_path: Path) -> None:
    _, dispatch = tool_dispatch("slow", {}, deadline_s=600)
    assert runner(tmp_path, timeout_s=7).time_limit(dispatch) == 7


async def test_a_dispatch_past_its_deadline_is_not_run(tool_dispatch, tmp_path: Path) -> None:
    ran = []
    tool = Tool("mark", "", {"type": "object"}, lambda args, ctx: ran.append(1) or {})
    cause, dispatch = tool_dispatch("mark", {}, name="late", deadline_s=-1)
    [event] = await runner(tmp_path, {"mark": tool}).handle(cause, dispatch)
    assert event.type == "node.errored" and event.data["retryable"] is True
    assert "passed before tool 'late' could start; not run" in event.data["error"]
    assert ran == []


async def test_a_python_snippet_gets_the_run_limit(tool_dispatch, tmp_path: Path) -> None:
    cause, dispatch = tool_dispatch("python", {"code": "while True:\n    pass", "timeout_s": 60}, name="spin")
    [event] = await runner(tmp_path, timeout_s=1.0).handle(cause, dispatch)
    out = event.data["output"]
    assert (event.type, out["timed_out"]) == ("node.completed", True)
    assert 0.3 < out["limits"]["time_s"] <= 0.5  # the 1 s limit less the 0.5 s grace, less the time to start


# --- the configuration ------------------------------------------------------------------------

def test_config_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {"AE_TOOL_WORKSPACE": str(tmp_path), "AE_TOOL_TIMEOUT_S": "12.5",
                        "AE_HTTP_ALLOW": "a.example,b.example:81", "AE_HTTP_MAX_BYTES": "1000",
                        "AE_PYTHON_TIMEOUT_S": "3", "AE_PYTHON_MEMORY_MB": "128", "AE_PYTHON_MAX_OUTPUT": "500",
                        "AE_PYTHON_NETNS": "off"}.items():
        monkeypatch.setenv(name, value)
    config = ToolConfig.from_env()
    assert (config.workspace, config.timeout_s, [str(h) for h in config.http_allow], config.http_max_bytes) == (
        tmp_path.resolve(), 12.5, ["a.example", "b.example:81"], 1000)
    assert (config.python_timeout_s, config.python_memory_mb, config.python_output_bytes, config.python_netns) == (
        3, 128, 500, "off")


def test_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AE_TOOL_TIMEOUT_S", "AE_HTTP_ALLOW", "AE_PYTHON_NETNS"):
        monkeypatch.delenv(name, raising=False)
    config = ToolConfig.from_env()
    assert (config.timeout_s, config.http_allow, config.python_netns) == (30.0, (), "auto")


@pytest.mark.parametrize(("name", "value", "message"), [
    ("AE_TOOL_TIMEOUT_S", "0", "AE_TOOL_TIMEOUT_S=0 must be greater than 0"),
    ("AE_PYTHON_NETNS", "sometimes", "AE_PYTHON_NETNS='sometimes': expected auto, require or off"),
    ("AE_HTTP_ALLOW", "https://a.example", "AE_HTTP_ALLOW: 'https://a.example' is not a host"),
])
def test_bad_config_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message.replace("(", "\\(")):
        ToolConfig.from_env()


def test_the_registry_implements_exactly_the_contracts_catalogue() -> None:
    """The router offers agents the tools of the contracts' catalogue, checks a model's arguments against its
    schemas and marks side effects from it (it cannot import this registry): the two must agree."""
    from agent_engine.contracts.builtins import BUILTINS, NON_IDEMPOTENT_BUILTINS
    from agent_engine.tool_runner.tools.registry import REGISTRY

    assert sorted(REGISTRY) == sorted(BUILTINS)
    for name, tool in REGISTRY.items():
        assert (tool.description, tool.args_schema, tool.idempotent) == (
            BUILTINS[name].description, BUILTINS[name].args_schema, BUILTINS[name].idempotent), name
    assert {name for name, tool in REGISTRY.items() if not tool.idempotent} == NON_IDEMPOTENT_BUILTINS == {
        "workspace_append"}
