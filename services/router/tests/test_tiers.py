"""Model tiers (A6): declared rules send an agent call to a cheaper or stronger model, by the node, by
the size of its context, or by an earlier node's output (a classifier agent); the dispatch records
the choice and its reason, and replay makes the same choice."""

from __future__ import annotations

from router_testkit import agent, chain, completed, dumps, exit_, json_round_trip, manifest, started

from agent_engine.contracts.manifest import AgentSpec, Condition, ContextProfile, TierRule
from agent_engine.router.core import replay

TIERED = AgentSpec(provider="mock", model="claude-sonnet-4-6", tiers=[
    TierRule(model="claude-opus-4-1", when=Condition(field="nodes.classify.difficulty", equals="hard"),
             reason="the classifier says hard"),
    TierRule(model="claude-haiku-4-5", provider="anthropic", when_context_over=2000),
])


def workflow(**node_kw: object) -> object:
    agents = {"classifier": AgentSpec(provider="mock", model="claude-haiku-4-5"), "solver": TIERED}
    return manifest([agent("classify", role="START", agent_name="classifier"),
                     agent("solve", agent_name="solver", **node_kw), exit_("done")],
                    chain("classify", "solve", "done"), agents=agents)


def solve_dispatch(difficulty: str, task_input: dict[str, object] | None = None, **node_kw: object) -> dict:
    run = started(workflow(**node_kw), task_input or {"q": "x"})  # type: ignore[arg-type]
    run.feed(completed(run.dispatch("classify"), {"difficulty": difficulty}))
    data = run.dispatch("solve").data
    assert dumps(replay(json_round_trip(run.records))) == dumps(run.records)
    return data


def test_a_classifier_output_sends_the_call_to_the_stronger_model_and_says_why() -> None:
    data = solve_dispatch("hard")
    assert data["agent"]["model"] == "claude-opus-4-1"
    assert data["model_choice"] == {"provider": "mock", "model": "claude-opus-4-1",
                                    "reason": "tier rule 1: the classifier says hard"}


def test_a_large_context_goes_to_the_model_its_rule_names() -> None:
    data = solve_dispatch("easy", {"q": "x" * 9000})
    assert (data["agent"]["provider"], data["agent"]["model"]) == ("anthropic", "claude-haiku-4-5")
    assert data["model_choice"]["reason"].startswith("tier rule 2: context of about ")
    assert data["model_choice"]["reason"].endswith("tokens is over 2000")


def test_without_a_matching_rule_the_node_or_agent_model_is_used() -> None:
    assert solve_dispatch("easy")["model_choice"] == {"provider": "mock", "model": "claude-sonnet-4-6",
                                                      "reason": "the agent's model"}
    assert solve_dispatch("easy", model="claude-sonnet-4-5")["model_choice"]["reason"] == (
        "node 'solve' names its model")


# --- context profiles (A4) --------------------------------------------------------------------

def test_a_context_profile_limits_what_a_node_sees_and_a_budget_fails_it_with_both_numbers() -> None:
    data = solve_dispatch("easy", sees=ContextProfile(input=False, upstream=["classify"]))
    assert data["context"]["input"] == {} and list(data["context"]["upstream"]) == ["classify"]
    assert solve_dispatch("easy", sees=ContextProfile(upstream="none"))["context"]["upstream"] == {}

    run = started(workflow(sees=ContextProfile(max_tokens=20)), {"q": "x" * 400})  # type: ignore[arg-type]
    out = run.feed(completed(run.dispatch("classify"), {"difficulty": "easy"}))
    failed = next(e for e in out if e.type == "node.failed")
    assert "the context for node 'solve' is about" in failed.data["reason"]
    assert "over its budget sees.max_tokens = 20" in failed.data["reason"]
