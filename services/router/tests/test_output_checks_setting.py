"""AE_OUTPUT_CHECKS: the tenants every task of which has its outputs checked, pinned with the task's manifest."""

from __future__ import annotations

import pytest
from router_testkit import agent, chain, exit_, manifest, started

from agent_engine.contracts.policy import OutputPolicy, ToolPolicy, WorkflowPolicy
from agent_engine.router.outputchecks import checked, parse


def plain() -> object:
    return manifest([agent("write", role="START"), exit_("done")], chain("write", "done"))


def test_the_setting_names_tenants_or_every_one() -> None:
    assert parse("") == frozenset() and parse(" acme, beta ") == {"acme", "beta"} and parse("*") == {"*"}
    with pytest.raises(SystemExit, match="names \\['no way'\\], which are not tenant names"):
        parse("acme,no way")


def test_a_listed_tenants_task_pins_an_output_policy_that_leaves_the_decision_to_the_tenants_section() -> None:
    wf = plain()
    pinned = checked(wf, "acme", frozenset({"acme"}))  # type: ignore[arg-type]
    assert pinned.policy == WorkflowPolicy(output=OutputPolicy(pii="off"))
    assert started(pinned).dispatch().data["check_output"] == {"pii": "off", "topics": []}
    assert checked(wf, "beta", frozenset({"acme"})) is wf  # type: ignore[arg-type]
    assert checked(wf, "beta", frozenset({"*"})).policy is not None  # type: ignore[arg-type]


def test_a_workflows_own_output_policy_and_tool_policy_are_kept() -> None:
    own = plain().model_copy(update={"policy": WorkflowPolicy(output=OutputPolicy(pii="fail"))})  # type: ignore[attr-defined]
    assert checked(own, "acme", frozenset({"*"})) is own
    tools = plain().model_copy(update={"policy": WorkflowPolicy(tools=ToolPolicy(deny=["python"]))})  # type: ignore[attr-defined]
    pinned = checked(tools, "acme", frozenset({"*"}))
    assert pinned.policy == WorkflowPolicy(tools=ToolPolicy(deny=["python"]), output=OutputPolicy(pii="off"))
