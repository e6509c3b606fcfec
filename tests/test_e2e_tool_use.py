"""Tool use through events, end to end (issue 4): research-review's executor asks for its word_count tool.

With the mock, offline, on the shared stack; and with the real `anthropic` SDK against a local server that
speaks the Messages API, on a stack of its own: the executor's first call is rate limited (429), its model
asks for the tool, its first answer after the tool result breaks the schema and is repaired. The task's
history shows every call, tool step, repair and retry, and the ledger total is the exact sum of the calls.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services" / "agent-runner" / "tests"))
from fake_llm import FakeServer, Reply, anthropic_message, fake_anthropic_server, rate_limited, serve

pytestmark = pytest.mark.e2e
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "research-review"
PLANTED_KEY = "sk-ant-planted-0123456789abcdef-never-in-events"  # what conftest starts every stack with
DRAFT = "Event-sourced engines resume after a crash without paying for an LLM call twice."
ANSWERS = {  # by a phrase of each agent's system prompt: what the "model" answers
    "restate what a brief": {"goal": "Compare engines", "constraints": ["two pages"], "audience": "platform teams"},
    "break goals": {"subtasks": [{"id": "s1", "title": "Crash behaviour"}]},
    "plan work": {"steps": [{"subtask": "s1", "action": "Tabulate what survives a crash"}]},
    "strict reviewer": {"verdict": "approve", "comments": "Concrete and short."},
}


def _text(body: dict[str, Any]) -> str:
    return json.dumps(body["messages"])


class Model:
    """Answers as research-review's agents would: the executor needs a 429, a tool call and a repair."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.limited = False

    def __call__(self, request: dict[str, Any]) -> Reply | None:
        body = request["json"]
        system = body.get("system", "")
        usage = {"input_tokens": 1000 + len(_text(body)) // 4, "output_tokens": 120, "cache_read": 600,
                 "cache_write": 150}
        if "carry out plans" in system:
            with self.lock:
                if not self.limited:
                    self.limited = True
                    return rate_limited("0.2")
            if "tool_result" not in _text(body):
                return Reply(200, anthropic_message("Checking the length of my draft.", model=body["model"],
                                                    tool_use=[{"name": "word_count", "input": {"text": DRAFT}}],
                                                    **usage))
            if "Your reply was not valid" not in _text(body):
                return Reply(200, anthropic_message('{"notes": ["I forgot the deliverable"]}', model=body["model"],
                                                    **usage))
            return Reply(200, anthropic_message(json.dumps({"deliverable": DRAFT, "notes": ["31 words"]}),
                                                model=body["model"], **usage))
        for phrase, answer in ANSWERS.items():
            if phrase in system:
                return Reply(200, anthropic_message(json.dumps(answer), model=body["model"], **usage))
        return Reply(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "unknown agent"}})


@pytest.fixture(scope="module")
def model_server() -> Iterator[FakeServer]:
    server = fake_anthropic_server()
    server.respond = Model()
    with serve(server) as running:
        yield running


@pytest.fixture(scope="module")
def anthropic_engine(model_server: FakeServer, own_stack: Any) -> Any:
    """A stack whose agent-runner sends every agent node to the local Messages API server through the SDK."""
    return own_stack(AE_PROVIDER=None, ANTHROPIC_BASE_URL=model_server.url, NO_PROXY="127.0.0.1,localhost",
                     AE_LLM_BACKOFF_S="0.05")


def _agent_results(history: list[Envelope], node: str) -> list[dict[str, Any]]:
    """The agent-runner's results the router applied for `node`, in order (as their router.input records hold
    them; the tool-runner's results for the node's tool calls are left out)."""
    return [r.data["input"] for r in history if r.type == "router.input"
            and r.data["input"]["data"].get("node") == node and r.data["input"]["source"] == "agent-engine/agent-runner"]


def test_research_review_with_the_mock_records_the_tool_step_and_replays_identically(engine, tenant):
    ran = engine.agentctl("run", "examples/research-review", "--tenant", tenant, "--input", "@" + str(
        EXAMPLE / "input.json"))
    assert ran.returncode == 0, ran.stderr
    assert "⚒ execution        turn 0 [mock]: word_count(" in ran.stdout, ran.stdout
    task_id = ran.stdout.strip().splitlines()[-1].split()[1]

    history = [Envelope.model_validate(e) for e in json.loads(engine.agentctl("task", "history", task_id,
                                                                              "--json").stdout)]
    [turn] = [r for r in history if r.type == "node.tool_turn_recorded"]
    assert turn.data["node"] == "execution" and turn.data["calls"][0]["tool"] == "word_count"
    [returned] = [r for r in history if r.type == "node.tool_returned"]
    assert returned.data["output"]["words"] == 31
    dispatches = [r.data for r in history if r.type == "node.dispatched" and r.data["node"] == "execution"]
    assert [(d["kind"], d.get("turn"), (d.get("call") or {}).get("call_id")) for d in dispatches] == [
        ("agent", None, None), ("tool", None, "t0-c0"), ("agent", 1, None)]
    assert dispatches[2]["context"]["conversation"][0]["calls"][0]["output"]["words"] == 31

    shown = json.loads(engine.agentctl("task", "show", task_id, "--json").stdout)
    [execution] = [n for n in shown["nodes"] if n["node"] == "execution"]
    assert execution["turns"] == 1 and execution["tool_calls"][0]["status"] == "ok"
    replayed = engine.agentctl("task", "replay", task_id)
    assert replayed.returncode == 0 and "identical" in replayed.stdout, replayed.stdout


