"""Finding tasks, as a user does it through agentctl against the running services: `task list` with its filters
and search (a tenant's credential sees only its tenant), and `tail` with --task, --tenant, --type, --since and
--no-follow (another tenant's events never show)."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def run_tasks(engine: Any, tenant: str, other: str, word: str) -> dict[str, str]:
    """Two tasks of `tenant` (one whose input holds `word`), one it asks for a workflow it never pushed (rejected),
    and one of `other` whose input holds `word` too; each run to its end, in this order."""
    async def go() -> dict[str, str]:
        nc = await engine.connect()
        try:
            ids: dict[str, str] = {}
            workflow = await engine.push(nc, tenant)
            await engine.push(nc, other)
            for name, owner, flow, text in (("first", tenant, workflow, f"{word} apples"),
                                            ("second", tenant, workflow, "pears"),
                                            ("rejected", tenant, "never-pushed", "plums"),
                                            ("other", other, workflow, f"{word} apples")):
                ids[name] = await engine.submit(nc, owner, flow, {"brief": text})
                ended = await engine.wait_terminal(nc, [ids[name]])
                assert ended[ids[name]] == ("rejected" if name == "rejected" else "succeeded"), (name, ended)
            return ids
        finally:
            await nc.close()

    return asyncio.run(go())


def listed(engine: Any, *args: str) -> list[dict[str, Any]]:
    done = engine.agentctl("task", "list", *args, "--json")
    assert done.returncode == 0, done.stderr
    tasks: list[dict[str, Any]] = json.loads(done.stdout)["tasks"]
    return tasks


def wait_listed(engine: Any, tenant: str, count: int) -> list[dict[str, Any]]:
    """telemetry folds the stream a moment after the router: wait until the tenant's tasks are all listed, ended."""
    tasks: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tasks = listed(engine, "--tenant", tenant)
        if len(tasks) == count and all(t["finished_at"] for t in tasks):
            return tasks
        time.sleep(0.3)
    raise AssertionError(f"telemetry lists {tasks} for {tenant}, not {count} ended tasks")


def test_task_list_filters_search_and_a_tenants_own_view(engine: Any, tenant: str) -> None:
    other, word = f"{tenant}o", f"w{uuid.uuid4().hex[:8]}"
    ids = run_tasks(engine, tenant, other, word)
    mine = wait_listed(engine, tenant, 3)
    wait_listed(engine, other, 1)

    # newest first, with what a user looks for
    assert [t["task_id"] for t in mine] == [ids["rejected"], ids["second"], ids["first"]]
    first = mine[2]
    assert (first["tenant"], first["workflow"], first["status"], first["error"]) == (
        tenant, "research-review", "succeeded", "")
    assert first["revision"] and first["started_at"] <= first["finished_at"]
    ledger = json.loads(engine.agentctl("cost", "--task", ids["first"], "--tenant", tenant, "--json").stdout)
    assert first["cost_usd"] == ledger["cost_usd"]  # the same figure as the cost ledger's
    rejected = mine[0]
    assert rejected["status"] == "rejected" and "unknown workflow 'never-pushed'" in rejected["error"]

    # filters
    assert [t["task_id"] for t in listed(engine, "--tenant", tenant, "--status", "rejected")] == [ids["rejected"]]
    assert [t["task_id"] for t in listed(engine, "--tenant", tenant, "--workflow", "research-review")] == [
        ids["second"], ids["first"]]
    assert [t["task_id"] for t in listed(engine, "--tenant", tenant, "--limit", "1")] == [ids["rejected"]]
    assert len(listed(engine, "--tenant", tenant, "--since", "1h")) == 3
    # search: the input's text (any tenant for the platform), a task id prefix, the error
    assert {t["task_id"] for t in listed(engine, "--search", word.upper())} == {ids["first"], ids["other"]}
    assert [t["task_id"] for t in listed(engine, "--search", word, "--tenant", tenant)] == [ids["first"]]
    assert [t["task_id"] for t in listed(engine, "--search", ids["second"][:13])] == [ids["second"]]
    assert [t["task_id"] for t in listed(engine, "--search", "never-pushed", "--tenant", tenant)] == [ids["rejected"]]

    # the table
    table = engine.agentctl("task", "list", "--tenant", tenant)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["TASK", "TENANT", "WORKFLOW", "STATUS", "STARTED", "(UTC)", "DURATION", "COST"]
    assert [line.split()[0] for line in lines[1:]] == [ids["rejected"], ids["second"], ids["first"]]
    assert lines[3].split()[3] == "succeeded" and lines[3].split()[-1].startswith("$")

    # a tenant's credential sees only its tenant, and is told so when it names another
    viewer = engine.credential(other, "viewer", "viewer")
    seen = engine.agentctl("--credential", viewer, "task", "list", "--search", word, "--json")
    assert seen.returncode == 0, seen.stderr
    assert [t["task_id"] for t in json.loads(seen.stdout)["tasks"]] == [ids["other"]]
    refused = engine.agentctl("--credential", viewer, "task", "list", "--tenant", tenant)
    assert refused.returncode == 1 and f"sees only tenant '{other}', not '{tenant}'" in refused.stderr

    # bad input is named
    bad = engine.agentctl("task", "list", "--since", "yesterday")
    assert bad.returncode == 1 and "--since 'yesterday'" in bad.stderr
    bad = engine.agentctl("task", "list", "--limit", "501")
    assert bad.returncode == 1 and "'limit' must be a whole number from 1 to 500" in bad.stderr


