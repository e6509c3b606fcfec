"""Other systems on the real stack: the Python client (agent_engine.client) submits with an idempotency key,
gets the first task's id for a repeat (also after the router was killed and restarted), awaits the outcome,
follows the events, shows and reads the history; and a Node.js system, with the `nats` npm package, submits a
task and follows it to success."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent_engine.client import Client, RequestRejected, connect
from agent_engine.contracts.envelope import command
from agent_engine.contracts.events import TaskRequested
from agent_engine.contracts.subjects import subject_for
from agent_engine.runtime.keyring import KEYRING_ENV, Keyring

pytestmark = pytest.mark.e2e
WORKFLOW = "research-review"
BRIEF = {"brief": "Compare event-sourced workflow engines in two paragraphs."}


def push(engine: Any, tenant: str) -> None:
    pushed = engine.agentctl("workflow", "push", "examples/research-review", "--tenant", tenant)
    assert pushed.returncode == 0, pushed.stderr


async def client(engine: Any, tenant: str) -> Client:
    """The client as another system runs it: with a submitter credential of its tenant, issued once."""
    path = Keyring(Path(engine.env[KEYRING_ENV])).tenant_credential(tenant, "billing")
    if not path.exists():
        engine.credential(tenant, "billing", "submitter")
    return await connect(engine.nats_url, path, source="billing-system")


def test_a_key_used_twice_names_one_task_even_after_the_router_restarts(engine: Any, tenant: str) -> None:
    push(engine, tenant)

    async def before_restart() -> tuple[Any, Any]:
        async with await client(engine, tenant) as ae:
            first = await ae.submit(WORKFLOW, BRIEF, idempotency_key="order-42", timeout=60)
            again = await ae.submit(WORKFLOW, BRIEF, idempotency_key="order-42", timeout=60)
            return first, again

    first, again = asyncio.run(before_restart())
    assert first.status == "started" and not first.deduplicated
    assert again.deduplicated and again.task_id == first.task_id and again.request_task_id != first.task_id
    assert f"names task {first.task_id}" in again.reason

    engine.kill("router")  # kill -9: only what PostgreSQL holds survives
    engine.up()

    async def after_restart() -> None:
        async with await client(engine, tenant) as ae:
            third = await ae.submit(WORKFLOW, BRIEF, idempotency_key="order-42", timeout=90)
            assert third.deduplicated and third.task_id == first.task_id
            outcome = await ae.outcome(first.task_id, timeout=120)
            assert outcome.succeeded and outcome.exit_node == "approved", outcome
            # the repeat's own id leads to the first task's outcome, and says what it is
            assert (await ae.outcome(again.request_task_id, timeout=30)).task_id == first.task_id
            shown = await ae.show(again.request_task_id)
            assert (shown["status"], shown["duplicate_of"]) == ("deduplicated", first.task_id)
            started = [r for r in await ae.history(first.task_id) if r.type == "task.started"]
            assert len(started) == 1  # one task ran, once
            other = await ae.submit(WORKFLOW, BRIEF, idempotency_key="order-43", timeout=60)
            assert other.status == "started" and other.task_id != first.task_id

    asyncio.run(after_restart())
    # agentctl answers a repeat the same way: the first task's id
    again_cli = engine.agentctl("submit", WORKFLOW, "--tenant", tenant, "--idempotency-key", "order-42",
                                "--input", json.dumps(BRIEF))
    assert again_cli.returncode == 0 and again_cli.stdout.strip() == first.task_id, again_cli.stderr


def test_following_a_task_from_its_submit_sees_every_step_once_and_ends_with_it(engine: Any, tenant: str) -> None:
    push(engine, tenant)

    async def go() -> tuple[list[Any], list[Any], dict[str, Any]]:
        async with await client(engine, tenant) as ae:
            submitted = await ae.submit(WORKFLOW, BRIEF, timeout=60)
            async with ae.follow(submitted.task_id, idle_timeout=60) as events:
                live = [event async for event in events]
            async with ae.follow(submitted.task_id) as events:  # after the end: the stored history, then done
                later = [event async for event in events]
            for _ in range(50):  # telemetry folds the LLM calls as they stream past
                if (await ae.ledger(submitted.task_id)).get("calls") == 6:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the ledger never counted the task's 6 calls: {await ae.ledger(submitted.task_id)}")
            return live, later, await ae.show(submitted.task_id)

    live, later, shown = asyncio.run(go())
    types = [e.type for e in live]
    assert types[0] in ("task.accepted", "task.started") and types[-1] == "task.succeeded"
    assert len({e.id for e in live}) == len(live)  # each event once
    succeeded = [e.data["node"] for e in live if e.type == "node.succeeded"]
    assert succeeded == ["gather_context", "interpretation", "decomposition", "planning", "execution", "review"]
    assert [e.type for e in later][-1] == "task.succeeded" and "node.succeeded" in {e.type for e in later}
    assert {e.id for e in later if e.type.startswith("task.")} <= {e.id for e in live} | {
        e.id for e in later if e.type == "task.accepted"}
    assert shown["status"] == "succeeded" and [n["status"] for n in shown["nodes"]].count("succeeded") == 6


def test_a_request_the_engine_will_not_run_is_raised_with_the_reason(engine: Any, tenant: str) -> None:
    async def go() -> None:
        async with await client(engine, tenant) as ae:
            with pytest.raises(RequestRejected) as rejected:
                await ae.submit("never-pushed", BRIEF, idempotency_key="k", timeout=60)
            assert rejected.value.stage == "router" and "unknown workflow 'never-pushed'" in rejected.value.reason
            with pytest.raises(Exception, match=f"no task 'nope' in the router's store for tenant '{tenant}'"):
                await ae.show("nope")

    asyncio.run(go())


def test_a_nodejs_system_submits_a_task_and_follows_it_to_success(engine: Any, tenant: str,
                                                                 node_example: Path) -> None:
    push(engine, tenant)
    creds = engine.credential(tenant, "node-billing", "submitter")  # the file `agentctl tenant add` hands over
    ran = subprocess.run(["node", "submit-and-follow.mjs", "--server", engine.nats_url, "--creds", creds,
                          "--workflow", WORKFLOW, "--input", json.dumps(BRIEF),
                          "--timeout", "120"], cwd=node_example, capture_output=True, text=True, timeout=180)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = [json.loads(line) for line in ran.stdout.splitlines()]
    task_id = lines[0]["task_id"]
    request = command(TaskRequested(workflow=WORKFLOW, requested_by="node-billing"), tenant=tenant, task_id=task_id,
                      source="node-example")
    assert lines[0]["published"] == subject_for(request)  # the subject map, as the contracts define it
    types = [line["type"] for line in lines[1:]]
    assert types[-1] == "task.succeeded" and "task.started" in types
    assert [line["node"] for line in lines[1:] if line["type"] == "node.succeeded"][-1] == "review"

    async def check() -> None:
        async with await client(engine, tenant) as ae:
            shown = await ae.show(task_id)
            assert shown["status"] == "succeeded"
            accepted = next(r for r in await ae.history(task_id) if r.type == "router.input")
            assert accepted.data["input"]["data"]["requested_by"] == "node-billing"

    asyncio.run(check())
