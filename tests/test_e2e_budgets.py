"""Budgets end to end over real NATS and PostgreSQL (issue 15, item 5): a task with a one-cent budget stops
before the call that would exceed it, and the ledger shows the reservation and the spend.

The mock costs nothing in the real price table, so this stack prices it through AE_PRICE_TABLE with a table
labelled as a test's (router and agent-runner read the same file): the first agent's worst case fits the cent,
its real cost is settled, and the second agent's worst case (its context now carries the first one's 8 KB
answer) does not fit what is left, so it is never dispatched and the task fails saying why.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

PRICED_MOCK = {
    "version": "test-priced-mock",
    "note": "A test's table: prices the mock (free in the real table) so that a budget has something to count.",
    "models": {"mock": {"input": "0.9", "output": "0.9", "cache_read": "0.9", "cache_write": "0.9"}},
}
WORKFLOW = """\
name: budgeted
budget:
  task_usd: "0.01"
  on_exceed: fail
  alert_at: 0.1
nodes:
  - {id: draft, role: START, kind: agent, agent: writer}
  - {id: polish, role: LINEAR, kind: agent, agent: writer}
  - {id: done, role: EXIT, status: succeeded}
edges:
  - {from: draft, to: polish}
  - {from: polish, to: done}
"""
AGENTS = """\
agents:
  writer:
    provider: mock
    model: mock-1
    prompt: Write the text.
    max_tokens: 4000
    max_repairs: 0
"""


DAY_TENANT = "daybudget"
"""The one tenant with a day budget in this stack: 0.008 USD a UTC day (AE_BUDGET_LIMITS)."""
WAKE_TENANT = "daywake"
"""A tenant whose day budget (0.01 USD) holds one reservation of the writer (about 0.0074) at a time."""
DAILY = """\
name: daily
nodes:
  - {id: draft, role: START, kind: agent, agent: writer}
  - {id: done, role: EXIT, status: succeeded}
edges:
  - {from: draft, to: done}
"""


@pytest.fixture(scope="module")
def priced(own_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    table = tmp_path_factory.mktemp("prices") / "priced-mock.json"
    table.write_text(json.dumps(PRICED_MOCK))
    return own_stack(AE_PRICE_TABLE=str(table), AE_BUDGET_LIMITS=f"{DAY_TENANT}=0.008,{WAKE_TENANT}=0.01")


def workflow_dir(root: Path, workflow: str = WORKFLOW) -> Path:
    wf = root / workflow.split("\n", 1)[0].removeprefix("name: ")
    (wf / "mock").mkdir(parents=True)
    (wf / "workflow.yaml").write_text(workflow)
    (wf / "agents.yaml").write_text(AGENTS)
    (wf / "mock" / "draft.json").write_text(json.dumps([{"text": "x" * 8000}]))  # 2000 tokens, under max_tokens
    return wf


def ledger_budget(engine: Any, task_id: str) -> dict[str, Any]:
    """`agentctl budget --task`, once telemetry has folded the task's budget records."""
    shown: dict[str, Any] = {}
    for _ in range(100):
        answer = engine.agentctl("budget", "--task", task_id, "--json")
        assert answer.returncode == 0, answer.stderr
        shown = json.loads(answer.stdout)["budget"] or {}
        if shown.get("exceeded") == 1:
            return shown
        time.sleep(0.2)
    raise AssertionError(f"the ledger never showed the task's budget records: {shown}")