def tail(engine: Any, *args: str) -> list[dict[str, Any]]:
    done = engine.agentctl("tail", *args, "--no-follow", "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_tail_filters_show_what_was_asked_and_never_another_tenants_events(engine: Any, tenant: str) -> None:
    other, word = f"{tenant}o", f"w{uuid.uuid4().hex[:8]}"
    ids = run_tasks(engine, tenant, other, word)

    # --task: that task's stored events, from its acceptance to its end; --no-follow returned at the end
    events = tail(engine, "--task", ids["first"])
    assert {e["taskid"] for e in events} == {ids["first"]}
    types = [e["type"] for e in events]
    assert "task.accepted" in types and types[-1] == "task.succeeded" and "llm.called" in types

    # --tenant: its three tasks' events, none of the other tenant's
    events = tail(engine, "--tenant", tenant)
    assert {e["tenant"] for e in events} == {tenant}
    assert {ids["first"], ids["second"], ids["rejected"]} <= {e["taskid"] for e in events}
    assert ids["other"] not in {e["taskid"] for e in events}

    # --type glob
    events = tail(engine, "--tenant", tenant, "--type", "node.*")
    assert events and all(e["type"].startswith("node.") for e in events)
    assert {"node.dispatched", "node.completed"} <= {e["type"] for e in events}
    assert tail(engine, "--tenant", tenant, "--type", "task.rejected")[0]["taskid"] == ids["rejected"]

    # a tenant's credential: its own events only, and refused another tenant's
    viewer = engine.credential(other, "viewer", "viewer")
    own = engine.agentctl("--credential", viewer, "tail", "--all", "--no-follow", "--json")
    assert own.returncode == 0, own.stderr
    assert {json.loads(line)["tenant"] for line in own.stdout.splitlines()} == {other}
    refused = engine.agentctl("--credential", viewer, "tail", "--tenant", tenant, "--no-follow")
    assert refused.returncode == 1 and f"tenant '{other}' only, not '{tenant}'" in refused.stderr


def test_tail_since_starts_that_long_ago(engine: Any, tenant: str) -> None:
    other, word = f"{tenant}o", f"w{uuid.uuid4().hex[:8]}"
    ids = run_tasks(engine, tenant, other, word)
    assert {e["taskid"] for e in tail(engine, "--tenant", tenant, "--since", "1h")} >= set(
        [ids["first"], ids["second"], ids["rejected"]])

    # wait until the tenant's last event is more than 9 s old (a condition, polled), then run one more task:
    # --since N s, with N reaching back to that moment less 7 s, shows none of the earlier tasks however long
    # agentctl takes to start (its "now" is only later), and the new task's events unless it takes over 7 s
    while tail(engine, "--tenant", tenant, "--since", "9s"):
        time.sleep(0.5)
    quiet = time.time()

    async def one_more() -> str:
        nc = await engine.connect()
        try:
            task_id: str = await engine.submit(nc, tenant, "research-review", {"brief": "late"})
            assert (await engine.wait_terminal(nc, [task_id]))[task_id] == "succeeded"
            return task_id
        finally:
            await nc.close()

    late = asyncio.run(one_more())
    back = math.ceil(time.time() - quiet) + 7
    seen = {e["taskid"] for e in tail(engine, "--tenant", tenant, "--since", f"{back}s")}
    assert late in seen
    assert not seen & {ids["first"], ids["second"], ids["rejected"]}
