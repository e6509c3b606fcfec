"""The output gate's grounding judge, pure: an ungrounded output fails or waits for a person naming
`judge.grounding` and the score (never the text); no usable answer follows `on_error` (pause by default); the
stricter of the workflow's and the tenant's judge wins; the judge is asked with the redacted output."""

from __future__ import annotations

from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import NodeOutputProduced
from agent_engine.contracts.policy import JudgeRule, OutputPolicy
from agent_engine.guardrails import grounding
from agent_engine.guardrails.outputgate import answer
from agent_engine.guardrails.outputs import OutputVerdict, check_output, combined

RULE = JudgeRule(provider="mock", model="mock-1")
OUTPUT = {"text": "Revenue rose 41% in 2025, says the zebra-quartz report"}
UNGROUNDED = {"grounded": False, "score": 0.1, "reason": "invents a figure"}
CAUSE = Envelope(id="evt-1", source="test", type="node.output_produced", time="2026-03-01T12:00:00Z",
                 tenant="acme", task_id="task-1", correlation_id="task-1",
                 data={"dispatch_id": "d-1", "node": "write", "attempt": 1, "output": OUTPUT})


def allowed() -> OutputVerdict:
    return check_output(OUTPUT, OutputPolicy(), ("email",))


@pytest.mark.parametrize("reply", [UNGROUNDED, {"grounded": True, "score": 0.3, "reason": "thin"},
                                   {"grounded": False, "score": 0.9, "reason": "contradicts"}])
def test_an_ungrounded_output_fails_naming_the_rule_and_score(reply: dict[str, Any]) -> None:
    verdict = grounding.decide(RULE, allowed(), reply)
    assert verdict.outcome == "refused" and verdict.output is None
    assert [(h.rule, h.score) for h in verdict.rules] == [("judge.grounding", reply["score"])]
    assert "judge.grounding" in verdict.reason and f"score {reply['score']:g}" in verdict.reason
    assert "zebra" not in verdict.reason and "41%" not in verdict.reason
    produced = NodeOutputProduced.model_validate(CAUSE.data)
    [errored, recorded] = answer(CAUSE, produced, verdict)
    assert errored.type == "node.errored" and errored.data["retryable"] is False
    assert recorded.data["rules"] == [{"rule": "judge.grounding", "count": 1, "score": reply["score"]}]
    assert "zebra" not in errored.to_bytes().decode() + recorded.to_bytes().decode()


def test_with_action_pause_an_ungrounded_output_waits_for_a_person_with_its_output() -> None:
    verdict = grounding.decide(RULE.model_copy(update={"action": "pause"}), allowed(), UNGROUNDED)
    assert verdict.outcome == "paused" and verdict.output == OUTPUT and "held for a person" in verdict.reason


def test_a_grounded_output_passes_unchanged() -> None:
    before = allowed()
    assert grounding.decide(RULE, before, {"grounded": True, "score": 0.5, "reason": "ok"}) == before


@pytest.mark.parametrize("reply", [None, {"error": "the ground call failed"}, {"grounded": "yes", "score": 0.9},
                                   {"grounded": True, "score": 2}, "text"])
@pytest.mark.parametrize(("on_error", "outcome"), [("pause", "paused"), ("fail", "refused"), ("allow", "allowed")])
def test_no_usable_answer_follows_on_error(reply: Any, on_error: str, outcome: str) -> None:
    verdict = grounding.decide(RULE.model_copy(update={"on_error": on_error}), allowed(), reply)
    assert verdict.outcome == outcome and grounding.UNAVAILABLE in [h.rule for h in verdict.rules]


def test_the_default_on_error_is_to_pause() -> None:
    assert grounding.decide(RULE, allowed(), None).outcome == "paused"


def test_the_stricter_judge_of_workflow_and_tenant_wins() -> None:
    workflow = OutputPolicy(judge=JudgeRule(provider="mock", model="w", below=0.7, action="pause", on_error="fail"))
    tenant = OutputPolicy(judge=JudgeRule(provider="anthropic", model="t", below=0.4, action="fail"))
    judge = combined(workflow, tenant).judge
    assert judge is not None and (judge.provider, judge.model) == ("anthropic", "t")
    assert (judge.below, judge.action, judge.on_error) == (0.7, "fail", "fail")
    assert combined(OutputPolicy(), tenant).judge == tenant.judge
    assert combined(workflow, OutputPolicy()).judge == workflow.judge
    assert combined(OutputPolicy(), OutputPolicy()).judge is None