async def _stream_calls(engine: Any, task_id: str, expected: int) -> list[Envelope]:
    """The task's llm.called and llm.call_failed events as the stream holds them."""
    nc = await engine.connect()
    try:
        found: dict[str, Envelope] = {}
        js = nc.jetstream()
        for kind in ("llm.called", "llm.call_failed"):
            sub = await js.subscribe(f"ae.*.{kind}", ordered_consumer=True, deliver_policy="all")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except Exception:  # noqa: BLE001  nothing more for now
                    if sum(1 for e in found.values() if e.type == "llm.called") >= expected or kind != "llm.called":
                        break
                    continue
                event = Envelope.from_bytes(msg.data)
                if event.task_id == task_id:
                    found[event.id] = event
            await sub.unsubscribe()
        return list(found.values())
    finally:
        await nc.close()


def test_research_review_against_the_messages_api_with_a_tool_a_repair_and_a_429(anthropic_engine, model_server,
                                                                                  tenant):
    ran = anthropic_engine.agentctl("run", "examples/research-review", "--tenant", tenant, "--input",
                                    "@" + str(EXAMPLE / "input.json"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    task_id = ran.stdout.strip().splitlines()[-1].split()[1]
    history = [Envelope.model_validate(e) for e in json.loads(
        anthropic_engine.agentctl("task", "history", task_id, "--json").stdout)]

    # every agent node was answered through the SDK, the executor after a tool turn and a repair
    answered = {r.data["node"]: r.data for r in history if r.type == "node.succeeded"}
    assert {answered[n]["provider"] for n in ANSWERS_NODES} == {"anthropic"}
    tool_request, completion = _agent_results(history, "execution")
    assert tool_request["type"] == "node.tools_requested"
    assert [(c["outcome"], c.get("status"), c.get("then")) for c in tool_request["data"]["llm_calls"]] == [
        ("failed", 429, "retry"), ("tool_use", None, None)]
    assert completion["type"] == "node.completed"
    assert [(c["outcome"], c["repair"]) for c in completion["data"]["llm_calls"]] == [("invalid", 0), ("valid", 1)]
    assert "'deliverable' is a required property" in completion["data"]["llm_calls"][0]["problem"]
    [turn] = [r.data for r in history if r.type == "node.tool_turn_recorded"]
    assert turn["thought"] == "Checking the length of my draft." and turn["calls"][0]["args"] == {"text": DRAFT}
    [returned] = [r.data for r in history if r.type == "node.tool_returned"]
    assert returned["output"]["words"] == len(DRAFT.split())
    # the model was shown the tool's result as a tool_result block answering its tool_use id
    after_tool = next(r["json"] for r in model_server.requests if r["path"] == "/v1/messages"
                  and "tool_result" in _text(r["json"]) and "carry out plans" in r["json"]["system"])
    assert after_tool["messages"][1]["content"][1] == {
        "type": "tool_use", "id": "t0-c0", "name": "word_count", "input": {"text": DRAFT}}
    assert after_tool["messages"][2]["content"][0]["tool_use_id"] == "t0-c0"
    assert after_tool["tools"][0]["name"] == "word_count"

    # the history as an operator reads it names each step
    printed = anthropic_engine.agentctl("task", "history", task_id).stdout
    assert "llm calls: 429 retry, tool_use" in printed and "llm calls: invalid, valid (repair 1)" in printed
    assert "node.tool_turn_recorded" in printed and "node.tool_returned" in printed

    # the ledger: its total is the exact sum of the calls' costs (7 calls: 4 agents once, the executor 3 times)
    calls = asyncio.run(_stream_calls(anthropic_engine, task_id, expected=7))
    costed = [e for e in calls if e.type == "llm.called"]
    assert len(costed) == 7 and len([e for e in calls if e.type == "llm.call_failed"]) == 1
    total = sum((Decimal(e.data["cost_usd"]) for e in costed), Decimal(0))
    ledger: dict[str, Any] = {}
    for _ in range(50):
        ledger = json.loads(anthropic_engine.agentctl("cost", "--task", task_id, "--json").stdout)
        if ledger.get("calls") == 7:
            break
        time.sleep(0.2)
    assert ledger["calls"] == 7 and Decimal(ledger["cost_usd"]) == total > 0
    assert Decimal(ledger["nodes"]["execution"]["cost_usd"]) == sum(
        (Decimal(e.data["cost_usd"]) for e in costed if e.data["node"] == "execution"), Decimal(0))
    assert PLANTED_KEY not in json.dumps([e.model_dump(mode="json") for e in history + calls])


ANSWERS_NODES = ("interpretation", "decomposition", "planning", "execution", "review")