def test_a_one_cent_budget_stops_before_the_call_that_would_exceed_it(priced: Any, tenant: str,
                                                                      tmp_path: Path) -> None:
    wf = workflow_dir(tmp_path)
    pushed = priced.agentctl("workflow", "push", str(wf), "--tenant", tenant)
    assert pushed.returncode == 0, pushed.stderr
    submitted = priced.agentctl("submit", "budgeted", "--tenant", tenant, "--input", '{"brief": "hi"}')
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip().splitlines()[-1]
    shown = priced.wait_for_status(task_id, "failed")
    assert "over budget" in shown["reason"] and "node 'polish' needs up to $" in shown["reason"]

    history = json.loads(priced.agentctl("task", "history", task_id, "--json").stdout)
    kinds = [r["type"] for r in history]
    [opened] = [r["data"] for r in history if r["type"] == "budget.opened"]
    assert opened["limit_usd"] == "0.01" and opened["prices"]["version"] == "test-priced-mock"
    [reserved] = [r["data"] for r in history if r["type"] == "budget.reserved"]
    [settled] = [r["data"] for r in history if r["type"] == "budget.settled"]
    [exceeded] = [r["data"] for r in history if r["type"] == "budget.exceeded"]
    dispatched = [r["data"] for r in history if r["type"] == "node.dispatched"]
    assert [d["node"] for d in dispatched] == ["draft"]  # polish was never dispatched: no call was made for it
    assert reserved["node"] == "draft" and dispatched[0]["budget_usd"] == reserved["amount_usd"]
    assert settled["dispatch_id"] == reserved["dispatch_id"] and settled["outcome"] == "result"
    spent, limit = Decimal(settled["cost_usd"]), Decimal("0.01")
    assert Decimal(0) < spent <= Decimal(reserved["amount_usd"]) <= limit
    assert exceeded["node"] == "polish" and exceeded["then"] == "fail"
    assert Decimal(exceeded["needed_usd"]) > Decimal(exceeded["available_usd"]) == limit - spent
    assert kinds.index("budget.settled") < kinds.index("budget.exceeded") < kinds.index("task.failed")
    assert "budget.alert" in kinds  # spent is over a tenth of the cent

    called = next(r["data"] for r in history if r["type"] == "router.input"
              and r["data"]["input"]["type"] == "node.completed")["input"]["data"]["llm_calls"]
    assert [c["cost_usd"] for c in called] == [settled["cost_usd"]]

    budget = ledger_budget(priced, task_id)
    assert (budget["limit_usd"], budget["reserved_usd"], budget["spent_usd"]) == ("0.01", "0", settled["cost_usd"])
    assert (budget["reservations"], budget["settlements"], budget["exceeded"], budget["alerts"]) == (1, 1, 1, 1)
    assert [row["type"] for row in budget["log"]][:3] == ["budget.opened", "budget.reserved", "budget.settled"]
    assert budget["log"][1]["amount_usd"] == reserved["amount_usd"]
    cost = json.loads(priced.agentctl("cost", "--task", task_id, "--json").stdout)
    assert Decimal(cost["cost_usd"]) == spent and cost["call_log"][0]["price_table"] == "test-priced-mock"
    printed = priced.agentctl("budget", "--task", task_id).stdout
    assert "limit 0.01 USD, reserved 0, spent " + settled["cost_usd"] in printed
    days = json.loads(priced.agentctl("budget", "--tenant", tenant, "--json").stdout)["budget_days"]
    assert [line["spent_usd"] for line in days.values()] == [settled["cost_usd"]]

    replayed = priced.agentctl("task", "replay", task_id)
    assert replayed.returncode == 0 and "identical" in replayed.stdout, replayed.stdout


def test_a_tenants_day_budget_stops_the_task_whose_first_call_would_exceed_it(priced: Any, tmp_path: Path) -> None:
    """AE_BUDGET_LIMITS gives the tenant 0.008 USD a day: the first task's worst case fits and it runs; what it
    spent leaves less than the next task's worst case, so the next one fails before any call, naming the day."""
    wf = workflow_dir(tmp_path, DAILY)
    assert priced.agentctl("workflow", "push", str(wf), "--tenant", DAY_TENANT).returncode == 0
    first = priced.agentctl("submit", "daily", "--tenant", DAY_TENANT, "--input", '{"brief": "one"}')
    first_id = first.stdout.strip().splitlines()[-1]
    priced.wait_for_status(first_id, "succeeded")
    second = priced.agentctl("submit", "daily", "--tenant", DAY_TENANT, "--input", '{"brief": "two"}')
    second_id = second.stdout.strip().splitlines()[-1]
    shown = priced.wait_for_status(second_id, "failed")
    assert "over budget" in shown["reason"] and f"tenant-day budget of $0.008 of tenant '{DAY_TENANT}'" in shown[
        "reason"]

    ran = json.loads(priced.agentctl("task", "history", first_id, "--json").stdout)
    [reserved] = [r["data"] for r in ran if r["type"] == "budget.reserved"]
    [settled] = [r["data"] for r in ran if r["type"] == "budget.settled"]
    assert reserved["day"] == settled["day"] and Decimal(settled["cost_usd"]) > 0
    stopped = json.loads(priced.agentctl("task", "history", second_id, "--json").stdout)
    [exceeded] = [r["data"] for r in stopped if r["type"] == "budget.exceeded"]
    assert exceeded["scope"] == "tenant-day" and exceeded["limit_usd"] == "0.008"
    assert Decimal(exceeded["available_usd"]) == Decimal("0.008") - Decimal(settled["cost_usd"])
    assert not any(r["type"] == "node.dispatched" for r in stopped)

    day_log = priced.agentctl("task", "history", f"tenant:{DAY_TENANT}/budget/{reserved['day']}", "--json")
    assert day_log.returncode == 0, day_log.stderr
    logged = [(r["type"], r["data"]["scope"], r["data"]["spent_usd"]) for r in json.loads(day_log.stdout)]
    assert logged == [("budget.reserved", "tenant-day", "0"), ("budget.settled", "tenant-day", settled["cost_usd"])]
    days: dict[str, Any] = {}
    for _ in range(100):
        days = json.loads(priced.agentctl("budget", "--tenant", DAY_TENANT, "--json").stdout)["budget_days"]
        if days.get(reserved["day"], {}).get("exceeded") == 1:
            break
        time.sleep(0.2)
    assert (days[reserved["day"]]["spent_usd"], days[reserved["day"]]["reserved_usd"]) == (settled["cost_usd"], "0")
    assert days[reserved["day"]]["exceeded"] == 1  # the second task's, over the tenant's day
    for task_id in (first_id, second_id):
        replayed = priced.agentctl("task", "replay", task_id)
        assert replayed.returncode == 0 and "identical" in replayed.stdout, replayed.stdout


