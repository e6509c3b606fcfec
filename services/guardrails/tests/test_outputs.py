"""Output checks: personal data redacted (or the output held, or refused) per policy, topic rules, the
stricter of the workflow's and the tenant's policy winning, and verdicts that never quote the matched text."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import NodeOutputProduced
from agent_engine.contracts.policy import OutputPolicy, TopicRule
from agent_engine.guardrails.outputgate import answer, tenant_policies
from agent_engine.guardrails.outputs import check_output, combined
from agent_engine.guardrails.policy import PolicyError, PolicyFile

KINDS = ("email", "phone")
LEAKY = {"summary": "Call Jane on +44 20 7946 0958 or mail jane.doe@example.com", "tags": ["ok"]}


def test_personal_data_is_redacted_and_counted_by_default() -> None:
    verdict = check_output(LEAKY, OutputPolicy(), KINDS)
    assert verdict.outcome == "redacted"
    assert verdict.output == {"summary": "Call Jane on [redacted:phone] or mail [redacted:email]", "tags": ["ok"]}
    assert [(h.rule, h.count) for h in verdict.rules] == [("pii.email", 1), ("pii.phone", 1)]
    assert "jane" not in verdict.reason.lower() and "7946" not in verdict.reason


def test_a_clean_output_passes_unchanged() -> None:
    verdict = check_output({"text": "nothing personal"}, OutputPolicy(), KINDS)
    assert (verdict.outcome, verdict.output, verdict.rules) == ("allowed", {"text": "nothing personal"}, [])


@pytest.mark.parametrize(("pii", "outcome", "has_output"), [
    ("off", "allowed", True), ("redact", "redacted", True), ("pause", "paused", True), ("fail", "refused", False)])
def test_what_personal_data_does_per_policy(pii: str, outcome: str, has_output: bool) -> None:
    verdict = check_output(LEAKY, OutputPolicy(pii=pii), KINDS)  # type: ignore[arg-type]
    assert verdict.outcome == outcome and (verdict.output is not None) == has_output
    if pii == "pause":  # what is held for the person is redacted too: it is stored with the pause
        assert "jane.doe" not in json.dumps(verdict.output)


def test_only_the_kinds_asked_for() -> None:
    verdict = check_output(LEAKY, OutputPolicy(kinds=["email"]), KINDS)
    assert [h.rule for h in verdict.rules] == ["pii.email"] and "+44" in verdict.output["summary"]  # type: ignore[index]


def test_topic_rules_fail_or_hold_naming_the_rule() -> None:
    out = {"answer": "The DIAGNOSIS is flu; take ibuprofen."}
    held = check_output(out, OutputPolicy(topics=[TopicRule(id="medical", pattern=r"diagnos\w*", action="pause")]),
                        KINDS)
    assert held.outcome == "paused" and [(h.rule, h.count) for h in held.rules] == [("topic.medical", 1)]
    refused = check_output(out, OutputPolicy(topics=[TopicRule(id="medical", pattern=r"diagnos\w*"),
                                                      TopicRule(id="drugs", pattern="ibuprofen", action="pause")]),
                           KINDS)
    assert refused.outcome == "refused" and "topic.medical x1" in refused.reason and "flu" not in refused.reason


def test_topics_match_lookalike_characters() -> None:
    assert check_output({"a": "ＤＩＡＧＮＯＳＩＳ"}, OutputPolicy(topics=[TopicRule(id="m", pattern="diagnosis")]),
                        KINDS).outcome == "refused"


def test_the_stricter_policy_wins() -> None:
    workflow = OutputPolicy(pii="redact", kinds=["email"], topics=[TopicRule(id="a", pattern="x")])
    tenant = OutputPolicy(pii="fail", kinds=["phone"], topics=[TopicRule(id="b", pattern="y")])
    both = combined(workflow, tenant)
    assert both.pii == "fail" and both.kinds == ["email", "phone"] and {t.id for t in both.topics} == {"a", "b"}
    assert combined(workflow, None) == workflow
    assert combined(OutputPolicy(pii="fail"), OutputPolicy(pii="off")).pii == "fail"


def test_an_unknown_kind_refuses_with_a_clear_reason() -> None:
    verdict = check_output(LEAKY, OutputPolicy(kinds=["passport"]), KINDS)
    assert verdict.outcome == "refused" and "unknown kinds of personal data ['passport']" in verdict.reason


def test_the_tenant_sections_are_validated_at_start() -> None:
    good = PolicyFile.parse({"defaults": {"output": {"pii": "fail"}}, "tenants": {"acme": {"output": {"pii": "off"}}}})
    policies = tenant_policies(good)
    assert policies[None] == OutputPolicy(pii="fail") and policies["acme"] == OutputPolicy(pii="off")
    with pytest.raises(PolicyError, match=r"tenants\.acme\.output: .*pii"):
        tenant_policies(PolicyFile.parse({"tenants": {"acme": {"output": {"pii": "shred"}}}}))
    with pytest.raises(PolicyError, match="unknown kinds"):
        tenant_policies(PolicyFile.parse({"defaults": {"output": {"kinds": ["passport"]}}}))


def _produced() -> tuple[Envelope, NodeOutputProduced]:
    data = {"dispatch_id": "d-1", "node": "write", "attempt": 1, "output": LEAKY, "provider": "mock", "model": "m"}
    envelope = Envelope(id="out-1", source="test", type="node.output_produced", time=datetime(2026, 12, 3, tzinfo=UTC),
                        tenant="acme", task_id="t-1", correlation_id="t-1", data=data)
    return envelope, NodeOutputProduced.model_validate(data)


def test_the_answer_to_a_redacted_output_and_its_verdict() -> None:
    envelope, produced = _produced()
    events = answer(envelope, produced, check_output(produced.output, OutputPolicy(), KINDS))
    assert [e.type for e in events] == ["node.output_checked", "guardrail.verdict"]
    assert events[0].data["outcome"] == "redacted" and events[0].data["dispatch_id"] == "d-1"
    assert events[1].data["gate"] == "output" and events[1].data["node"] == "write"
    wire = json.dumps([e.to_wire() for e in events])
    assert "jane.doe@example.com" not in wire and "7946" not in wire
    again = answer(envelope, produced, check_output(produced.output, OutputPolicy(), KINDS))
    assert [e.id for e in again] == [e.id for e in events]  # a redelivery answers with the same ids


def test_a_refused_output_answers_with_a_non_retryable_error() -> None:
    envelope, produced = _produced()
    events = answer(envelope, produced, check_output(produced.output, OutputPolicy(pii="fail"), KINDS))
    assert [e.type for e in events] == ["node.errored", "guardrail.verdict"]
    assert events[0].data["retryable"] is False and "pii.email x1" in events[0].data["error"]
    assert events[1].data["outcome"] == "refused"


def test_a_clean_output_is_answered_without_a_verdict() -> None:
    envelope, produced = _produced()
    events = answer(envelope, produced, check_output({"x": "fine"}, OutputPolicy(), KINDS))
    assert [e.type for e in events] == ["node.output_checked"] and events[0].data["outcome"] == "allowed"


def test_a_side_with_pii_off_asks_for_no_kinds_so_the_tenants_section_decides() -> None:
    both = combined(OutputPolicy(pii="off"), OutputPolicy(pii="redact", kinds=["email"]), KINDS)
    assert both.pii == "redact" and both.kinds == ["email"]
