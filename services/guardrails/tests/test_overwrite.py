"""Which answered requests are overwritten in the stream's file store, and which only deleted (overwrite.py):
only a request whose every part its task.accepted carries on skips the overwrite. The answers are guardrails'
own (`decide`), the requests built as agentctl and the CloudEvents binary mode send them."""

from __future__ import annotations

import json
import uuid
from typing import Any

from agent_engine.contracts.events import TaskRequested
from agent_engine.guardrails.checks import Policy
from agent_engine.guardrails.overwrite import must_overwrite
from agent_engine.guardrails.service import decide
from agent_engine.runtime.bus import MSG_ID, TASK_ID_HEADER
from agent_engine.testkit.client import task_request

SUBJECT = "ae.acme.task.requested"
POLICY = Policy()


def sent(task_input: dict[str, Any], **fields: Any) -> tuple[bytes, dict[str, str]]:
    """A request as agentctl publishes it: the structured event and its headers."""
    envelope = task_request("acme", "research-review", task_input)
    if fields:
        data = TaskRequested.model_validate({**envelope.data, **fields}).model_dump(mode="json", exclude_none=True)
        envelope = envelope.model_copy(update={"data": data})
    return envelope.to_bytes(), {MSG_ID: envelope.id, TASK_ID_HEADER: envelope.task_id}


def overwritten(body: bytes, headers: dict[str, str]) -> bool:
    answer = decide(SUBJECT, body, headers, 7, POLICY)
    assert answer is not None
    return must_overwrite(body, headers, answer)


def test_a_request_its_answer_carries_whole_is_only_deleted() -> None:
    assert not overwritten(*sent({"brief": "Compare event stores.", "depth": [1, {"x": None}]}))
    assert not overwritten(*sent({"brief": "b"}, idempotency_key="k1", priority=5, data_subject="cust-9",
                                 budget_usd="0.25"))


def test_a_request_with_something_redacted_is_overwritten() -> None:
    assert overwritten(*sent({"brief": "Write to jane.doe@example.com about it."}))


def test_a_rejected_request_is_overwritten() -> None:
    body, headers = sent({"brief": "x" * 4096})
    answer = decide(SUBJECT, body, headers, 7, Policy(max_bytes=2048))
    assert answer is not None and answer.type == "task.rejected"
    assert must_overwrite(body, headers, answer)


def test_a_field_the_answer_does_not_carry_on_is_overwritten() -> None:
    assert overwritten(*sent({"brief": "b"}, session="chat-4411"))  # accepted, but task.accepted has no session
    body, headers = sent({"brief": "b"})
    event = json.loads(body)
    event["data"]["note"] = "Jane's account, see ticket 991"  # a field the contract does not know: ignored
    assert overwritten(json.dumps(event).encode(), headers)


def test_an_unknown_attribute_or_header_is_overwritten() -> None:
    body, headers = sent({"brief": "b"})
    event = json.loads(body)
    event["customer"] = "Jane Doe"  # a CloudEvents extension attribute nothing carries on
    assert overwritten(json.dumps(event).encode(), headers)
    assert overwritten(body, {**headers, "X-Customer": "Jane Doe"})


def test_a_v1_request_is_overwritten() -> None:
    task_id = str(uuid.uuid4())
    v1 = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "billing", "type": "task.requested",
          "time": "2026-12-04T10:00:00+00:00", "subject": None, "tenant": "acme", "task_id": task_id,
          "correlation_id": task_id, "causation_id": None, "schema_version": 1,
          "data": {"workflow": "research-review", "input": {"brief": "b"}}}
    assert overwritten(json.dumps(v1).encode(), {})


def binary(body: bytes) -> tuple[dict[str, str], bytes]:
    """The same event in CloudEvents' binary mode: attributes as `ce-` headers, the data as the body."""
    event = json.loads(body)
    data = event.pop("data")
    headers = {f"ce-{name}": str(value) for name, value in event.items() if name != "datacontenttype"}
    return {**headers, "content-type": "application/json"}, json.dumps(data).encode()


def test_binary_mode_is_judged_by_the_event_its_headers_make() -> None:
    structured, sent_headers = sent({"brief": "Compare event stores."})
    headers, body = binary(structured)
    assert not overwritten(body, {**headers, **sent_headers})
    headers["ce-customer"] = "Jane Doe"
    assert overwritten(body, headers)


def test_a_body_that_is_not_an_event_is_overwritten() -> None:
    answer = decide(SUBJECT, b"garbage", {TASK_ID_HEADER: "t1"}, 7, POLICY)
    assert answer is not None and must_overwrite(b"garbage", {TASK_ID_HEADER: "t1"}, answer)