FANNED = """\
name: fanned
budget:
  task_usd: "0.5"
  on_exceed: fail
nodes:
  - {id: fan, role: START, kind: agent, agent: writer}
  - {id: split, role: SPLIT, kind: agent, agent: writer, split: {items: items, merge: gather}}
  - {id: work, role: LINEAR, kind: agent, agent: writer}
  - {id: gather, role: MERGE, merge: {policy: all, combine: list}}
  - {id: done, role: EXIT, status: succeeded}
edges:
  - {from: fan, to: split}
  - {from: split, to: work}
  - {from: work, to: gather}
  - {from: gather, to: done}
"""


def test_a_splits_subtasks_run_on_shares_of_the_task_budget_and_their_spend_counts_in_it(
        priced: Any, tenant: str, tmp_path: Path) -> None:
    """A SPLIT of three items in a task with a 0.5 USD budget: each subtask starts with a third of what was left
    as its own budget, reserved in the parent; each subtask's end settles its share with what its call cost, so
    the parent's ledger counts every call made for it, and the tenant's day counts each call once."""
    wf = workflow_dir(tmp_path, FANNED)
    (wf / "mock" / "draft.json").unlink()
    (wf / "mock" / "split.json").write_text(json.dumps([{"items": ["a", "b", "c"]}]))
    (wf / "mock" / "work.json").write_text(json.dumps([{"text": "y" * 400}]))
    (wf / "mock" / "fan.json").write_text(json.dumps([{"text": "go"}]))
    assert priced.agentctl("workflow", "push", str(wf), "--tenant", tenant).returncode == 0
    submitted = priced.agentctl("submit", "fanned", "--tenant", tenant, "--input", '{"brief": "split"}')
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip().splitlines()[-1]
    priced.wait_for_status(task_id, "succeeded")

    history = json.loads(priced.agentctl("task", "history", task_id, "--json").stdout)
    [fanned_out] = [r["data"] for r in history if r["type"] == "node.fanned_out"]
    shares = [r["data"] for r in history if r["type"] == "budget.reserved" and r["data"].get("subtask")]
    settled = {r["data"]["dispatch_id"]: r["data"] for r in history
               if r["type"] == "budget.settled" and r["data"].get("subtask")}
    assert [s["dispatch_id"] for s in shares] == fanned_out["subtasks"]
    parent_spent_before = Decimal(shares[0]["spent_usd"])  # fan and split, settled before the fan-out
    share = (Decimal("0.5") - parent_spent_before) / 3
    assert Decimal(shares[0]["amount_usd"]) == share.quantize(Decimal("0.000001"), rounding="ROUND_DOWN")

    sub_costs = Decimal(0)
    for subtask_id in fanned_out["subtasks"]:
        sub = json.loads(priced.agentctl("task", "history", subtask_id, "--json").stdout)
        [opened] = [r["data"] for r in sub if r["type"] == "budget.opened"]
        assert opened["limit_usd"] == shares[0]["amount_usd"] and opened["prices"]["version"] == "test-priced-mock"
        [own] = [r["data"] for r in sub if r["type"] == "budget.settled"]
        assert Decimal(own["cost_usd"]) > 0
        assert settled[subtask_id]["cost_usd"] == own["cost_usd"] and settled[subtask_id]["outcome"] == "result"
        sub_costs += Decimal(own["cost_usd"])
    [last] = [r["data"] for r in history if r["type"] == "budget.settled"][-1:]
    assert Decimal(last["spent_usd"]) == parent_spent_before + sub_costs
    assert Decimal(last["spent_usd"]) <= Decimal("0.5") and last["reserved_usd"] == "0"

    all_calls = parent_spent_before + sub_costs  # every call made for the task, once
    day = history[0]["time"][:10]
    for _ in range(100):
        days = json.loads(priced.agentctl("budget", "--tenant", tenant, "--json").stdout).get("budget_days") or {}
        if Decimal(days.get(day, {}).get("spent_usd", "0")) >= all_calls:
            break
        time.sleep(0.2)
    assert Decimal(days[day]["spent_usd"]) == all_calls  # the shares' settlements are not counted again
    replayed = priced.agentctl("task", "replay", task_id)
    assert replayed.returncode == 0 and "identical" in replayed.stdout, replayed.stdout