def test_the_question_carries_the_redacted_output_and_the_inputs() -> None:
    redacted = check_output({"text": "mail ana@example.com"}, OutputPolicy(), ("email",))
    assert redacted.output is not None
    asked = grounding.question(RULE, CAUSE, redacted.output, {"input": {"brief": "b"}, "upstream": {}})
    assert asked["purpose"] == "ground" and asked["call_id"] == "evt-1" and asked["tenant"] == "acme"
    assert asked["text"] == {"output": {"text": "mail [redacted:email]"},
                             "inputs": {"input": {"brief": "b"}, "upstream": {}}}


async def test_no_judge_a_refused_output_or_a_tool_nodes_output_asks_nothing() -> None:
    produced = NodeOutputProduced.model_validate(
        {**CAUSE.data, "provider": "mock", "llm_calls": [{"provider": "mock", "model": "mock-1", "outcome": "valid"}]})
    tool = NodeOutputProduced.model_validate({**CAUSE.data, "provider": "tool:read_file"})  # no model call
    refused = OutputVerdict("refused", None, [], "refused")
    for rule, made, verdict in ((None, produced, allowed()), (RULE, produced, refused), (RULE, tool, allowed())):
        assert await grounding.judged(None, rule, CAUSE, made, verdict) is verdict  # type: ignore[arg-type]


def test_a_bad_judge_in_a_policy_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="below"):
        OutputPolicy.model_validate({"judge": {"provider": "mock", "model": "m", "below": 0}})
    with pytest.raises(ValueError, match="action"):
        OutputPolicy.model_validate({"judge": {"provider": "mock", "model": "m", "action": "warn"}})


# --- the judge within the node's reservation ---------------------------------------------------------------

def produced_with(budget_usd: str | None, *costs: str | None) -> NodeOutputProduced:
    calls = [{"provider": "mock", "model": "mock-1", "outcome": "valid", "cost_usd": c} for c in costs]
    return NodeOutputProduced.model_validate({**CAUSE.data, "llm_calls": calls, "budget_usd": budget_usd})


@pytest.mark.parametrize(("budget", "costs", "left"), [
    (None, ("0.01",), None),  # no budget: the judge is not limited
    ("0.05", ("0.01", "0.015"), "0.025"),
    ("0.05", ("0.06",), "0"),  # never below nothing
    ("0.05", ("unpriced",), "0"),  # the router counts the whole reservation spent: nothing is left
    ("0.05", (None,), "0.05"),  # a failed call that cost nothing
])
def test_the_judge_may_spend_what_the_nodes_calls_left_of_its_reservation(
        budget: str | None, costs: tuple[str | None, ...], left: str | None) -> None:
    produced = produced_with(budget, *costs)
    assert grounding.allowance_of(produced) == left
    asked = grounding.question(RULE, CAUSE, OUTPUT, {}, grounding.allowance_of(produced))
    assert asked.get("budget_usd") == left


def test_the_judges_call_is_listed_with_the_nodes_so_the_router_settles_both() -> None:
    produced = produced_with("0.05", "0.01")
    judge_call = {"provider": "mock", "model": "mock-1", "outcome": "valid", "cost_usd": "0.002"}
    for reply, kind in (({"grounded": True, "score": 0.9, "reason": "ok", "call": judge_call}, "node.output_checked"),
                        ({**UNGROUNDED, "call": judge_call}, "node.errored")):
        verdict = grounding.decide(RULE, allowed(), reply)
        verdict = type(verdict)(verdict.outcome, verdict.output, verdict.rules, verdict.reason, grounding.call_of(reply))
        sent = answer(CAUSE, produced, verdict)[0]
        assert sent.type == kind
        assert [c["cost_usd"] for c in sent.data["llm_calls"]] == ["0.01", "0.002"]
        assert "budget_usd" not in sent.data and "inputs" not in sent.data


def test_a_reply_without_a_usable_call_lists_none() -> None:
    assert grounding.call_of({"error": "the ground call was not made: over budget"}) == []
    assert grounding.call_of({"call": {"model": 3}}) == []
    assert grounding.call_of(None) == []
