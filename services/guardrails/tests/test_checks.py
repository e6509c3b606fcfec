"""Guardrails: every request is accepted (redacted) or rejected with a reason a sender can act on."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope, derive_id
from agent_engine.contracts.upcasting import upcast
from agent_engine.guardrails.checks import Policy, check
from agent_engine.guardrails.service import SOURCE, decide, policy_from_env

Encode = Callable[[Any], bytes]
POLICY = Policy()


def test_a_valid_request_is_accepted(request_body, encode: Encode) -> None:
    verdict = check(encode(request_body()), "ae.acme.task.requested", POLICY)
    assert verdict.accepted
    assert verdict.reason is None
    assert verdict.request is not None and verdict.request.workflow == "research-review"
    assert verdict.redacted_input == {"brief": "hello"}
    assert verdict.redactions == {}


def test_over_size_names_both_sizes(request_body, encode: Encode) -> None:
    body = request_body()
    body["data"]["input"]["brief"] = "x" * 4096
    verdict = check(encode(body), "ae.acme.task.requested", Policy(max_bytes=2048))
    assert not verdict.accepted
    assert verdict.reason is not None
    assert verdict.reason.startswith("request is 4.")
    assert "over the 2.0 KiB limit" in verdict.reason
    assert "workspace files" in verdict.reason


def test_over_size_in_mebibytes(encode: Encode) -> None:
    verdict = check(b" " * (3 * 1024 * 1024), "ae.acme.task.requested", Policy(max_bytes=1024 * 1024))
    assert verdict.reason is not None
    assert "request is 3.0 MiB, over the 1.0 MiB limit" in verdict.reason


def test_exactly_at_the_limit_is_not_over_size(request_body, encode: Encode) -> None:
    raw = encode(request_body())
    assert check(raw, "ae.acme.task.requested", Policy(max_bytes=len(raw))).accepted


@pytest.mark.parametrize("raw", [b"not json at all", b"{\"id\": ", b"\xff\xfe\x00"])
def test_not_json(raw: bytes) -> None:
    verdict = check(raw, "ae.acme.task.requested", POLICY)
    assert verdict.reason is not None
    assert verdict.reason.startswith("request body is not JSON (")
    assert verdict.envelope is None


@pytest.mark.parametrize(("value", "name"), [([1, 2], "list"), ("text", "str"), (42, "int"), (None, "NoneType")])
def test_json_that_is_not_an_object(value: Any, name: str, encode: Encode) -> None:
    verdict = check(encode(value), "ae.acme.task.requested", POLICY)
    assert verdict.reason == f"request body is JSON {name}, not an object (an event envelope)"


def test_unsupported_schema_version_names_the_versions_read(request_body, encode: Encode) -> None:
    verdict = check(encode(request_body(schema_version=3)), "ae.acme.task.requested", POLICY)
    assert verdict.reason is not None
    assert verdict.reason.startswith("schemaversion 3 is not supported")
    assert "this engine reads versions 1 and 2; send version 2" in verdict.reason


def test_a_v2_request_without_its_version_reads_as_v2(request_body, encode: Encode) -> None:
    body = request_body()
    body.pop("schema_version", None)
    body.pop("schemaversion", None)
    verdict = check(encode(body), "ae.acme.task.requested", POLICY)
    assert verdict.accepted and verdict.envelope is not None and verdict.envelope.task_id == "task-1"


def test_missing_tenant(request_body, encode: Encode) -> None:
    body = request_body()
    del body["tenant"]
    verdict = check(encode(body), "ae.acme.task.requested", POLICY)
    assert verdict.reason == "not a valid event envelope: tenant: Field required"


def test_wrong_event_type(request_body, encode: Encode) -> None:
    verdict = check(encode(request_body(type="node.completed")), "ae.acme.task.requested", POLICY)
    assert verdict.reason == "event type 'node.completed' cannot be sent to task.requested"
    assert verdict.envelope is not None  # known envelope: the rejection can name its task


def test_tenant_must_match_the_subject(request_body, encode: Encode) -> None:
    verdict = check(encode(request_body(tenant="acme")), "ae.globex.task.requested", POLICY)
    assert verdict.reason == ("envelope tenant 'acme' arrived on subject ae.globex.task.requested, which is not "
                              "that tenant's")


def test_invalid_payload_names_the_field(request_body, encode: Encode) -> None:
    body = request_body()
    del body["data"]["workflow"]
    verdict = check(encode(body), "ae.acme.task.requested", POLICY)
    assert verdict.reason == "not a valid task.requested payload: workflow: Field required"
    assert verdict.envelope is not None and verdict.envelope.task_id == "task-1"


def test_emails_and_phones_are_redacted_in_nested_input(request_body, encode: Encode) -> None:
    body = request_body()
    body["data"]["input"] = {
        "brief": "Write to jane.doe@example.com or call +1 415 555 0100.",
        "contacts": [{"email": "bob@corp.io", "phone": "020 7946-0958"}, "ops@example.org", 7],
        "pages": 2,
        "draft": True,
    }
    verdict = check(encode(body), "ae.acme.task.requested", POLICY)
    assert verdict.accepted
    assert verdict.redacted_input == {
        "brief": "Write to [redacted:email] or call [redacted:phone].",
        "contacts": [{"email": "[redacted:email]", "phone": "[redacted:phone]"}, "[redacted:email]", 7],
        "pages": 2,
        "draft": True,
    }
    assert verdict.redactions == {"email": 3, "phone": 2}
    assert verdict.request is not None
    assert verdict.request.input["brief"].startswith("Write to jane.doe@example.com")  # original kept apart


@pytest.mark.parametrize("text", ["Call +1 415 555 0100.", "Call +1 415 555 0100", "Call +1 415 555 0100!",
                                  "Call +1 415 555 0100, then"])
def test_a_phone_number_ending_a_sentence_is_redacted_whole(text: str, request_body, encode: Encode) -> None:
    body = request_body()
    body["data"]["input"] = {"brief": text}
    verdict = check(encode(body), "ae.acme.task.requested", POLICY)
    redacted = verdict.redacted_input["brief"]
    assert redacted.startswith("Call [redacted:phone]")
    assert not any(ch.isdigit() for ch in redacted), redacted
    assert verdict.redactions == {"phone": 1}


def test_version_numbers_are_not_phone_numbers(request_body, encode: Encode) -> None:
    body = request_body()
    body["data"]["input"] = {"brief": "Upgrade to v1.2.3 in 2 weeks."}
    verdict = check(encode(body), "ae.acme.task.requested", POLICY)
    assert verdict.redacted_input == {"brief": "Upgrade to v1.2.3 in 2 weeks."}
    assert verdict.redactions == {}


def test_redaction_can_be_disabled(request_body, encode: Encode) -> None:
    body = request_body()
    body["data"]["input"] = {"brief": "jane.doe@example.com, +1 415 555 0100"}
    verdict = check(encode(body), "ae.acme.task.requested", Policy(redact=()))
    assert verdict.accepted
    assert verdict.redacted_input == {"brief": "jane.doe@example.com, +1 415 555 0100"}
    assert verdict.redactions == {}


def test_redaction_of_one_kind_only(request_body, encode: Encode) -> None:
    body = request_body()
    body["data"]["input"] = {"brief": "jane.doe@example.com, +1 415 555 0100"}
    verdict = check(encode(body), "ae.acme.task.requested", Policy(redact=("email",)))
    assert verdict.redacted_input == {"brief": "[redacted:email], +1 415 555 0100"}
    assert verdict.redactions == {"email": 1}


# --- decide: the answering event ---------------------------------------------------------------

SUBJECT = "ae.acme.task.requested"


def test_decide_accepts_with_a_derived_id(request_body, encode: Encode) -> None:
    body = request_body()
    body["data"]["input"] = {"brief": "mail jane@example.com"}
    answer = decide(SUBJECT, encode(body), {}, 7, POLICY)
    assert answer is not None
    assert answer.type == "task.accepted"
    assert answer.id == derive_id("req-1", "answer")
    assert (answer.tenant, answer.task_id, answer.correlation_id, answer.causation_id, answer.source) == (
        "acme", "task-1", "corr-1", "req-1", SOURCE)
    assert answer.data == {"workflow": "research-review", "input": {"brief": "mail [redacted:email]"},
                           "redactions": {"email": 1}, "idempotency_key": "k-1", "requested_by": "tester",
                           "priority": 0}
    again = decide(SUBJECT, encode(body), {}, 8, POLICY)
    assert again is not None and again.id == answer.id  # a redelivered request gets the same answer id


def test_decide_rejects_non_json_using_the_task_id_header() -> None:
    answer = decide(SUBJECT, b"garbage", {"Ae-Task-Id": "task-from-header"}, 7, POLICY)
    assert answer is not None
    assert answer.type == "task.rejected"
    assert answer.tenant == "acme"
    assert answer.task_id == answer.correlation_id == "task-from-header"
    assert answer.causation_id == derive_id("raw-request", SUBJECT, 7)
    assert answer.id == derive_id(answer.causation_id, "answer")
    assert answer.data["stage"] == "guardrails"
    assert answer.data["reason"].startswith("request body is not JSON")
    assert "workflow" not in answer.data
    Envelope.from_bytes(answer.to_bytes())


def test_decide_rejects_non_json_without_header_with_a_derived_task_id() -> None:
    answer = decide(SUBJECT, b"garbage", {}, 9, POLICY)
    assert answer is not None
    assert answer.task_id == derive_id("request", 9)


def test_decide_rejection_of_a_parsed_envelope_keeps_its_task_and_workflow(request_body, encode: Encode) -> None:
    answer = decide("ae.globex.task.requested", encode(request_body()), {"Ae-Task-Id": "ignored"}, 1, POLICY)
    assert answer is not None
    assert answer.type == "task.rejected"
    assert answer.tenant == "globex"  # the subject's tenant: the only one the sender may publish to
    assert (answer.task_id, answer.correlation_id, answer.causation_id) == ("task-1", "corr-1", "req-1")
    assert answer.data["workflow"] == "research-review"
    assert "arrived on subject ae.globex.task.requested" in answer.data["reason"]


# --- hostile requests: each one still gets an answer ------------------------------------------

def test_a_body_nested_past_the_json_parsers_recursion_limit_is_rejected_not_raised() -> None:
    answer = decide(SUBJECT, b"[" * 50_000 + b"]" * 50_000, {"Ae-Task-Id": "deep"}, 3, POLICY)
    assert answer is not None and answer.type == "task.rejected" and answer.task_id == "deep"
    assert "nests JSON too deeply" in answer.data["reason"]


def test_input_nested_deeper_than_the_policy_allows_is_rejected_with_both_depths(request_body, encode: Encode) -> None:
    body = request_body()
    deep: Any = "leaf"
    for _ in range(200):
        deep = {"k": deep}
    body["data"]["input"] = deep
    answer = decide(SUBJECT, encode(body), {}, 1, POLICY)
    assert answer is not None and answer.type == "task.rejected" and answer.task_id == "task-1"
    assert "202 levels deep, over the limit of 64" in answer.data["reason"]  # the body, data, then the 200


def test_an_overlong_task_id_header_still_gets_a_rejection_naming_the_header() -> None:
    header = "h" * 300
    answer = decide(SUBJECT, b"garbage", {"Ae-Task-Id": header}, 11, POLICY)
    assert answer is not None and answer.type == "task.rejected"
    assert answer.task_id == answer.correlation_id == derive_id("request", 11)
    assert "Ae-Task-Id header is 300 characters, over the 128" in answer.data["reason"]
    Envelope.from_bytes(answer.to_bytes())


def test_a_rejection_echoes_the_workflow_only_when_it_is_a_workflow_name(request_body, encode: Encode) -> None:
    body = request_body(type="task.other")
    body["data"]["workflow"] = "x" * 500_000
    answer = decide(SUBJECT, encode(body), {}, 1, POLICY)
    assert answer is not None and answer.type == "task.rejected"
    assert "workflow" not in answer.data and len(answer.to_bytes()) < 2048


def test_a_check_that_fails_unexpectedly_still_answers(monkeypatch: pytest.MonkeyPatch, request_body,
                                                       encode: Encode) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("a bug in a check")

    monkeypatch.setattr("agent_engine.guardrails.service.check", broken)
    answer = decide(SUBJECT, encode(request_body()), {"Ae-Task-Id": "t-9"}, 1, POLICY)
    assert answer is not None and answer.type == "task.rejected" and answer.task_id == "t-9"
    assert "could not check this request (RuntimeError)" in answer.data["reason"]


@pytest.mark.parametrize("subject", ["ae.bad*tenant.task.requested", "ae.a b.task.requested", "other.acme.task",
                                     "ae.task"])
def test_decide_returns_none_without_a_valid_tenant(subject: str, request_body, encode: Encode) -> None:
    assert decide(subject, encode(request_body()), {}, 1, POLICY) is None


# --- policy from the environment ---------------------------------------------------------------

def test_policy_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AE_GUARDRAILS_REDACT", raising=False)
    monkeypatch.delenv("AE_GUARDRAILS_MAX_BYTES", raising=False)
    assert policy_from_env() == Policy(max_bytes=1024 * 1024, redact=("email", "phone", "card", "iban"))


def test_policy_redact_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_GUARDRAILS_REDACT", "none")
    assert policy_from_env().redact == ()


def test_policy_redact_one_kind_and_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_GUARDRAILS_REDACT", " email ")
    monkeypatch.setenv("AE_GUARDRAILS_MAX_BYTES", "4096")
    assert policy_from_env() == Policy(max_bytes=4096, redact=("email",))


def test_policy_unknown_kind_stops_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_GUARDRAILS_REDACT", "email,passport")
    with pytest.raises(SystemExit) as exit_info:
        policy_from_env()
    message = str(exit_info.value.code)
    assert "unknown kinds ['passport']" in message
    assert "'email'" in message and "'phone'" in message


def test_rejection_reason_is_json_serialisable(request_body, encode: Encode) -> None:
    answer = decide(SUBJECT, encode(request_body(schema_version="2")), {}, 1, POLICY)
    assert answer is not None
    assert "schemaversion '2' is not supported" in json.loads(answer.to_bytes())["data"]["reason"]


def test_a_workflow_name_no_manifest_can_have_is_rejected_with_the_rule() -> None:
    from agent_engine.guardrails.checks import Policy, check

    body = {"id": "r1", "source": "s", "type": "task.requested", "time": "2026-11-22T10:00:00Z", "tenant": "acme",
            "task_id": "t1", "correlation_id": "c", "data": {"workflow": "my flow", "input": {}}}
    verdict = check(__import__("json").dumps(body).encode(), "ae.acme.task.requested", Policy())
    assert not verdict.accepted
    assert "workflow" in (verdict.reason or "") and "pattern" in (verdict.reason or "")


def test_a_lone_surrogate_is_rejected_naming_it_instead_of_failing_to_answer(request_body) -> None:
    """Found by the fuzz suite: JSON may escape half a surrogate pair, which no UTF-8 answer can carry."""
    body = request_body()
    body["data"]["input"] = {"x": "\ud800"}
    answer = decide(SUBJECT, json.dumps(body).encode(), {}, 1, POLICY)
    assert answer is not None and answer.type == "task.rejected" and answer.task_id == "task-1"
    assert "not valid Unicode (a lone surrogate" in answer.data["reason"]
    Envelope.from_bytes(answer.to_bytes())
    body = request_body(task_id="\udfff")  # in the envelope itself: the rejection cannot name that task
    answer = decide(SUBJECT, json.dumps(body).encode(), {"Ae-Task-Id": "hdr"}, 2, POLICY)
    assert answer is not None and answer.task_id == "hdr" and "lone surrogate" in answer.data["reason"]
    paired = request_body()
    paired["data"]["input"] = {"x": "\U0001F600"}
    assert check(json.dumps(paired).encode(), SUBJECT, POLICY).accepted


def test_a_binary_mode_request_is_checked_and_answered_like_a_structured_one(request_body) -> None:
    """A client may send a CloudEvent in binary content mode: attributes as `ce-` headers, the body its data."""
    body = upcast(request_body())
    data = json.dumps(body.pop("data")).encode()
    headers = {f"ce-{name}": str(value) for name, value in body.items()}
    answer = decide("ae.acme.task.requested", data, {**headers, "Ae-Task-Id": "task-1"}, 1, POLICY)
    assert answer is not None and answer.type == "task.accepted" and answer.task_id == "task-1"
    assert answer.causation_id == body["id"] and answer.data["workflow"] == "research-review"
