"""The consume rule every service shares: read an envelope for its subject's tenant or refuse it with a
reason; a runner's handler that fails answers the dispatch instead of looping through redeliveries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.js.errors import APIError, NoStreamResponseError

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import NodeDispatched
from agent_engine.runtime.inbox import Refused, read, transient
from agent_engine.runtime.queries import read_query
from agent_engine.runtime.runner import _answer

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def envelope(tenant: str = "acme", **data: object) -> Envelope:
    return Envelope(id="e-1", source="test", type="node.dispatched", time=NOW, tenant=tenant, task_id="t-1",
                    correlation_id="t-1", data=dict(data))


def msg(subject: str, body: bytes) -> Msg:
    return Msg(_client=None, subject=subject, data=body)  # type: ignore[arg-type]


def test_an_envelope_on_its_own_subject_is_read() -> None:
    sent = envelope(kind="tool")
    assert read(msg("ae.acme.node.dispatched.tool", sent.to_bytes())) == sent


@pytest.mark.parametrize("subject", ["ae.acme.node.dispatched.agent", "ae.acme.node.completed",
                                     "ae.acme.task.accepted.x"])
def test_an_event_passed_off_on_another_types_subject_is_refused(subject: str) -> None:
    """A tenant may publish on some of its subjects only (once the bus has permissions): an event sent on
    a subject that is not its own would slip past the gate that subject stands for."""
    with pytest.raises(Refused, match=f"a node.dispatched event arrived on subject {subject}; it is published on "
                                      "ae.acme.node.dispatched.tool"):
        read(msg(subject, envelope(kind="tool").to_bytes()))


@pytest.mark.parametrize(("body", "why"), [
    (b"\xff\xfe", "not a valid event envelope"),
    (b"[" * 50_000 + b"]" * 50_000, "not a valid event envelope"),
    (b"[]", r"not a valid event envelope: \(root\): Input should be an object"),
    (json.dumps({"id": "x"}).encode(), "not a valid event envelope: source: Field required"),
    (envelope(tenant="other").to_bytes(), "envelope tenant 'other' arrived on subject ae.acme.node.dispatched.tool"),
])
def test_what_is_not_an_envelope_of_the_subjects_tenant_is_refused_naming_why(body: bytes, why: str) -> None:
    with pytest.raises(Refused, match=why):
        read(msg("ae.acme.node.dispatched.tool", body))


def test_a_refusal_never_echoes_the_value_it_refused() -> None:
    secret = "s" * 5000
    with pytest.raises(Refused) as refused:
        read(msg("ae.acme.x", json.dumps({"id": secret}).encode()))
    assert secret not in str(refused.value) and len(str(refused.value)) < 600


def dispatch() -> NodeDispatched:
    return NodeDispatched(dispatch_id="d-1", node="n", kind="tool", attempt=1, deadline=NOW + timedelta(seconds=9))


async def test_a_handler_that_fails_answers_with_a_node_error_naming_the_failure() -> None:
    async def broken(_: Envelope, __: NodeDispatched) -> list[Envelope]:
        raise TypeError("'int' object is not subscriptable")

    [answer] = await _answer(broken, envelope(), dispatch(), "agent-engine/tool-runner")
    assert answer.type == "node.errored" and answer.data["retryable"] is True  # the node's attempts bound it
    assert answer.data["error"] == ("agent-engine/tool-runner could not handle this dispatch: "
                                    "TypeError: 'int' object is not subscriptable")


async def test_a_handler_that_meets_an_outage_is_redelivered_not_answered() -> None:
    async def outage(_: Envelope, __: NodeDispatched) -> list[Envelope]:
        raise ConnectionClosedError

    with pytest.raises(ConnectionClosedError):
        await _answer(outage, envelope(), dispatch(), "agent-engine/tool-runner")
    assert transient(ConnectionClosedError()) and transient(TimeoutError()) and not transient(KeyError("x"))


def test_a_stream_between_leaders_is_an_outage_not_a_bad_message() -> None:
    # on a NATS cluster, a publish while the stream elects a new leader meets no responder, or a retry meets the
    # first attempt still being stored: both pass, so the message is redelivered, never dead-lettered
    assert transient(NoStreamResponseError()) and transient(APIError(code=409, err_code=10158))
    assert not transient(APIError(code=400, err_code=10058))


@pytest.mark.parametrize(("raw", "problem"), [
    (b"\xff", "must be a JSON object in UTF-8"),
    (b"[1]", "must be a JSON object, not JSON list"),
    (b"{\"task_id\": 7}", "'task_id' must be a string of 1 to 128 characters"),
    (b"{\"task_id\": \"x\", \"tenant\": \"a b\"}", "'tenant' must be a tenant name"),
])
def test_a_query_that_cannot_be_read_gets_a_problem_to_answer_with(raw: bytes, problem: str) -> None:
    assert problem in read_query(raw, task_required=True)[1]


def test_a_query_names_its_task_and_tenant() -> None:
    assert read_query(b'{"task_id": "t-1", "tenant": "acme"}', task_required=True) == (
        {"task_id": "t-1", "tenant": "acme"}, "")
    assert read_query(b"", task_required=False) == ({}, "")


def test_a_binary_mode_event_is_read_like_its_structured_form() -> None:
    sent = envelope(kind="tool")
    wire = sent.to_wire()
    data = json.dumps(wire.pop("data")).encode()
    headers = {f"ce-{name}": str(value) for name, value in wire.items() if name != "datacontenttype"}
    binary = Msg(_client=None, subject="ae.acme.node.dispatched.tool", data=data,  # type: ignore[arg-type]
                 headers={**headers, "content-type": "application/json", "Nats-Msg-Id": sent.id})
    assert read(binary) == sent
