"""Traces end to end (issue 16, item 1): one task is one trace across every process of a real stack.

research-review on the mock: a tool node, five agents, and the executor's model asking for its
word_count tool (a tool dispatch in the middle of an agent node). Every service appends its spans to one
AE_TRACE_FILE; the test reads that file and checks the tree an operator would see in a trace viewer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_engine.contracts.envelope import command
from agent_engine.contracts.events import TaskRequested
from agent_engine.contracts.subjects import subject_for
from agent_engine.testkit.connections import connected

pytestmark = pytest.mark.e2e
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "research-review"
AGENTS = {"interpreter", "decomposer", "planner", "executor", "reviewer"}


def _spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _wait_for(path: Path, found: Any, what: str, tries: int = 150) -> list[dict[str, Any]]:
    """The file's spans once `found(spans)` holds (the processes export in batches, every 0.1 s here)."""
    spans: list[dict[str, Any]] = []
    for _ in range(tries):
        spans = _spans(path)
        if found(spans):
            return spans
        time.sleep(0.2)
    raise AssertionError(f"{what} never appeared in {path}; spans: {[s['name'] for s in spans]}")


@pytest.fixture(scope="module")
def traced(own_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    trace_file = tmp_path_factory.mktemp("traces") / "traces.jsonl"
    engine = own_stack(AE_TRACE_FILE=str(trace_file), OTEL_BSP_SCHEDULE_DELAY="100")
    yield engine, trace_file


def _ancestors(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    chain = []
    while span.get("parent_span_id") in by_id:
        span = by_id[span["parent_span_id"]]
        chain.append(span)
    return chain


def test_a_task_is_one_trace_across_the_services(traced: tuple[Any, Path], tenant: str) -> None:
    engine, trace_file = traced
    ran = engine.agentctl("run", "examples/research-review", "--tenant", tenant, "--input",
                          "@" + str(EXAMPLE / "input.json"))
    assert ran.returncode == 0, ran.stderr
    task_id = ran.stdout.strip().splitlines()[-1].split()[1]

    def finished(spans: list[dict[str, Any]]) -> bool:
        names = {s["name"] for s in spans if s["attributes"].get("ae.task.id") == task_id}
        return "invoke_workflow research-review" in names and "invoke_agent reviewer" in {s["name"] for s in spans}

    spans = _wait_for(trace_file, finished, f"the invoke_workflow span of task {task_id}")
    [workflow] = [s for s in spans if s["name"] == "invoke_workflow research-review"
                  and s["attributes"]["ae.task.id"] == task_id]
    trace_id = workflow["trace_id"]
    # every span the engine made for the task is in the one trace, and so is everything under them
    assert {s["trace_id"] for s in spans if s["attributes"].get("ae.task.id") == task_id
            and s["service"] != "agent-engine-agentctl"} == {trace_id}
    mine = [s for s in spans if s["trace_id"] == trace_id]
    by_id = {s["span_id"]: s for s in mine}
    assert len(by_id) == len(mine), "span ids are unique"
    names = {s["name"] for s in mine}
    assert {f"invoke_agent {a}" for a in AGENTS} <= names
    # the tool node's tool and the executor's tool call each have their execute_tool span
    assert {"execute_tool brief_stats", "execute_tool word_count"} <= names, names

    # the trace starts at guardrails' span for the request (a new trace: the sender is not trusted), which links
    # agentctl's publish of it, in agentctl's own trace; the task span hangs under guardrails' span
    parent = by_id[workflow["parent_span_id"]]
    assert parent["service"] == "agent-engine-guardrails" and parent["kind"] == "consumer"
    assert parent["parent_span_id"] is None
    [request] = [s for s in spans if s["service"] == "agent-engine-agentctl"
                 and s["attributes"].get("ae.task.id") == task_id]
    assert request["kind"] == "producer" and request["attributes"]["ae.event.type"] == "task.requested"
    assert request["parent_span_id"] is None and request["trace_id"] != trace_id
    assert parent["links"] == [{"trace_id": request["trace_id"], "span_id": request["span_id"]}]
    assert workflow["service"] == "agent-engine-router" and workflow["status"] == "unset"
    assert workflow["start"] < workflow["end"]

    # each agent's span: in the agent-runner, under the task span through the router's publish of its dispatch
    agent_spans = [s for s in mine if s["name"].startswith("invoke_agent ")]
    assert len(agent_spans) >= len(AGENTS) + 1  # the executor runs twice (before and after its tool call)
    for agent in agent_spans:
        chain = _ancestors(agent, by_id)
        assert agent["service"] == "agent-engine-agent-runner"
        assert chain[0]["name"].startswith("process ae.") and chain[0]["service"] == "agent-engine-agent-runner"
        assert chain[1]["name"].startswith("publish ae.") and chain[1]["service"] == "agent-engine-router"
        assert chain[2] is workflow
        assert agent["attributes"]["gen_ai.operation.name"] == "invoke_agent"

    # each LLM call: a chat span under its agent's span, with the provider, models and token usage
    chats = [s for s in mine if s["name"].startswith("chat ")]
    assert len(chats) >= len(agent_spans)
    for chat in chats:
        assert by_id[chat["parent_span_id"]]["name"].startswith("invoke_agent ")
        attributes = chat["attributes"]
        assert attributes["gen_ai.operation.name"] == "chat" and attributes["gen_ai.provider.name"] == "mock"
        assert attributes["gen_ai.request.model"] and attributes["gen_ai.response.model"]
        assert attributes["gen_ai.usage.input_tokens"] > 0 and attributes["gen_ai.usage.output_tokens"] > 0
        assert "gen_ai.usage.cache_read.input_tokens" in attributes
        assert chat["kind"] == "client"

    # the executor's tool call: in the tool-runner, under guardrails' tool gate, under the router's dispatch
    [tool] = [s for s in mine if s["name"] == "execute_tool word_count"]
    chain = _ancestors(tool, by_id)
    assert tool["service"] == "agent-engine-tool-runner" and tool["attributes"]["gen_ai.tool.call.id"] == "t0-c0"
    services = [s["service"] for s in chain]
    assert services.index("agent-engine-guardrails") < services.index("agent-engine-router")
    assert workflow in chain

    # the router's process spans for the runners' answers continue the runners' traces
    answers = [s for s in mine if s["service"] == "agent-engine-router" and s["kind"] == "consumer"
               and s["attributes"].get("ae.event.type") == "node.completed"]
    assert answers and all(by_id[a["parent_span_id"]]["service"] in ("agent-engine-agent-runner",
                                                                       "agent-engine-tool-runner") for a in answers)

    # no prompt or answer text, no key: content capture is off
    text = trace_file.read_text()
    prompts = json.loads((EXAMPLE / "input.json").read_text())
    for value in (v for v in prompts.values() if isinstance(v, str) and len(v) > 12):
        assert value not in text
    assert "sk-ant-planted" not in text and "gen_ai.input.messages" not in text


FOREIGN_TRACE, FOREIGN_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
"""Another tenant's trace (or another task's), as a hostile sender names it in its request."""
FOREIGN = f"00-{FOREIGN_TRACE}-{FOREIGN_SPAN}-01"


def _request_with_foreign_context(engine: Any, tenant: str) -> str:
    """A submitter's own client sends research-review with the foreign traceparent in the NATS header and in the
    envelope; returns the task id."""
    assert engine.agentctl("workflow", "push", "examples/research-review", "--tenant", tenant).returncode == 0
    credential = engine.credential(tenant, "alice", "submitter")
    task_id = str(uuid.uuid4())
    request = command(TaskRequested(workflow="research-review", requested_by="alice",
                                    input=json.loads((EXAMPLE / "input.json").read_text())),
                      tenant=tenant, task_id=task_id, source="alice").model_copy(update={"traceparent": FOREIGN})

    async def send() -> None:
        async with connected(engine.nats_url, credential) as nc:
            await nc.jetstream().publish(subject_for(request), request.to_bytes(), timeout=10,
                                         headers={"Nats-Msg-Id": request.id, "traceparent": FOREIGN})

    asyncio.run(send())
    return task_id


def _task_spans(trace_file: Path, task_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The task's invoke_workflow span once the task ended, and every span of the file."""
    def finished(spans: list[dict[str, Any]]) -> bool:
        return any(s["name"] == "invoke_workflow research-review" and s["attributes"].get("ae.task.id") == task_id
                   for s in spans)

    spans = _wait_for(trace_file, finished, f"the invoke_workflow span of task {task_id}")
    [workflow] = [s for s in spans if s["name"] == "invoke_workflow research-review"
                  and s["attributes"]["ae.task.id"] == task_id]
    assert workflow["attributes"]["ae.task.status"] == "succeeded"
    return workflow, spans


def test_a_senders_traceparent_is_linked_not_joined(traced: tuple[Any, Path], tenant: str) -> None:
    """Review of issue #16: a tenant's traceparent set the task's trace id, so a tenant could put the engine's spans
    into another tenant's trace, or join two tasks into one trace. Now the task runs in a trace of its own, whose
    root (guardrails' span for the request) links the sender's context."""
    engine, trace_file = traced
    task_id = _request_with_foreign_context(engine, tenant)
    workflow, spans = _task_spans(trace_file, task_id)
    trace_id = workflow["trace_id"]
    assert trace_id != FOREIGN_TRACE
    assert not [s for s in spans if s["trace_id"] == FOREIGN_TRACE], "no span of the engine joined the sender's trace"
    mine = [s for s in spans if s["trace_id"] == trace_id]
    assert {s["trace_id"] for s in spans if s["attributes"].get("ae.task.id") == task_id} == {trace_id}
    assert {f"invoke_agent {a}" for a in AGENTS} <= {s["name"] for s in mine}
    [root] = [s for s in mine if s["parent_span_id"] is None]
    assert root["service"] == "agent-engine-guardrails" and root["kind"] == "consumer"
    assert root["links"] == [{"trace_id": FOREIGN_TRACE, "span_id": FOREIGN_SPAN}]
    assert root["attributes"]["ae.sender.trace_id"] == FOREIGN_TRACE
    assert workflow["parent_span_id"] == root["span_id"]


def test_the_trace_file_is_for_its_owner_only(traced: tuple[Any, Path]) -> None:
    _, trace_file = traced
    _wait_for(trace_file, bool, "any span")
    assert trace_file.stat().st_mode & 0o777 == 0o600


def test_with_trusted_senders_the_senders_trace_is_kept(own_stack: Any, tenant: str,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    """AE_TRACE_TRUST_INGRESS=true (every sender is the deployment's own): the sender's span is the parent."""
    trace_file = tmp_path_factory.mktemp("trusted-traces") / "traces.jsonl"
    engine = own_stack(AE_TRACE_FILE=str(trace_file), OTEL_BSP_SCHEDULE_DELAY="100", AE_TRACE_TRUST_INGRESS="true")
    task_id = _request_with_foreign_context(engine, tenant)
    workflow, spans = _task_spans(trace_file, task_id)
    assert workflow["trace_id"] == FOREIGN_TRACE
    [gate] = [s for s in spans if s["span_id"] == workflow["parent_span_id"]]
    assert gate["service"] == "agent-engine-guardrails" and gate["parent_span_id"] == FOREIGN_SPAN
    assert "links" not in gate


def test_a_fork_request_is_decided_in_the_routers_own_trace(traced: tuple[Any, Path], tenant: str) -> None:
    """A fork goes to the router itself: its span for the request is a root linking agentctl's publish, the
    task.forked record names that span, not the sender's, and the fork replays identically."""
    engine, trace_file = traced
    ran = engine.agentctl("run", "examples/research-review", "--tenant", tenant, "--input",
                          "@" + str(EXAMPLE / "input.json"))
    assert ran.returncode == 0, ran.stderr
    source = ran.stdout.strip().splitlines()[-1].split()[1]
    forked = engine.agentctl("task", "fork", source, "--at", "3")
    assert forked.returncode == 0, forked.stdout + forked.stderr
    fork = next(ln for ln in forked.stderr.splitlines() if " forked from " in ln).split()[1]

    def seen(spans: list[dict[str, Any]]) -> bool:
        return any(s["name"].startswith("process ") and s["attributes"].get("ae.event.type") == "task.fork_requested"
                   and s["attributes"].get("ae.task.id") == fork for s in spans)

    spans = _wait_for(trace_file, seen, f"the router's span for the fork request of task {fork}")
    [request] = [s for s in spans if s["kind"] == "producer" and s["attributes"].get("ae.task.id") == fork
                 and s["attributes"]["ae.event.type"] == "task.fork_requested"]
    [process] = [s for s in spans if s["kind"] == "consumer" and s["attributes"].get("ae.task.id") == fork
                 and s["attributes"]["ae.event.type"] == "task.fork_requested"]
    assert request["service"] == "agent-engine-agentctl" and process["service"] == "agent-engine-router"
    assert process["parent_span_id"] is None and process["trace_id"] != request["trace_id"]
    assert process["links"][0] == {"trace_id": request["trace_id"], "span_id": request["span_id"]}

    records = json.loads(engine.agentctl("task", "history", fork, "--json").stdout)
    [record] = [r for r in records if r["type"] == "task.forked"]
    assert record["traceparent"] == f"00-{process['trace_id']}-{process['span_id']}-01"
    assert request["trace_id"] not in json.dumps(records)  # no record names the sender's trace
    assert "identical" in engine.agentctl("task", "replay", fork).stdout

    # review of the trace change: the fork took the copied history's trace, so its invoke_workflow span had the
    # source's span id in the source's trace. Now it is in the fork's own trace, under the router's span for the
    # request, with an id no other span has, linking the source's; the request's span links the source's too
    source_span, _ = _task_spans(trace_file, source)
    fork_span, spans = _task_spans(trace_file, fork)
    [process] = [s for s in spans if s["kind"] == "consumer" and s["attributes"].get("ae.task.id") == fork
                 and s["attributes"]["ae.event.type"] == "task.fork_requested"]
    source_link = {"trace_id": source_span["trace_id"], "span_id": source_span["span_id"]}
    assert process["links"] == [{"trace_id": request["trace_id"], "span_id": request["span_id"]}, source_link]
    assert [s for s in spans if s["span_id"] == fork_span["span_id"]] == [fork_span]
    assert (fork_span["trace_id"], fork_span["parent_span_id"]) == (process["trace_id"], process["span_id"])
    assert fork_span["links"] == [source_link]
    # and what the engine did for the fork (the router's publishes, the runners' work) is in the fork's trace
    of_fork = [s for s in spans if s["attributes"].get("ae.task.id") == fork and s["service"] != "agent-engine-agentctl"]
    assert {s["trace_id"] for s in of_fork} == {fork_span["trace_id"]}
    fork_trace = {s["span_id"]: s for s in spans if s["trace_id"] == fork_span["trace_id"]}
    [tool] = [s for s in fork_trace.values() if s["name"] == "execute_tool brief_stats"]  # the tool node runs again
    assert fork_span in _ancestors(tool, fork_trace)


APPROVAL = Path(__file__).resolve().parent / "workflows" / "approval"


def test_an_approval_links_the_trace_of_the_task_it_decides(traced: tuple[Any, Path], tenant: str) -> None:
    """Review of the trace change: an approval (like a cancel) is decided in a trace of its own, which linked only
    its sender's; the task is in another trace. Now the router's span for the decision links the task's
    invoke_workflow span too, so a viewer goes from the approval to the task."""
    engine, trace_file = traced
    assert engine.agentctl("workflow", "push", str(APPROVAL), "--tenant", tenant).returncode == 0
    submitted = engine.agentctl("submit", "approval", "--tenant", tenant, "--input", '{"folder": "examples"}')
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    engine.wait_for_status(task_id, "waiting")
    approved = engine.agentctl("--credential", engine.credential(tenant, "alice"), "approve", task_id, "listing")
    assert approved.returncode == 0, approved.stderr
    engine.wait_for_status(task_id, "succeeded")

    def decided(spans: list[dict[str, Any]]) -> bool:
        mine = [s for s in spans if s["attributes"].get("ae.task.id") == task_id]
        return (any(s["name"] == "invoke_workflow approval" for s in mine)
                and any(s["kind"] == "consumer" and s["attributes"]["ae.event.type"] == "node.approval_decided"
                        for s in mine))

    spans = _wait_for(trace_file, decided, f"the invoke_workflow span and the approval's span of task {task_id}")
    [workflow] = [s for s in spans if s["name"] == "invoke_workflow approval"
                  and s["attributes"]["ae.task.id"] == task_id]
    [sent] = [s for s in spans if s["kind"] == "producer" and s["attributes"].get("ae.task.id") == task_id
              and s["attributes"]["ae.event.type"] == "node.approval_decided"]
    [decision] = [s for s in spans if s["kind"] == "consumer" and s["attributes"].get("ae.task.id") == task_id
                  and s["attributes"]["ae.event.type"] == "node.approval_decided"]
    assert decision["service"] == "agent-engine-router" and decision["parent_span_id"] is None
    assert decision["trace_id"] not in (workflow["trace_id"], sent["trace_id"])
    assert decision["links"] == [{"trace_id": sent["trace_id"], "span_id": sent["span_id"]},
                                 {"trace_id": workflow["trace_id"], "span_id": workflow["span_id"]}]
