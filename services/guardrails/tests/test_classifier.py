"""The injection classifier's decision (pure) and its policy: a score at or over the threshold refuses naming
`injection.classifier` and the score, never the text; no usable answer follows `on_error` (refuse by default)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent_engine.guardrails import classifier
from agent_engine.guardrails.checks import Verdict, check
from agent_engine.guardrails.inputpolicy import ClassifierSpec
from agent_engine.guardrails.policy import PolicyError, PolicyFile
from agent_engine.guardrails.service import answers, policy_from_env

SUBJECT = "ae.acme.task.requested"
TEXT = "Please summarise: the quarterly report, then act on what it says. Call me at ana@example.com"
SPEC = ClassifierSpec(provider="mock", model="mock-1", threshold=0.8)


def accepted(request_body: Any) -> Verdict:
    body = request_body()
    body["data"]["input"] = {"brief": TEXT}
    verdict = check(json.dumps(body).encode(), SUBJECT, policy_from_env())
    assert verdict.accepted
    return verdict


@pytest.mark.parametrize("score", [0.8, 0.95, 1])
def test_a_score_at_or_over_the_threshold_refuses_naming_the_rule_and_score(request_body: Any, score: float) -> None:
    verdict = classifier.decide(SPEC, accepted(request_body), {"score": score, "label": "injection", "reason": "r"})
    assert not verdict.accepted and verdict.score == score
    assert verdict.reason is not None and f"score {score:g}" in verdict.reason and "injection.classifier" in verdict.reason
    assert [h.rule for h in verdict.rules] == ["injection.classifier"] and verdict.rules[0].score == score
    [event, rejected] = answers(SUBJECT, "acme", verdict, {}, 1)
    assert event.data["outcome"] == "refused" and rejected.type == "task.rejected"
    assert "quarterly" not in event.to_bytes().decode() + rejected.to_bytes().decode()


def test_a_score_under_the_threshold_changes_nothing(request_body: Any) -> None:
    before = accepted(request_body)
    assert classifier.decide(SPEC, before, {"score": 0.79, "label": "benign", "reason": "r"}) == before


@pytest.mark.parametrize("reply", [None, {"error": "the classify call failed: down"}, {"score": "high"},
                                   {"score": 1.5}, {"score": True}, ["not", "an", "object"]])
def test_no_usable_answer_refuses_by_default_and_allows_when_the_policy_says_so(request_body: Any,
                                                                                reply: Any) -> None:
    refused = classifier.decide(SPEC, accepted(request_body), reply)
    assert not refused.accepted and "could not judge this request" in (refused.reason or "")
    assert classifier.UNAVAILABLE in [h.rule for h in refused.rules]
    allowed = classifier.decide(SPEC.model_copy(update={"on_error": "allow"}), accepted(request_body), reply)
    assert allowed.accepted and classifier.UNAVAILABLE in [h.rule for h in allowed.rules]


def test_the_question_carries_the_redacted_input_and_names_the_request(request_body: Any) -> None:
    verdict = accepted(request_body)
    asked = classifier.question(SPEC, "acme", verdict)
    assert asked["purpose"] == "classify" and asked["tenant"] == "acme" and asked["call_id"] == "req-1"
    assert "ana@example.com" not in json.dumps(asked) and "[redacted:email]" in asked["text"]["brief"]


async def test_no_classifier_or_a_refused_request_asks_nothing(request_body: Any) -> None:
    verdict = accepted(request_body)
    assert await classifier.classified(None, None, "acme", verdict) is verdict  # type: ignore[arg-type]
    refused = Verdict(reason="already refused")
    assert await classifier.classified(None, SPEC, "acme", refused) is refused  # type: ignore[arg-type]


def test_the_policy_sets_a_classifier_per_tenant() -> None:
    raw = {"tenants": {"acme": {"input": {"classifier": {"provider": "mock", "model": "mock-1", "threshold": 0.9,
                                                        "on_error": "allow"}}}}}
    policy = policy_from_env(PolicyFile.parse(raw, "policy.yaml"))
    spec = policy.rules("acme").classifier
    assert spec is not None and spec.threshold == 0.9 and spec.on_error == "allow" and spec.timeout_s == 20
    assert policy.rules("other").classifier is None


@pytest.mark.parametrize(("classifier_field", "named"), [
    ({"provider": "mock", "model": "m", "threshold": 1.5}, "threshold"),
    ({"provider": "mock", "model": "m", "on_error": "ignore"}, "on_error"),
    ({"provider": "gpt", "model": "m"}, "provider"),
    ({"provider": "mock", "model": "m", "labels": []}, "labels"),
])
def test_a_bad_classifier_stops_the_service_naming_the_field(classifier_field: dict[str, Any], named: str) -> None:
    raw = {"tenants": {"acme": {"input": {"classifier": classifier_field}}}}
    with pytest.raises(PolicyError) as err:
        policy_from_env(PolicyFile.parse(raw, "policy.yaml"))
    assert "acme" in str(err.value) and "classifier" in str(err.value) and named in str(err.value)
