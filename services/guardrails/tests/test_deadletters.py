"""What a gate's dead letter keeps of a message it could not read or answer: a copy with every kind of personal
data guardrails knows redacted, whether the body is JSON, broken JSON or not even UTF-8."""

from __future__ import annotations

import json

from agent_engine.guardrails.deadletters import redacted_copy

EMAIL, CARD, IBAN = "jane.doe@example.com", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32"


def test_an_unparsable_body_is_redacted_as_text() -> None:
    raw = b'{"type": "node.output_produced", "data": {"output": {"note": "' + f"{EMAIL} {CARD}".encode() + b"\xff"
    copy, counts = redacted_copy(raw)
    assert EMAIL.encode() not in copy and CARD.encode() not in copy
    assert b"[redacted:email]" in copy and b"[redacted:card]" in copy and counts == {"card": 1, "email": 1}
    assert copy.startswith(b'{"type": "node.output_produced"')  # the rest stays readable


def test_a_json_body_is_redacted_leaf_by_leaf_keeping_the_envelopes_identifiers() -> None:
    body = {"id": "12345678-1234-5678-9abc-123456789012", "time": "2026-12-04 11:40:12", "tenant": "acme",
            "task_id": "t-1", "source": "agent-engine/tool-runner", "type": "node.output_produced",
            "data": {"output": {"to": "jane\\u0040example.com", "iban": IBAN, "ip": "10.1.2.3",
                                "phone": "+44 20 7946 0958", "ssn": "123-45-6789"}, "policy": {}}}
    raw = json.dumps(body).replace("\\\\u0040", "\\u0040").encode()  # an escaped '@' the text would not show
    copy, counts = redacted_copy(raw)
    kept = json.loads(copy)
    assert {k: kept[k] for k in ("id", "time", "tenant", "task_id", "source")} == {
        k: body[k] for k in ("id", "time", "tenant", "task_id", "source")}
    assert kept["data"]["output"] == {"to": "[redacted:email]", "iban": "[redacted:iban]", "ip": "[redacted:ipv4]",
                                      "phone": "[redacted:phone]", "ssn": "[redacted:ssn]"}
    assert counts == {"email": 1, "iban": 1, "ipv4": 1, "phone": 1, "ssn": 1}  # every kind, not a policy's


def test_an_identifier_attribute_is_redacted_when_it_is_not_an_identifier() -> None:
    copy, counts = redacted_copy(json.dumps({"id": {"nested": EMAIL}, "source": "x" * 300 + EMAIL}).encode())
    assert EMAIL.encode() not in copy and counts == {"email": 2}


def test_nothing_found_leaves_the_text_and_counts_nothing() -> None:
    assert redacted_copy(b"plain words") == (b"plain words", {})


def test_a_lone_surrogate_is_kept_escaped() -> None:
    """Found by tests/test_fuzz.py: `"\\ud800"` is valid JSON but no UTF-8 can carry it."""
    copy, counts = redacted_copy(b'{"note": "\\ud800 and ' + EMAIL.encode() + b'"}')
    assert copy == b'{"note": "\\ud800 and [redacted:email]"}' and counts == {"email": 1}


def test_a_wire_envelopes_ids_come_back_unchanged_even_where_a_uuids_digits_look_like_a_phone_number() -> None:
    """On the wire the task, correlation and causation ids are `taskid`, `correlationid`, `causationid` (CloudEvents
    extension names): kept as they are, like `id`; this task id's digit groups read as a phone number otherwise."""
    from agent_engine.contracts.envelope import Envelope

    ids = "23986425-d3a5-5e13-8bab-299745777a8d"
    envelope = Envelope(id=ids, source="agent-engine/tool-runner", type="node.output_produced",
                        time="2026-12-04T11:40:12Z", tenant="acme", task_id=ids, correlation_id=ids, causation_id=ids,
                        data={"output": {"to": EMAIL}})
    copy, counts = redacted_copy(envelope.to_bytes())
    kept = json.loads(copy)
    assert {kept[k] for k in ("id", "taskid", "correlationid", "causationid")} == {ids}
    assert kept["data"]["output"] == {"to": "[redacted:email]"} and counts == {"email": 1}
