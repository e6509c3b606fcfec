"""The task index: a task's row follows its lifecycle events (in any order), and `tasks.list` filters, searches
and pages newest first; a bad request is refused naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.telemetry.ledger import Ledger
from agent_engine.telemetry.taskindex import TaskFilter, fold, is_lifecycle, read_filter
from agent_engine.testkit.events import llm_called

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def event(event_type: str, task: str = "t1", tenant: str = "acme", at: int = 0, **data: Any) -> Envelope:
    return Envelope(id=f"{task}-{event_type}-{at}", source="x", type=event_type, time=T0 + timedelta(seconds=at),
                    tenant=tenant, task_id=task, correlation_id=task, data=data)


def lifecycle(task: str, tenant: str = "acme", at: int = 0, end: str = "task.succeeded",
              text: str = "hello", workflow: str = "triage", **end_data: Any) -> list[Envelope]:
    return [event("task.requested", task, tenant, at, workflow=workflow, input={"raw": "never indexed"}),
            event("task.accepted", task, tenant, at + 1, workflow=workflow, input={"question": text}),
            event("task.started", task, tenant, at + 2, workflow=workflow, revision="r1"),
            event(end, task, tenant, at + 10, **end_data)]


def test_a_row_follows_the_lifecycle_and_never_goes_back() -> None:
    events = lifecycle("t1", end="task.failed", status="failed", reason="node 'draft' errored: boom")
    row = None
    for e in [events[0], events[3], events[2], events[1]]:  # the accepted and started arrive late
        row = fold(row, e)
    assert row is not None
    assert (row.status, row.workflow, row.revision, row.error) == ("failed", "triage", "r1",
                                                                     "node 'draft' errored: boom")
    assert (row.started_at, row.finished_at) == (T0 + timedelta(seconds=1), T0 + timedelta(seconds=10))
    assert "question" in row.input_text and "never indexed" not in row.input_text  # the redacted input only
    assert fold(None, llm_called()) is None  # no lifecycle event: no row


def test_rejected_and_deduplicated_tasks_say_why() -> None:
    rejected = fold(None, event("task.rejected", at=1, reason="input blocked: pii", stage="guardrails"))
    assert rejected is not None and (rejected.status, rejected.error) == ("rejected", "input blocked: pii")
    dup = fold(None, event("task.deduplicated", original_task_id="t0", idempotency_key="k"))
    assert dup is not None and dup.status == "deduplicated" and "t0" in dup.error


def test_lifecycle_subjects_with_a_sender_or_partition_token() -> None:
    assert is_lifecycle("ae.acme.task.accepted.3") and not is_lifecycle("ae.acme.task.requested.alice")
    assert is_lifecycle("ae.acme.task.succeeded")
    assert not is_lifecycle("ae.acme.task.cancel_requested.alice") and not is_lifecycle("ae.acme.llm.called")


def ledger_with_tasks() -> Ledger:
    ledger = Ledger()
    for e in (lifecycle("a1", at=0, text="refund my order") + lifecycle("a2", at=100, workflow="billing")
              + lifecycle("b1", tenant="globex", at=200, text="refund please")
              + lifecycle("a3", at=300, end="task.failed", status="failed", reason="tool timed out")
              + [event("task.queued", "a4", at=400, workflow="triage", revision="r1"),
                 event("task.requested", "a5", at=500, workflow="triage"), llm_called(task="a1", cost="0.25"),
                 llm_called(task="a1", cost="0.5")]):
        ledger.observe(e)
    return ledger


def ids(answer: dict[str, Any]) -> list[str]:
    return [t["task_id"] for t in answer["tasks"]]


def ask(ledger: Ledger, body: dict[str, Any], scope: str | None = None) -> dict[str, Any]:
    wanted, problem = read_filter(body, scope)
    assert problem == ""
    return ledger.list_tasks(wanted)


def test_filters_search_and_newest_first() -> None:
    ledger = ledger_with_tasks()
    assert ids(ask(ledger, {})) == ["a4", "a3", "b1", "a2", "a1"]
    assert ids(ask(ledger, {"tenant": "acme", "status": "succeeded"})) == ["a2", "a1"]
    assert ids(ask(ledger, {"workflow": "billing"})) == ["a2"]
    assert ids(ask(ledger, {"status": "queued"})) == ["a4"]  # a5, only requested (at guardrails), is not listed
    assert ids(ask(ledger, {"since": (T0 + timedelta(seconds=200)).isoformat()})) == ["a4", "a3", "b1"]
    assert ids(ask(ledger, {"search": "REFUND"})) == ["b1", "a1"]  # the accepted input, any case
    assert ids(ask(ledger, {"search": "timed out"})) == ["a3"]  # the error
    assert ids(ask(ledger, {"search": "a2"})) == ["a2"]  # a task id prefix
    assert ids(ask(ledger, {"search": "never indexed"})) == []  # the raw request input is not kept
    assert ids(ask(ledger, {"limit": 2})) == ["a4", "a3"]
    first = ask(ledger, {"search": "a1"})["tasks"][0]
    assert first == {"task_id": "a1", "tenant": "acme", "workflow": "triage", "revision": "r1",
                     "status": "succeeded", "started_at": "2026-03-01T12:00:01+00:00",
                     "finished_at": "2026-03-01T12:00:10+00:00", "cost_usd": "0.75", "error": ""}
    assert ask(ledger, {"search": "a4"})["tasks"][0]["finished_at"] is None


def test_a_tenant_credential_sees_only_its_tenant() -> None:
    ledger = ledger_with_tasks()
    assert ids(ask(ledger, {}, scope="globex")) == ["b1"]
    assert read_filter({"tenant": "acme"}, "globex")[1] == "this credential sees only tenant 'globex', not 'acme'"


def test_a_forgotten_tenants_tasks_leave_the_list() -> None:
    ledger = ledger_with_tasks()
    ledger.forget("acme", ["a1"])
    assert ids(ask(ledger, {"tenant": "acme"})) == ["a4", "a3", "a2"]
    ledger.forget("acme", None)
    assert ids(ask(ledger, {})) == ["b1"]


@pytest.mark.parametrize(("body", "named"), [
    ({"status": "done"}, "'status' must be one of"), ({"since": "yesterday"}, "'since' must be an ISO 8601"),
    ({"since": "2026-03-01T12:00:00"}, "'since' must be an ISO 8601"), ({"limit": 0}, "'limit' must be"),
    ({"limit": 501}, "'limit' must be"), ({"limit": "5"}, "'limit' must be"), ({"search": ""}, "'search' must"),
    ({"tenant": "no spaces"}, "'tenant' must"), ({"workflow": 3}, "'workflow' must"),
    ({"task": "x"}, "unknown field(s) 'task'")])
def test_a_bad_request_names_the_field(body: dict[str, Any], named: str) -> None:
    assert named in read_filter(body, None)[1]


def test_defaults() -> None:
    assert read_filter({}, None) == (TaskFilter(limit=50), "")
    assert read_filter({"limit": None, "status": None, "since": None}, None) == (TaskFilter(limit=50), "")