JUDGED = """\
name: judged
budget:
  task_usd: "0.5"
policy:
  output:
    judge: {provider: mock, model: mock-1, below: 0.5, action: fail,
            mock_responses: [{grounded: true, score: 0.9, reason: "matches the brief"}]}
nodes:
  - {id: draft, role: START, kind: agent, agent: writer}
  - {id: done, role: EXIT, status: succeeded}
edges:
  - {from: draft, to: done}
"""


def test_the_grounding_judges_call_is_paid_from_the_nodes_reservation(priced: Any, tenant: str,
                                                                       tmp_path: Path) -> None:
    """The output gate's judge may spend only what the node's own call left of its reservation; its call is
    listed with the node's, so the task's budget counts both, equal to the ledger's cost of the task."""
    wf = workflow_dir(tmp_path, JUDGED)
    pushed = priced.agentctl("workflow", "push", str(wf), "--tenant", tenant)
    assert pushed.returncode == 0, pushed.stderr
    submitted = priced.agentctl("submit", "judged", "--tenant", tenant, "--input", '{"brief": "hi"}')
    task_id = submitted.stdout.strip().splitlines()[-1]
    priced.wait_for_status(task_id, "succeeded")

    history = json.loads(priced.agentctl("task", "history", task_id, "--json").stdout)
    [reserved] = [r["data"] for r in history if r["type"] == "budget.reserved"]
    [settled] = [r["data"] for r in history if r["type"] == "budget.settled"]
    checked = next(r["data"]["input"]["data"] for r in history if r["type"] == "router.input"
                   and r["data"]["input"]["type"] == "node.output_checked")
    node_call, judge_call = checked["llm_calls"]
    assert Decimal(node_call["cost_usd"]) > 0 and Decimal(judge_call["cost_usd"]) > 0
    assert Decimal(settled["cost_usd"]) == Decimal(node_call["cost_usd"]) + Decimal(judge_call["cost_usd"])
    assert Decimal(settled["cost_usd"]) <= Decimal(reserved["amount_usd"])
    tail = priced.agentctl("tail", "--task", task_id, "--type", "llm.called", "--no-follow", "--json")
    called = [json.loads(line)["data"] for line in tail.stdout.splitlines() if line.strip()]
    assert sorted(c["node"] for c in called) == ["draft", "guardrails.judge"]
    for _ in range(100):
        cost = json.loads(priced.agentctl("cost", "--task", task_id, "--json").stdout)
        if Decimal(cost.get("cost_usd") or 0) >= Decimal(settled["cost_usd"]):
            break
        time.sleep(0.2)
    assert Decimal(cost["cost_usd"]) == Decimal(settled["cost_usd"])  # the ledger and the budget agree


WAITING = """\
name: waiting
budget:
  task_usd: "1"
  on_exceed: wait
nodes:
  - {id: draft, role: START, kind: agent, agent: writer}
  - {id: done, role: EXIT, status: succeeded}
edges:
  - {from: draft, to: done}
"""


def history(engine: Any, task_id: str) -> list[dict[str, Any]]:
    shown = engine.agentctl("task", "history", task_id, "--json")
    assert shown.returncode == 0, shown.stderr
    return list(json.loads(shown.stdout))


