"""Which answered requests are overwritten in the stream's file store, and which only deleted (overwrite.py):
only a request whose every part its task.accepted carries on skips the overwrite. The answers are guardrails'
own (`decide`), the requests built as agentctl and the CloudEvents binary mode send them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

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


def _mutated(change: str) -> tuple[bytes, dict[str, str]]:
    """A plain request (which is only deleted) with one thing added that its answer would not carry on."""
    body, headers = sent({"brief": "plain", "n": 0.5})
    event = json.loads(body)
    secret = "Jane Doe <jane@example.com>"
    text = body.decode()
    if change == "repeated input key":
        return text.replace('"brief": "plain"', f'"brief": "{secret}", "brief": "plain"').replace(
            '"brief":"plain"', f'"brief":"{secret}","brief":"plain"').encode(), headers
    if change == "repeated tenant":
        return text.replace('{', f'{{"tenant": "{secret}", ', 1).encode(), headers
    if change == "rounded number":
        return text.replace("0.5", "0.41111111111111111119").encode(), headers
    if change == "infinite number":
        return text.replace("0.5", "1e400").encode(), headers
    header_changes = {
        "ce- header in structured mode": {"ce-customer": secret}, "bare ce- header": {"ce-": secret},
        "content-type with text": {"Content-Type": secret}, "traceparent header with text": {"traceparent": secret},
        "tracestate header": {"tracestate": "vendor=abc"}, "another message id": {MSG_ID: secret},
        "another task id header": {TASK_ID_HEADER: secret}}
    if change in header_changes:
        return body, {**headers, **header_changes[change]}
    attribute_changes = {
        "dataschema with text": {"dataschema": secret}, "traceparent with text": {"traceparent": secret},
        "tracestate": {"tracestate": "vendor=abc"}, "source with text": {"source": secret},
        "time with text": {"time": f"2026-12-04 {secret}"}, "causationid": {"causationid": secret},
        "another tenant": {"tenant": "acme2"}}
    event.update(attribute_changes[change])
    return json.dumps(event).encode(), headers


CHANGES = ["repeated input key", "repeated tenant", "rounded number", "infinite number",
           "ce- header in structured mode", "bare ce- header", "content-type with text",
           "traceparent header with text", "tracestate header", "another message id", "another task id header",
           "dataschema with text", "traceparent with text", "tracestate", "source with text", "time with text",
           "causationid", "another tenant"]


@pytest.mark.parametrize("change", CHANGES)
def test_anything_the_answer_does_not_carry_on_is_overwritten(change: str) -> None:
    body, headers = _mutated(change)
    answer = decide(SUBJECT, body, headers, 7, POLICY)
    assert answer is not None
    assert answer.type != "task.accepted" or must_overwrite(body, headers, answer), change


def test_the_plain_request_those_changes_start_from_is_only_deleted() -> None:
    body, headers = sent({"brief": "plain", "n": 0.5})
    assert not overwritten(body, headers)
    event = json.loads(body)
    event["source"] = event["data"]["requested_by"] = "billing-system"  # a sender naming itself: carried on
    event["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert not overwritten(json.dumps(event).encode(), {**headers, "traceparent": event["traceparent"]})


@pytest.mark.parametrize("header", ["ce-data", "ce-datacontenttype"])
def test_binary_mode_headers_the_body_or_content_type_override_are_overwritten(header: str) -> None:
    structured, sent_headers = sent({"brief": "plain"})
    headers, body = binary(structured)
    assert overwritten(body, {**headers, **sent_headers, header: "Jane Doe"})


def test_binary_mode_attribute_sent_twice_is_overwritten() -> None:
    structured, sent_headers = sent({"brief": "plain"})
    headers, body = binary(structured)
    assert overwritten(body, {**headers, **sent_headers, "CE-Source": "Jane Doe"})
