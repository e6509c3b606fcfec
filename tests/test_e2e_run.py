"""A user's first run, through agentctl as a subprocess, against the five services as processes."""

from __future__ import annotations

import json

import pytest

from agent_engine.contracts.envelope import CONTRACT_VERSION

pytestmark = pytest.mark.e2e

WORKING_NODES = ["gather_context", "interpretation", "decomposition", "planning", "execution", "review"]


def test_run_example_shows_each_node_and_succeeds(engine, tenant):
    done = engine.agentctl("run", "examples/research-review", "--input", "@examples/research-review/input.json",
                           "--tenant", tenant)
    assert done.returncode == 0, done.stderr + done.stdout
    for node in WORKING_NODES:
        assert f"✓ {node}" in done.stdout
    assert "[mock]" in done.stdout
    assert "succeeded" in done.stdout.splitlines()[-1]


def test_submit_then_inspect_machine_readable(engine, tenant):
    pushed = engine.agentctl("workflow", "push", "examples/research-review", "--tenant", tenant)
    assert pushed.returncode == 0, pushed.stderr
    sub = engine.agentctl("submit", "research-review", "--tenant", tenant,
                          "--input", '{"brief": "mail me at a.b@example.org"}')
    assert sub.returncode == 0, sub.stderr
    task_id = sub.stdout.strip()
    assert len(task_id.splitlines()) == 1 and len(task_id) == 36  # only the id on stdout

    shown = {}
    for _ in range(100):
        shown = json.loads(engine.agentctl("task", "show", task_id, "--json").stdout)
        if shown["status"] in ("succeeded", "failed"):
            break
    assert shown["task_id"] == task_id
    assert shown["status"] == "succeeded"
    nodes = {n["node"]: n for n in shown["nodes"]}
    assert all(nodes[n]["status"] == "succeeded" and nodes[n]["attempts"] == 1 for n in WORKING_NODES)
    assert nodes["interpretation"]["provider"] == "mock"
    assert shown["revision"] and shown["engine_version"] and shown["contract_version"] == CONTRACT_VERSION
    assert shown["usage"]["input_tokens"] > 0

    history = json.loads(engine.agentctl("task", "history", task_id, "--json").stdout)
    types = [e["type"] for e in history]
    assert types[0] == "router.input" and types[1] == "task.started" and types[-1] == "task.succeeded"
    started = next(e for e in history if e["type"] == "task.started")
    assert "a.b@example.org" not in json.dumps(started)  # guardrails redacted the email before the router
    assert "[redacted:email]" in started["data"]["input"]["brief"]

    tail = engine.agentctl("tail", "--task", task_id, "--no-follow", "--json")
    tailed = [json.loads(line)["type"] for line in tail.stdout.splitlines()]
    # the raw request is deleted once guardrails answered it: the stream keeps the redacted task.accepted, after
    # the verdict recording the redaction
    assert tailed[:2] == ["guardrail.verdict", "task.accepted"]
    assert "task.requested" not in tailed and tailed[-1] == "task.succeeded"
    assert "llm.called" in tailed

    cost = json.loads(engine.agentctl("cost", "--task", task_id, "--json").stdout)
    assert cost["calls"] == 6 and cost["mock_calls"] == 6 and cost["cost_usd"] == "0"
    # the executor's model asks for its word_count tool, then answers: two calls
    assert [c["node"] for c in cost["call_log"]] == ["interpretation", "decomposition", "planning", "execution",
                                                      "execution", "review"]
    table = engine.agentctl("cost", "--task", task_id).stdout
    assert f"task {task_id}: 6 call(s), 0 USD" in table and "mock/mock-1 [mock]" in table


def test_idempotency_key_names_one_task(engine, tenant):
    engine.agentctl("workflow", "push", "examples/research-review", "--tenant", tenant)
    first = engine.agentctl("submit", "research-review", "--tenant", tenant, "--idempotency-key", "order-42")
    second = engine.agentctl("submit", "research-review", "--tenant", tenant, "--idempotency-key", "order-42")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.strip() == second.stdout.strip()  # the second request's own id names no task that runs
    assert "task exists for idempotency key 'order-42'" in second.stderr


def test_ps_reports_every_service(engine):
    rows = json.loads(engine.agentctl("ps", "--json").stdout)
    names = {r["name"]: r for r in rows}
    for service in ("guardrails", "router", "agent-runner", "tool-runner", "telemetry"):
        assert names[service]["status"] == "running" and names[service]["pid"]


def test_run_exits_non_zero_with_the_reason_when_the_task_fails(engine, tenant):
    failed = engine.agentctl("run", "examples/research-review", "--tenant", tenant)  # no brief in the input
    assert failed.returncode == 1
    assert "gather_context" in failed.stdout and "$input.brief" in failed.stdout
    assert "failed" in failed.stdout.splitlines()[-1]
