"""The test kit's requests are built like every other client's: the contracts' envelope factory and subject map."""

from __future__ import annotations

from agent_engine.contracts.events import TaskRequested
from agent_engine.contracts.subjects import subject_for
from agent_engine.testkit import task_request


def test_a_task_request_is_a_fresh_task_on_its_tenants_subject() -> None:
    first = task_request("acme", "research-review", {"brief": "hi"})
    second = task_request("acme", "research-review", {"brief": "hi"})
    assert subject_for(first) == "ae.acme.task.requested.agent-engine-testkit"  # the sender as its last token
    assert first.type == TaskRequested.TYPE and first.correlation_id == first.task_id
    assert first.task_id != second.task_id and first.id != second.id
    assert TaskRequested.model_validate(first.data).input == {"brief": "hi"}
    assert "idempotency_key" not in first.data  # no null fields: one payload format for every client
