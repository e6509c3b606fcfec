"""Guardrails' tool gate, end to end on the real stack (NATS, PostgreSQL, the five services; the LLM is the mock,
scripted per turn in each workflow's mock/): a call the workflow's policy forbids is refused, the model sees the
refusal with its rule and corrects its call, and the task succeeds; a write that needs approval waits, `approve`
lets it run, and it runs once; `reject` returns a refusal to the model; and the server itself refuses both ways
around the gate (the tool-runner reading the router's dispatches, anyone but guardrails clearing a call)."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest

from agent_engine.contracts.credentials import load_credential
from agent_engine.contracts.envelope import Envelope, command
from agent_engine.contracts.events import DispatchedTool, ToolCallCleared
from agent_engine.contracts.subjects import subject_for, type_subject
from agent_engine.runtime.bus import auth_options

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_e2e_trust import Session, keyring, refused_publish  # the trust tests' raw-connection helpers

pytestmark = pytest.mark.e2e
POLICY_WF = "tests/workflows/tool-policy"
APPROVAL_WF = "tests/workflows/tool-approval"
NODE_APPROVAL_WF = "tests/workflows/tool-node-approval"


def _submit(engine: Any, tenant: str, workflow: str, task_input: str = "{}") -> str:
    pushed = engine.agentctl("workflow", "push", workflow, "--tenant", tenant)
    assert pushed.returncode == 0, pushed.stderr
    sub = engine.agentctl("submit", Path(workflow).name, "--tenant", tenant, "--input", task_input)
    assert sub.returncode == 0, sub.stderr
    return str(sub.stdout.strip())


def _history(engine: Any, task_id: str) -> list[Envelope]:
    return [Envelope.model_validate(e) for e in json.loads(engine.agentctl("task", "history", task_id, "--json").stdout)]


def _verdicts(engine: Any, tenant: str) -> list[dict[str, Any]]:
    """The tenant's guardrail.verdict events on the stream, read with the platform credential."""
    async def read() -> list[dict[str, Any]]:
        nc = await nats.connect(engine.nats_url, **auth_options(load_credential(keyring(engine).admin)))
        try:
            sub = await nc.jetstream().subscribe(type_subject("guardrail.verdict", tenant), ordered_consumer=True,
                                                 stream="AE_EVENTS")
            found = []
            while True:
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except Exception:  # noqa: BLE001  nats' timeout: no more
                    return found
                found.append(json.loads(msg.data)["data"])
        finally:
            await nc.close()

    return asyncio.run(read())


def test_a_forbidden_call_is_refused_by_policy_and_the_models_next_turn_corrects_it(engine: Any, tenant: str) -> None:
    task_id = _submit(engine, tenant, POLICY_WF)
    engine.wait_for_status(task_id, "succeeded")
    history = _history(engine, task_id)
    [reader] = [r.data for r in history if r.type == "node.succeeded"]
    assert reader["output"]["summary"].startswith("mock output")
    refused, read = [r.data for r in history if r.type == "node.tool_returned"]
    assert refused["call_id"] == "t0-c0" and "output" not in refused
    assert refused["refusal"]["rule"] == "tool.path"
    assert refused["error"] == (
        "refused by policy (rule tool.path): workflow policy denies argument 'path': it matches the denied glob "
        "'examples/research-review/mock/**'")
    assert "review.json" not in json.dumps(refused)  # the recorded refusal names the rule and glob, not the path
    assert read["call_id"] == "t1-c0" and read["output"]["path"] == "examples/research-review/README.md"
    # the model's second turn was dispatched with the refusal as the first call's result
    turns = [r.data for r in history if r.type == "node.dispatched" and r.data["kind"] == "agent"]
    assert turns[1]["context"]["conversation"][0]["calls"][0]["error"] == refused["error"]
    # only the allowed call reached the tool-runner
    ran = [r for r in history if r.type == "router.input"
           and r.data["input"]["source"] == "agent-engine/tool-runner"]
    assert len(ran) == 1

    [verdict] = _verdicts(engine, tenant)
    assert (verdict["gate"], verdict["outcome"], verdict["rules"]) == ("tool", "refused", [{"rule": "tool.path",
                                                                                            "count": 1}])
    assert "review.json" not in json.dumps(verdict)  # the verdict names the rule, never an argument value


