"""Tool use in the agent-runner: what the model is sent (tools, earlier turns as tool_use / tool_result
blocks or OpenAI tool messages), what the runner answers (node.tools_requested), the last allowed turn,
summaries of older turns and exact token counts. The Anthropic and OpenAI adapters run their real clients
against the local servers of fake_llm.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fake_llm import FakeServer, Reply, anthropic_message, openai_completion, rate_limited

from agent_engine.agent_runner.providers import Gateway, MockProvider, RetryPolicy
from agent_engine.agent_runner.providers.anthropic import AnthropicProvider
from agent_engine.agent_runner.providers.openai import OpenAIProvider
from agent_engine.agent_runner.service import AgentRunner, build_request
from agent_engine.contracts.events import ToolDef, ToolStep, ToolTurn

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

VALID = anthropic_message('{"goal": "g", "constraints": []}')
READ = ToolDef(name="read", description="Reads a workspace file.",
               input_schema={"type": "object", "required": ["path"], "properties": {"path": {"type": "string"}}})
EARLIER = ToolTurn(turn=0, thought="Let me read the brief.", calls=[
    ToolStep(call_id="t0-c0", tool="read", args={"path": "brief.md"}, output={"content": "Compare engines."}),
    ToolStep(call_id="t0-c1", tool="shell", args={}, refused=True, error="agent 'a' may not use tool 'shell'")])


def tool_dispatch(agent_dispatch: Any, *, turn: int = 0, conversation: list[ToolTurn] | None = None,
                  **agent: Any) -> Any:
    agent.setdefault("tools", ["read"])
    agent.setdefault("tool_defs", [READ])
    cause, dispatch = agent_dispatch(**agent)
    dispatch = dispatch.model_copy(update={"turn": turn or None, "context": dispatch.context.model_copy(
        update={"conversation": conversation})})
    cause = cause.model_copy(update={"data": dispatch.model_dump(mode="json", exclude_none=True)})
    return cause, dispatch


def anthropic_gateway(server: FakeServer) -> Gateway:
    async def no_sleep(_: float) -> None:
        return None

    return Gateway({"anthropic": lambda: AnthropicProvider("test-key", server.url)},
                   retry=RetryPolicy(backoff_s=0.01, budget_s=5), sleep=no_sleep)


async def test_a_model_asking_for_tools_yields_a_tool_request_with_its_thought_calls_and_usage(
        fake_anthropic: FakeServer, agent_dispatch: Any) -> None:
    fake_anthropic.then(rate_limited("0.01"), Reply(200, anthropic_message("I need the brief.", tool_use=[
        {"name": "read", "input": {"path": "brief.md"}}], input_tokens=200, output_tokens=20, cache_read=0,
        cache_write=0)))
    cause, dispatch = tool_dispatch(agent_dispatch, provider="anthropic")

    events = await AgentRunner(anthropic_gateway(fake_anthropic)).handle(cause, dispatch)

    assert [e.type for e in events] == ["llm.call_failed", "llm.called", "node.tools_requested"]
    assert events[1].data["outcome"] == "tool_use" and events[1].data["turn"] == 0
    asked = events[2].data
    assert asked["thought"] == "I need the brief."
    assert asked["calls"] == [{"id": "toolu_0", "name": "read", "args": {"path": "brief.md"}}]
    assert asked["usage"]["input_tokens"] == 200 and asked["turn"] == 0
    assert [n["outcome"] for n in asked["llm_calls"]] == ["failed", "tool_use"]  # the history will show both
    assert asked["llm_calls"][0]["status"] == 429 and asked["llm_calls"][0]["then"] == "retry"
    sent = fake_anthropic.calls()[-1]
    assert sent["tools"] == [{"name": "read", "description": "Reads a workspace file.",
                              "input_schema": READ.input_schema}]
    assert "tool_choice" not in sent
    assert "You may call the tools" in sent["system"]


async def test_earlier_turns_go_to_anthropic_as_tool_use_and_tool_result_blocks(
        fake_anthropic: FakeServer, agent_dispatch: Any) -> None:
    fake_anthropic.body = VALID
    cause, dispatch = tool_dispatch(agent_dispatch, provider="anthropic", turn=1, conversation=[EARLIER])

    [_, done] = await AgentRunner(anthropic_gateway(fake_anthropic)).handle(cause, dispatch)

    assert done.type == "node.completed"
    messages = fake_anthropic.calls()[0]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [
        {"type": "text", "text": "Let me read the brief."},
        {"type": "tool_use", "id": "t0-c0", "name": "read", "input": {"path": "brief.md"}},
        {"type": "tool_use", "id": "t0-c1", "name": "shell", "input": {}}]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t0-c0", "content": json.dumps({"content": "Compare engines."}),
         "is_error": False},
        {"type": "tool_result", "tool_use_id": "t0-c1", "content": "agent 'a' may not use tool 'shell'",
         "is_error": True}]


async def test_earlier_turns_go_to_an_openai_endpoint_as_tool_calls_and_tool_messages(
        fake_openai: FakeServer, agent_dispatch: Any) -> None:
    fake_openai.body = openai_completion(None, tool_calls=[{"name": "read", "input": {"path": "b.md"}}])
    cause, dispatch = tool_dispatch(agent_dispatch, provider="openai", model="llama3.1", turn=1,
                                    conversation=[EARLIER])
    gateway = Gateway({"openai": lambda: OpenAIProvider(fake_openai.url + "/v1")})

    events = await AgentRunner(gateway).handle(cause, dispatch)

    assert events[-1].type == "node.tools_requested"
    assert events[-1].data["calls"] == [{"id": "call_0", "name": "read", "args": {"path": "b.md"}}]
    sent = fake_openai.calls("/v1/chat/completions")[0]
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool"]
    assert sent["messages"][2]["tool_calls"][0] == {
        "id": "t0-c0", "type": "function", "function": {"name": "read", "arguments": '{"path": "brief.md"}'}}
    assert sent["messages"][4] == {"role": "tool", "tool_call_id": "t0-c1",
                                   "content": "ERROR: agent 'a' may not use tool 'shell'"}
    assert sent["tools"][0]["function"]["parameters"] == READ.input_schema


async def test_in_the_turn_after_the_last_allowed_one_tools_are_off_and_a_tool_call_is_repaired(
        fake_anthropic: FakeServer, agent_dispatch: Any) -> None:
    fake_anthropic.then(Reply(200, anthropic_message(None, tool_use=[{"name": "read", "input": {"path": "x"}}])))
    fake_anthropic.body = VALID
    cause, dispatch = tool_dispatch(agent_dispatch, provider="anthropic", turn=1, conversation=[EARLIER],
                                    max_tool_turns=1)

    events = await AgentRunner(anthropic_gateway(fake_anthropic)).handle(cause, dispatch)

    assert [e.type for e in events] == ["llm.called", "llm.called", "node.completed"]
    assert "no tool turns are left (max_tool_turns = 1)" in events[0].data["problem"]
    first = fake_anthropic.calls()[0]
    assert first["tool_choice"] == {"type": "none"} and first["tools"]  # the conversation still names them
    assert "You have used all 1 tool turns" in json.dumps(first["messages"][-1])


async def test_the_router_asks_for_a_summary_and_the_model_continues_from_it(
        fake_anthropic: FakeServer, agent_dispatch: Any) -> None:
    later = ToolTurn(turn=1, thought="Now the notes.", calls=[
        ToolStep(call_id="t1-c0", tool="read", args={"path": "notes.md"}, output={"content": "n"})])
    fake_anthropic.then(Reply(200, anthropic_message("The brief asks to compare engines.", input_tokens=50,
                                                     output_tokens=9, cache_read=0, cache_write=0)))
    fake_anthropic.body = VALID
    cause, dispatch = tool_dispatch(agent_dispatch, provider="anthropic", turn=2, conversation=[EARLIER, later])
    dispatch.context.summarise = 1

    events = await AgentRunner(anthropic_gateway(fake_anthropic)).handle(cause, dispatch)

    assert [e.type for e in events] == ["llm.called", "llm.called", "node.completed"]
    assert events[0].data["outcome"] == "summary"
    ask, main = fake_anthropic.calls()
    assert "tools" not in ask and "brief.md" in ask["messages"][0]["content"]
    assert "Summary of your first 1 tool turn(s)" in main["messages"][0]["content"]
    assert "The brief asks to compare engines." in main["messages"][0]["content"]
    assert [b.get("id") for b in main["messages"][1]["content"] if b["type"] == "tool_use"] == ["t1-c0"]
    assert events[-1].data["usage"]["input_tokens"] == 50 + 15  # the summary is part of what the node costs


async def test_a_summary_made_before_a_tool_request_travels_with_it(agent_dispatch: Any) -> None:
    cause, dispatch = tool_dispatch(agent_dispatch, provider="mock", turn=1, conversation=[EARLIER],
                                    mock_responses=[{}, {"$mock_tool_calls": [{"name": "read", "args": {"path": "c"}}]}])
    dispatch.context.summarise = 1

    events = await AgentRunner(Gateway()).handle(cause, dispatch)

    asked = events[-1].data
    assert asked["summary"]["turns"] == 1 and asked["summary"]["text"].startswith("[mock summary]")
    assert asked["provider"] == "mock"


async def test_over_the_token_budget_counted_by_anthropic_the_call_is_not_sent(
        fake_anthropic: FakeServer, agent_dispatch: Any) -> None:
    fake_anthropic.routes["/v1/messages/count_tokens"] = Reply(200, {"input_tokens": 1234})
    cause, dispatch = tool_dispatch(agent_dispatch, provider="anthropic")
    dispatch.context.token_budget = 1000

    [error] = await AgentRunner(anthropic_gateway(fake_anthropic)).handle(cause, dispatch)

    assert error.type == "node.errored" and error.data["retryable"] is False
    assert error.data["error"] == ("the prompt for node 'interpretation' is 1234 tokens (counted by anthropic for "
                                   "claude-sonnet-4-5), over its budget sees.max_tokens = 1000")
    assert fake_anthropic.calls() == []  # nothing was sent to the model
    counted = fake_anthropic.calls("/v1/messages/count_tokens")[0]
    assert counted["tools"][0]["name"] == "read" and counted["model"] == "claude-sonnet-4-5"


async def test_within_the_budget_the_call_goes_ahead_and_without_a_count_the_estimate_is_stated(
        fake_anthropic: FakeServer, agent_dispatch: Any) -> None:
    fake_anthropic.routes["/v1/messages/count_tokens"] = Reply(200, {"input_tokens": 900})
    fake_anthropic.body = VALID
    cause, dispatch = tool_dispatch(agent_dispatch, provider="anthropic")
    dispatch.context.token_budget = 1000
    events = await AgentRunner(anthropic_gateway(fake_anthropic)).handle(cause, dispatch)
    assert events[-1].type == "node.completed"

    cause, dispatch = tool_dispatch(agent_dispatch, provider="mock")
    dispatch.context.token_budget = 5
    [error] = await AgentRunner(Gateway()).handle(cause, dispatch)
    assert "(estimated: about 4 characters a token; mock offers no count)" in error.data["error"]


async def test_the_mock_asks_for_scripted_tools_then_answers_with_the_next_item(agent_dispatch: Any) -> None:
    script = [{"$mock_tool_calls": [{"name": "read", "args": {"path": "brief.md"}}], "$mock_thought": "Reading."},
              {"goal": "g", "constraints": []}]
    cause, dispatch = tool_dispatch(agent_dispatch, provider="mock", mock_responses=script)
    events = await AgentRunner(Gateway()).handle(cause, dispatch)
    assert events[-1].type == "node.tools_requested"
    assert events[-1].data["thought"] == "Reading." and events[-1].data["provider"] == "mock"

    cause, dispatch = tool_dispatch(agent_dispatch, provider="mock", mock_responses=script, turn=1,
                                    conversation=[EARLIER])
    events = await AgentRunner(Gateway()).handle(cause, dispatch)
    assert events[-1].type == "node.completed" and events[-1].data["output"] == {"goal": "g", "constraints": []}


def test_the_request_renders_refused_calls_as_errors_so_the_model_can_correct_itself(agent_dispatch: Any) -> None:
    _, dispatch = tool_dispatch(agent_dispatch, turn=1, conversation=[EARLIER])
    request = build_request(dispatch)
    assert request.allow_tools and request.turn == 1
    results = request.turns[2].tool_results
    assert [(r.call_id, r.is_error) for r in results] == [("t0-c0", False), ("t0-c1", True)]


async def test_the_mock_reports_usage_that_grows_with_the_conversation(agent_dispatch: Any) -> None:
    _, short = tool_dispatch(agent_dispatch, provider="mock")
    _, long = tool_dispatch(agent_dispatch, provider="mock", turn=1, conversation=[EARLIER])
    a = await MockProvider().complete(build_request(short))
    b = await MockProvider().complete(build_request(long))
    assert b.usage.input_tokens > a.usage.input_tokens


async def test_memory_that_cannot_be_read_is_a_retryable_error_before_any_call(agent_dispatch: Any) -> None:
    from agent_engine.contracts.events import MemoryView
    from agent_engine.memory import MemoryUnavailable

    async def down(_cause: Any, _dispatch: Any) -> str:
        raise MemoryUnavailable("PostgreSQL did not answer within 10s")

    cause, dispatch = agent_dispatch(provider="mock")
    dispatch.context.memory = MemoryView(layers=["project"], project="p")
    [error] = await AgentRunner(Gateway(), memory=down).handle(cause, dispatch)
    assert error.type == "node.errored" and error.data["retryable"] is True
    assert error.data["error"].startswith("memory layers ['project'] could not be read: PostgreSQL did not answer")


async def test_tool_arguments_that_are_not_json_go_back_to_the_model_as_a_repair(
        fake_openai: FakeServer, agent_dispatch: Any) -> None:
    broken = openai_completion(None, tool_calls=[{"name": "read", "input": {}}])
    broken["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"path": "a.md"'
    fake_openai.then(Reply(200, broken))
    fake_openai.body = openai_completion('{"goal": "g", "constraints": []}')
    cause, dispatch = tool_dispatch(agent_dispatch, provider="openai", model="llama3.1")
    gateway = Gateway({"openai": lambda: OpenAIProvider(fake_openai.url + "/v1")})

    events = await AgentRunner(gateway).handle(cause, dispatch)

    assert [e.type for e in events] == ["llm.called", "llm.called", "node.completed"]
    assert events[0].data["outcome"] == "invalid"
    assert events[0].data["problem"].startswith("the arguments of tool call 'read' are not JSON")


async def test_white_space_thoughts_and_made_up_tool_names_are_sent_back_in_a_shape_the_api_accepts(
        fake_anthropic: FakeServer, agent_dispatch: Any) -> None:
    odd = ToolTurn(turn=0, thought="\n\n", calls=[
        ToolStep(call_id="t0-c0", tool="functions.read file", args={}, refused=True, error="may not use it")])
    fake_anthropic.body = VALID
    cause, dispatch = tool_dispatch(agent_dispatch, provider="anthropic", turn=1, conversation=[odd])
    await AgentRunner(anthropic_gateway(fake_anthropic)).handle(cause, dispatch)
    assistant = fake_anthropic.calls()[0]["messages"][1]["content"]
    assert assistant == [{"type": "tool_use", "id": "t0-c0", "name": "invalid_tool_name", "input": {}}]


async def test_more_tool_calls_than_one_turn_may_ask_for_is_an_invalid_reply(agent_dispatch: Any) -> None:
    many = [{"name": "read", "args": {"path": f"{i}.md"}} for i in range(65)]
    cause, dispatch = tool_dispatch(agent_dispatch, provider="mock", max_repairs=0,
                                    mock_responses=[{"$mock_tool_calls": many}])
    events = await AgentRunner(Gateway()).handle(cause, dispatch)
    assert [e.type for e in events] == ["llm.called", "node.errored"]
    assert "asks for 65 tool calls; at most 64" in events[-1].data["error"]


def test_a_tool_request_over_the_result_limit_becomes_a_node_error(agent_dispatch: Any) -> None:
    from agent_engine.contracts.envelope import Envelope
    from agent_engine.contracts.events import NodeToolsRequested, RequestedCall
    from agent_engine.runtime.runner import _within_limit

    cause, dispatch = tool_dispatch(agent_dispatch)
    huge = NodeToolsRequested(dispatch_id=dispatch.dispatch_id, node=dispatch.node, attempt=1,
                              calls=[RequestedCall(name="read", args={"path": "x" * 300_000})])
    event = Envelope(id="e", source="t", type=huge.TYPE, time=cause.time, tenant="acme", task_id="t", correlation_id="t",
                     data=huge.model_dump(mode="json"))
    replaced = _within_limit(event, "agent-engine/agent-runner", cause, dispatch)
    assert replaced.type == "node.errored" and replaced.data["error"].startswith("the model's request for tools is 29")


async def test_each_repair_is_counted_against_the_budget_again(fake_anthropic: FakeServer, agent_dispatch: Any) -> None:
    def count(request: dict[str, Any]) -> Reply | None:  # the prompt grows by the repair turns
        if request["path"] == "/v1/messages/count_tokens":
            return Reply(200, {"input_tokens": 900 + 200 * (len(request["json"]["messages"]) - 1)})
        return None

    fake_anthropic.respond = count
    fake_anthropic.body = anthropic_message('{"goal": ""}')  # invalid: constraints missing, so a repair follows
    cause, dispatch = tool_dispatch(agent_dispatch, provider="anthropic", tools=[], tool_defs=None)
    dispatch.context.token_budget = 1000

    events = await AgentRunner(anthropic_gateway(fake_anthropic)).handle(cause, dispatch)

    assert [e.type for e in events] == ["llm.called", "node.errored"]
    assert "is 1300 tokens (counted by anthropic" in events[-1].data["error"]
    assert len(fake_anthropic.calls()) == 1  # the repair was not sent