def wait_for_record(engine: Any, task_id: str, type_: str) -> list[dict[str, Any]]:
    """The task's history once it holds a record of `type_`."""
    for _ in range(150):
        records = history(engine, task_id)
        if any(r["type"] == type_ for r in records):
            return records
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} never recorded {type_}")


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_a_task_waiting_for_the_tenants_day_starts_once_another_task_settles_below_its_reservation(
        priced: Any, tmp_path: Path) -> None:
    """Two tasks of a tenant whose day budget holds one reservation: the second waits (on_exceed: wait); when the
    first's slow call settles far below what it reserved, the room it frees wakes the second at once, long before
    the 60 s poll would have tried it again."""
    wf = workflow_dir(tmp_path, WAITING)
    (wf / "mock" / "draft.json").write_text(json.dumps([{"text": "x" * 400, "$mock_delay_s": 10}]))
    assert priced.agentctl("workflow", "push", str(wf), "--tenant", WAKE_TENANT).returncode == 0
    first = priced.agentctl("submit", "waiting", "--tenant", WAKE_TENANT, "--input", '{"brief": "one"}')
    first_id = first.stdout.strip().splitlines()[-1]
    wait_for_record(priced, first_id, "node.dispatched")
    second = priced.agentctl("submit", "waiting", "--tenant", WAKE_TENANT, "--input", '{"brief": "two"}')
    second_id = second.stdout.strip().splitlines()[-1]
    waited = wait_for_record(priced, second_id, "node.retry_scheduled")
    [exceeded] = [r for r in waited if r["type"] == "budget.exceeded"]
    assert (exceeded["data"]["scope"], exceeded["data"]["then"]) == ("tenant-day", "wait")
    priced.wait_for_status(first_id, "succeeded")
    priced.wait_for_status(second_id, "succeeded", tries=300)

    [settled] = [r for r in history(priced, first_id) if r["type"] == "budget.settled"]
    # the second waited while the first's call was still running (compared by the records' times, not by when this
    # test got to look: on a loaded machine the first may have settled by then)
    assert at(exceeded["time"]) < at(settled["time"]), "the first settled before the second was decided"
    assert Decimal(settled["data"]["cost_usd"]) < Decimal(settled["data"]["released_usd"])
    records = history(priced, second_id)
    [scheduled] = [r["data"] for r in records if r["type"] == "node.retry_scheduled"]
    [woken] = [r for r in records if r["type"] == "router.input" and r["data"]["input"]["type"] == "node.retry_due"]
    [dispatched] = [r for r in records if r["type"] == "node.dispatched"]
    assert woken["data"]["input"]["data"]["at"] == scheduled["at"]  # taken as the retry it had scheduled
    assert dispatched["data"]["reason"] == "room in the tenant-day budget"
    # woken by the first's settlement, and dispatched well before the poll at `at` would have fired
    assert at(settled["time"]) <= at(woken["time"]) <= at(dispatched["time"])
    assert at(scheduled["at"]) - at(dispatched["time"]) > timedelta(seconds=30)
    for task_id in (first_id, second_id):
        replayed = priced.agentctl("task", "replay", task_id)
        assert replayed.returncode == 0 and "identical" in replayed.stdout, replayed.stdout


CAPPED = """\
name: capped
budget:
  task_usd: "0.01"
nodes:
  - {id: draft, role: START, kind: agent, agent: terse, max_attempts: 1}
  - {id: done, role: EXIT, status: succeeded}
edges:
  - {from: draft, to: done}
"""
TERSE = """\
agents:
  terse:
    provider: mock
    model: mock-1
    prompt: Write the text.
    max_tokens: 1000
    max_repairs: 0
"""


def test_a_priced_mock_whose_script_runs_past_max_tokens_spends_no_more_than_it_reserved(
        priced: Any, tenant: str, tmp_path: Path) -> None:
    """The script says 8000 tokens, the agent allows 1000: the mock stops at 1000, as a real provider would, so
    the call costs less than its reservation (the cut reply is no JSON, so the node fails, within its budget)."""
    wf = workflow_dir(tmp_path, CAPPED)
    (wf / "agents.yaml").write_text(TERSE)
    (wf / "mock" / "draft.json").write_text(json.dumps([{"text": "x" * 32000}]))
    assert priced.agentctl("workflow", "push", str(wf), "--tenant", tenant).returncode == 0
    submitted = priced.agentctl("submit", "capped", "--tenant", tenant, "--input", '{"brief": "long"}')
    task_id = submitted.stdout.strip().splitlines()[-1]
    priced.wait_for_status(task_id, "failed")

    records = history(priced, task_id)
    [reserved] = [r["data"] for r in records if r["type"] == "budget.reserved"]
    [settled] = [r["data"] for r in records if r["type"] == "budget.settled"]
    calls = next(r["data"]["input"]["data"] for r in records if r["type"] == "router.input"
                 and r["data"]["input"]["type"] == "node.errored")["llm_calls"]
    assert [c["usage"]["output_tokens"] for c in calls] == [1000] and calls[0]["outcome"] == "invalid"
    assert Decimal(0) < Decimal(settled["cost_usd"]) <= Decimal(reserved["amount_usd"]) <= Decimal("0.01")