def test_the_tenants_policy_file_applies_and_a_workflow_policy_cannot_lift_it(own_stack: Any, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("tenants:\n  strict:\n    tools:\n      deny: [workspace_read]\n")
    engine = own_stack(AE_GUARDRAILS_POLICY=str(policy))
    task_id = _submit(engine, "strict", POLICY_WF)  # its workflow policy allows the README
    engine.wait_for_status(task_id, "succeeded")  # the scripted model answers after two refusals
    returned = [r.data for r in _history(engine, task_id) if r.type == "node.tool_returned"]
    assert [(r["refusal"]["rule"], r["error"]) for r in returned] == [
        ("tool.deny", "refused by policy (rule tool.deny): tenant policy denies tool 'read_file'")] * 2
    other = _submit(engine, "relaxed", POLICY_WF)  # a tenant without a section: only its workflow's policy
    engine.wait_for_status(other, "succeeded")
    rules = [r.data.get("refusal", {}).get("rule") for r in _history(engine, other) if r.type == "node.tool_returned"]
    assert rules == ["tool.path", None]


def _notes(engine: Any) -> list[str]:
    path = Path(engine.workspace) / "notes" / "approved.md"
    return path.read_text().splitlines() if path.exists() else []


def test_a_write_that_needs_approval_waits_then_approve_lets_it_run_once(engine: Any, tenant: str) -> None:
    before = _notes(engine).count("approved note")
    task_id = _submit(engine, tenant, APPROVAL_WF)
    waiting = engine.wait_for_status(task_id, "waiting")
    assert {n["node"]: n["status"] for n in waiting["nodes"]}["writer"] == "awaiting_approval"
    assert _notes(engine).count("approved note") == before  # held: nothing written yet
    history = _history(engine, task_id)
    [asked] = [r.data for r in history if r.type == "node.approval_requested"]
    assert asked == {"node": "writer", "kind": "tool", "args": {"path": "notes/approved.md", "text": "approved note"},
                     "call_id": "t0-c0", "tool": "append_note", "rule": "tool.approval"}

    alice = engine.credential(tenant, "alice")
    approved = engine.agentctl("--credential", alice, "approve", task_id, "writer")
    assert approved.returncode == 0, approved.stderr
    engine.wait_for_status(task_id, "succeeded")
    assert _notes(engine).count("approved note") == before + 1  # ran, once

    history = _history(engine, task_id)
    [decided] = [r.data for r in history if r.type == "node.approved"]
    assert decided["decided_by"] == "alice" and decided["call_id"] == "t0-c0"
    [returned] = [r.data for r in history if r.type == "node.tool_returned"]
    assert returned["output"]["path"] == "notes/approved.md" and returned["attempt"] == 2  # 1 was held
    calls = [r.data for r in history if r.type == "node.dispatched" and r.data["kind"] == "tool"]
    assert [c["tool"].get("approved") for c in calls] == [None, True]
    assert [v["outcome"] for v in _verdicts(engine, tenant)] == ["approval_required"]


def test_reject_returns_a_refusal_to_the_model_and_nothing_is_written(engine: Any, tenant: str) -> None:
    before = _notes(engine).count("approved note")
    task_id = _submit(engine, tenant, APPROVAL_WF)
    engine.wait_for_status(task_id, "waiting")
    bob = engine.credential(tenant, "bob")
    rejected = engine.agentctl("--credential", bob, "reject", task_id, "writer", "--reason", "not now")
    assert rejected.returncode == 0, rejected.stderr
    assert "its model sees the refusal" in rejected.stdout
    engine.wait_for_status(task_id, "succeeded")  # the scripted model answers after the refusal
    [returned] = [r.data for r in _history(engine, task_id) if r.type == "node.tool_returned"]
    assert returned["error"] == "refused by a person (rule tool.approval): rejected by bob: not now"
    assert _notes(engine).count("approved note") == before


def test_a_tool_nodes_own_approval_answers_the_gate_too_so_one_approve_runs_it_once(engine: Any, tenant: str,
                                                                                    word: str) -> None:
    """A tool node with `approval: required` whose tool the workflow's policy also holds: the person is asked once,
    before the node runs; one `approve` lets the write through the gate, and it runs once."""
    line = f"asked once {word}"
    notes = Path(engine.workspace) / "notes" / "asked-once.md"
    task_id = _submit(engine, tenant, NODE_APPROVAL_WF, json.dumps({"text": line}))
    waiting = engine.wait_for_status(task_id, "waiting")
    assert {n["node"]: n["status"] for n in waiting["nodes"]}["write"] == "awaiting_approval"
    assert not notes.exists() or line not in notes.read_text()

    alice = engine.credential(tenant, "alice")
    approved = engine.agentctl("--credential", alice, "approve", task_id, "write")
    assert approved.returncode == 0, approved.stderr
    engine.wait_for_status(task_id, "succeeded")
    assert notes.read_text().splitlines().count(line) == 1  # ran, once

    history = _history(engine, task_id)
    [asked] = [r.data for r in history if r.type == "node.approval_requested"]  # one question
    assert asked == {"node": "write", "kind": "tool", "args": {"path": "notes/asked-once.md", "text": line}}
    [decided] = [r.data for r in history if r.type == "node.approved"]
    assert decided["decided_by"] == "alice" and decided["rule"] == "tool.approval"
    calls = [r.data for r in history if r.type == "node.dispatched"]
    assert [(c["attempt"], c["tool"].get("approved")) for c in calls] == [(1, True)]
    assert _verdicts(engine, tenant) == []  # the gate held nothing
    started = next(r.data for r in history if r.type == "task.started")
    assert started["workflow_manifest"]["approval_answers_gate"] is True  # pinned with the task
    replayed = engine.agentctl("task", "replay", task_id)
    assert replayed.returncode == 0 and "identical" in replayed.stdout, replayed.stdout + replayed.stderr


def test_the_server_refuses_both_ways_around_the_gate(engine: Any, tenant: str) -> None:
    ring = keyring(engine)
    cleared = command(ToolCallCleared(
        dispatch_id="d", node="n", kind="tool", attempt=1, deadline="2030-01-01T00:00:00Z",  # type: ignore[arg-type]
        tool=DispatchedTool(name="x", builtin="workspace_append", args={"path": "pwned", "text": "x"}),
        dispatch_event=str(uuid.uuid4())), tenant=tenant, task_id=str(uuid.uuid4()), source="forger")

    async def go() -> None:
        # no one but guardrails may clear a call: not the router, not the tool-runner, not a tenant's operator
        operator = load_credential(engine.credential(tenant, "mallory"))
        for credential in (load_credential(ring.service("router")), load_credential(ring.service("tool-runner")),
                           operator):
            session = Session(engine.nats_url, credential)
            async with session as nc:
                assert await refused_publish(session, nc, subject_for(cleared), cleared.to_bytes()), credential.user
        # the tool-runner cannot read the router's tool dispatches: no consumer on them, by any API
        session = Session(engine.nats_url, load_credential(ring.service("tool-runner")))
        config = json.dumps({"stream_name": "AE_EVENTS", "config": {
            "durable_name": "tool-runner", "name": "tool-runner", "filter_subject": "ae.*.node.dispatched.tool",
            "ack_policy": "explicit"}}).encode()
        async with session as nc:
            for api in ("$JS.API.CONSUMER.CREATE.AE_EVENTS.tool-runner.ae.*.node.dispatched.tool",
                        "$JS.API.CONSUMER.DURABLE.CREATE.AE_EVENTS.tool-runner",
                        "$JS.API.CONSUMER.CREATE.AE_EVENTS.tool-runner",
                        "$JS.API.CONSUMER.CREATE.AE_EVENTS",
                        "$JS.API.CONSUMER.MSG.NEXT.AE_EVENTS.guardrails-tools"):
                with pytest.raises(Exception):  # noqa: B017  nats' timeout: the API request never arrived
                    await nc.request(api, config, timeout=1.5)
                await asyncio.sleep(0.1)
                assert any(api.lower() in e.lower() for e in session.errors), (api, session.errors)

    asyncio.run(go())
    assert not (Path(engine.workspace) / "pwned").exists()
