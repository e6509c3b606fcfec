"""Workflow validation: one test per rule, each asserting the file, node and rule the error names."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.contracts.validation import ManifestError, validate

EXAMPLE = Path(__file__).parents[2] / "examples" / "research-review"

# fetch (START, tool) -> think (LINEAR, agent) -> judge (DECISION, agent) -> done | failed (EXIT)
BASE: dict[str, Any] = {
    "name": "sample",
    "nodes": [
        {"id": "fetch", "role": "START", "kind": "tool", "tool": "stats", "args": {"text": "$input.text"}},
        {"id": "think", "role": "LINEAR", "kind": "agent", "agent": "thinker"},
        {"id": "judge", "role": "DECISION", "kind": "agent", "agent": "judge"},
        {"id": "done", "role": "EXIT", "status": "succeeded"},
        {"id": "failed", "role": "EXIT", "status": "failed"},
    ],
    "edges": [
        {"from": "fetch", "to": "think"},
        {"from": "think", "to": "judge"},
        {"from": "judge", "to": "done", "when": {"field": "verdict", "equals": "approve"}},
        {"from": "judge", "to": "failed", "default": True},
    ],
    "agents": {
        "thinker": {"provider": "mock", "output_schema": "thoughts"},
        "judge": {"provider": "mock", "output_schema": "verdict"},
    },
    "tools": {"stats": {"builtin": "text_stats"}},
    "schemas": {
        "thoughts": {"type": "object", "properties": {"idea": {"type": "string"}}},
        "verdict": {"type": "object", "required": ["verdict"], "properties": {
            "verdict": {"enum": ["approve", "reject"]},
            "detail": {"type": "object", "properties": {"score": {"type": "number"}}}}},
    },
    "mock": {"think": [{"idea": "x"}]},
}


def body() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def node(b: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in b["nodes"] if n["id"] == node_id)


def edge(b: dict[str, Any], frm: str, to: str) -> dict[str, Any]:
    return next(e for e in b["edges"] if e["from"] == frm and e["to"] == to)


def drop_edge(b: dict[str, Any], frm: str, to: str) -> None:
    b["edges"].remove(edge(b, frm, to))


def errors_of(b: dict[str, Any]) -> list[ManifestError]:
    return validate(WorkflowManifest.model_validate(b))


def rules(errors: list[ManifestError]) -> set[str]:
    return {e.rule for e in errors}


def one(errors: list[ManifestError], rule: str, *, file: str = "workflow.yaml", node: str | None,
        says: str = "") -> ManifestError:
    """The single error for `rule`, checked to name `file` and `node` and to contain `says`."""
    found = [e for e in errors if e.rule == rule]
    assert len(found) == 1, f"expected one [{rule}] error, got: {[str(e) for e in errors]}"
    error = found[0]
    assert (error.file, error.node) == (file, node), str(error)
    assert says in error.message, str(error)
    return error


def test_the_sample_workflow_is_valid() -> None:
    assert errors_of(body()) == []


def test_the_research_review_example_is_valid() -> None:
    workflow = yaml.safe_load((EXAMPLE / "workflow.yaml").read_text())
    manifest = WorkflowManifest.model_validate({
        **workflow,
        "agents": yaml.safe_load((EXAMPLE / "agents.yaml").read_text())["agents"],
        "tools": yaml.safe_load((EXAMPLE / "tools.yaml").read_text())["tools"],
        "schemas": {p.stem: json.loads(p.read_text()) for p in (EXAMPLE / "schemas").glob("*.json")},
        "mock": {p.stem: script if isinstance(script := json.loads(p.read_text()), list) else [script]
                 for p in (EXAMPLE / "mock").glob("*.json")},
    })
    assert validate(manifest) == []


def test_error_text_names_file_node_and_rule() -> None:
    assert str(ManifestError("workflow.yaml", "think", "node-kind", "msg")) == "workflow.yaml: node 'think': [node-kind] msg"
    assert str(ManifestError("agents.yaml", None, "unknown-schema", "msg")) == "agents.yaml: [unknown-schema] msg"


def test_file_names_come_from_the_files_mapping() -> None:
    b = body()
    node(b, "think")["agent"] = "ghost"
    b["agents"]["thinker"]["output_schema"] = "nope"
    errors = validate(WorkflowManifest.model_validate(b), files={"workflow": "flow.yml", "agents": "team.yml"})
    one(errors, "unknown-agent", file="flow.yml", node="think", says="team.yml")
    one(errors, "unknown-schema", file="team.yml", node=None)


# --- graph shape ------------------------------------------------------------------------------

def test_unique_node_id() -> None:
    b = body()
    b["nodes"].append({"id": "think", "role": "LINEAR", "kind": "agent", "agent": "thinker"})
    errors = errors_of(b)
    assert rules(errors) == {"unique-node-id"}
    one(errors, "unique-node-id", node="think", says="more than once")


def test_one_start_none() -> None:
    b = body()
    node(b, "fetch")["role"] = "LINEAR"
    errors = errors_of(b)
    assert rules(errors) == {"one-start"}
    one(errors, "one-start", node=None, says="found 0")


def test_one_start_two() -> None:
    b = body()
    b["nodes"].append({"id": "other", "role": "START", "kind": "tool", "tool": "stats"})
    b["edges"].append({"from": "other", "to": "think"})
    errors = errors_of(b)
    assert rules(errors) == {"one-start"}
    one(errors, "one-start", node=None, says="found 2: ['fetch', 'other']")


def test_has_exit() -> None:
    b = body()
    b["nodes"] = [n for n in b["nodes"] if n["role"] != "EXIT"]
    b["edges"] = [e for e in b["edges"] if e["from"] != "judge"]
    errors = errors_of(b)
    one(errors, "has-exit", node=None, says="at least one EXIT")


@pytest.mark.parametrize(("frm", "to", "bad", "label"), [("think", "nowhere", "nowhere", "to"),
                                                          ("ghost", "done", "ghost", "from")])
def test_edge_endpoint(frm: str, to: str, bad: str, label: str) -> None:
    b = body()
    b["edges"].append({"from": frm, "to": to})
    errors = errors_of(b)
    assert rules(errors) == {"edge-endpoint"}
    one(errors, "edge-endpoint", node=bad, says=f"edge {frm} -> {to}: '{label}' names no declared node")


def test_role_arity_start_without_successor() -> None:
    b = body()
    drop_edge(b, "fetch", "think")
    one(errors_of(b), "role-arity", node="fetch", says="START node must have exactly one successor, has 0")


def test_role_arity_start_with_two_successors() -> None:
    b = body()
    b["edges"].append({"from": "fetch", "to": "judge"})
    errors = errors_of(b)
    assert rules(errors) == {"role-arity"}
    one(errors, "role-arity", node="fetch", says="exactly one successor, has 2")


def test_role_arity_linear_without_successor() -> None:
    b = body()
    drop_edge(b, "think", "judge")
    one(errors_of(b), "role-arity", node="think", says="LINEAR node must have exactly one successor, has 0")


def test_role_arity_linear_with_two_successors() -> None:
    b = body()
    b["edges"].append({"from": "think", "to": "done"})
    errors = errors_of(b)
    assert rules(errors) == {"role-arity"}
    one(errors, "role-arity", node="think", says="LINEAR node must have exactly one successor, has 2")


def test_role_arity_exit_with_successor() -> None:
    b = body()
    b["edges"].append({"from": "done", "to": "failed"})
    errors = errors_of(b)
    assert rules(errors) == {"role-arity"}
    one(errors, "role-arity", node="done", says="EXIT node must have no successors, has ['failed']")


def test_role_arity_decision_with_one_successor() -> None:
    b = body()
    drop_edge(b, "judge", "failed")
    one(errors_of(b), "role-arity", node="judge", says="DECISION node must have at least two successors, has 1")


def test_role_arity_start_with_predecessor() -> None:
    b = body()
    b["nodes"].append({"id": "before", "role": "LINEAR", "kind": "tool", "tool": "stats"})
    b["edges"].append({"from": "before", "to": "fetch"})
    errors = errors_of(b)
    one(errors, "role-arity", node="fetch", says="START node must have no predecessors, has ['before']")


def test_acyclic_names_the_cycle() -> None:
    b = body()
    b["edges"].append({"from": "judge", "to": "think", "when": {"field": "verdict", "equals": "reject"}})
    errors = errors_of(b)
    assert rules(errors) == {"acyclic"}
    one(errors, "acyclic", node="think", says="the graph has a cycle: think -> judge -> think")


def test_reachable() -> None:
    b = body()
    b["nodes"].append({"id": "orphan", "role": "LINEAR", "kind": "tool", "tool": "stats"})
    b["edges"].append({"from": "orphan", "to": "done"})
    errors = errors_of(b)
    assert rules(errors) == {"reachable"}
    one(errors, "reachable", node="orphan", says="cannot be reached from START node 'fetch'")


# --- fan-out, fan-in and loops ---------------------------------------------------------------

def fan_out() -> dict[str, Any]:
    """fetch -> fork (BRANCH) -> a, b -> join (MERGE) -> plan (SPLIT over parts) -> work -> collect (MERGE)
    -> judge -> done | failed; judge may send work back to think... (think sits before fork)."""
    b = body()
    b["nodes"][1:1] = [
        {"id": "fork", "role": "BRANCH", "kind": "tool", "tool": "stats", "args": {"text": "x"}},
        {"id": "a", "role": "LINEAR", "kind": "agent", "agent": "thinker"},
        {"id": "b", "role": "LINEAR", "kind": "agent", "agent": "thinker"},
        {"id": "join", "role": "MERGE", "merge": {"policy": "quorum", "quorum": 2}},
        {"id": "plan", "role": "SPLIT", "kind": "agent", "agent": "planner",
         "split": {"items": "parts", "merge": "collect", "max_items": 10}},
        {"id": "work", "role": "LINEAR", "kind": "agent", "agent": "thinker"},
        {"id": "collect", "role": "MERGE", "kind": "agent", "agent": "thinker"},
    ]
    b["edges"] = [
        {"from": "fetch", "to": "fork"}, {"from": "fork", "to": "a"}, {"from": "fork", "to": "b"},
        {"from": "a", "to": "join"}, {"from": "b", "to": "join"}, {"from": "join", "to": "plan"},
        {"from": "plan", "to": "work"}, {"from": "work", "to": "collect"}, {"from": "collect", "to": "think"},
        *b["edges"][1:],
    ]
    b["agents"]["planner"] = {"provider": "mock", "output_schema": "plan"}
    b["schemas"]["plan"] = {"type": "object", "properties": {"parts": {"type": "array"}, "n": {"type": "integer"}}}
    node(b, "judge")["revise"] = {"target": "think", "when": {"field": "verdict", "equals": "reject"},
                                  "max_revisions": 2}
    return b


def test_every_role_together_is_valid() -> None:
    assert errors_of(fan_out()) == []


def test_branch_arity() -> None:
    b = fan_out()
    b["nodes"].remove(node(b, "b"))
    drop_edge(b, "fork", "b")
    drop_edge(b, "b", "join")
    errors = errors_of(b)
    one(errors, "role-arity", node="fork", says="BRANCH node must have at least two successors, has 1")
    one(errors, "merge-fan-out", node="join")


def test_branch_condition() -> None:
    b = fan_out()
    edge(b, "fork", "a")["when"] = {"field": "x", "equals": 1}
    one(errors_of(b), "branch-condition", node="fork", says="use a DECISION node")


def test_merge_without_a_matching_fan_out() -> None:
    b = fan_out()
    node(b, "fork")["role"] = "DECISION"
    edge(b, "fork", "a")["when"] = {"field": "x", "equals": 1}
    edge(b, "fork", "b")["default"] = True
    one(errors_of(b), "merge-fan-out", node="join", says="must collect a SPLIT")


def test_merge_with_one_input_and_no_split() -> None:
    b = body()
    b["nodes"].insert(1, {"id": "alone", "role": "MERGE"})
    drop_edge(b, "fetch", "think")
    b["edges"] += [{"from": "fetch", "to": "alone"}, {"from": "alone", "to": "think"}]
    one(errors_of(b), "merge-fan-out", node="alone")


def test_merge_quorum_needs_policy_quorum_and_fits_the_inputs() -> None:
    b = fan_out()
    node(b, "join")["merge"] = {"policy": "quorum"}
    one(errors_of(b), "merge-quorum", node="join", says="exactly when merge.policy is quorum")
    node(b, "join")["merge"] = {"policy": "quorum", "quorum": 3}
    one(errors_of(b), "merge-quorum", node="join", says="quorum 3 is more than the 2 inputs")


def test_merge_kind() -> None:
    b = fan_out()
    node(b, "join").update(kind="tool", tool="stats")
    one(errors_of(b), "merge-kind", node="join", says="no kind")


def test_parallel_paths_join_only_at_a_merge() -> None:
    b = fan_out()
    node(b, "join").update(role="LINEAR", kind="agent", agent="thinker")
    del node(b, "join")["merge"]
    errors = errors_of(b)
    one(errors, "join-needs-merge", node="join", says="parallel paths of BRANCH 'fork'")


def test_split_needs_its_spec() -> None:
    b = fan_out()
    del node(b, "plan")["split"]
    errors = errors_of(b)
    one(errors, "split-spec", node="plan", says="split: {items")
    one(errors, "merge-fan-out", node="collect")


def test_split_merge_must_name_a_merge_node() -> None:
    b = fan_out()
    node(b, "plan")["split"]["merge"] = "work"
    errors = errors_of(b)
    one(errors, "split-merge", node="plan", says="'work', which is not a MERGE node")


def test_split_items_must_be_an_array_field_of_the_output_schema() -> None:
    b = fan_out()
    node(b, "plan")["split"]["items"] = "missing"
    one(errors_of(b), "split-items", node="plan", says="does not declare")
    node(b, "plan")["split"]["items"] = "n"
    one(errors_of(b), "split-items", node="plan", says="declares as integer, not an array")


def test_split_body_needs_a_node() -> None:
    b = fan_out()
    drop_edge(b, "plan", "work")
    drop_edge(b, "work", "collect")
    b["nodes"].remove(node(b, "work"))
    b["edges"].append({"from": "plan", "to": "collect"})
    one(errors_of(b), "split-body", node="plan", says="at least one node between")


def test_split_body_cannot_be_entered_from_outside() -> None:
    b = fan_out()
    b["edges"].append({"from": "a", "to": "work"})
    errors = errors_of(b)
    assert "split-body" in rules(errors)
    assert any(e.node == "work" and "entered from ['a']" in e.message for e in errors), [str(e) for e in errors]


def test_split_merge_has_one_predecessor() -> None:
    b = fan_out()
    b["nodes"].append({"id": "work2", "role": "LINEAR", "kind": "agent", "agent": "thinker"})
    node(b, "work")["role"] = "BRANCH"
    b["edges"] += [{"from": "work", "to": "work2"}, {"from": "work2", "to": "collect"}]
    one(errors_of(b), "split-merge-arity", node="collect", says="exactly one predecessor")


def test_loop_without_max_revisions() -> None:
    b = fan_out()
    del node(b, "judge")["revise"]["max_revisions"]
    one(errors_of(b), "loop-bound", node="judge", says="max_revisions")


def test_a_cycle_in_the_edges_points_to_revise() -> None:
    b = body()
    b["edges"].append({"from": "judge", "to": "think", "when": {"field": "verdict", "equals": "reject"}})
    error = one(errors_of(b), "acyclic", node="think")
    assert "revise:" in error.message


def test_revise_target_must_come_before() -> None:
    b = fan_out()
    node(b, "judge")["revise"]["target"] = "nowhere"
    one(errors_of(b), "revise-target", node="judge", says="'nowhere', which is not a node")
    node(b, "judge")["revise"]["target"] = "judge"
    one(errors_of(b), "revise-target", node="judge", says="must come before this node")


def test_revise_segment_stays_linear() -> None:
    b = fan_out()
    node(b, "judge")["revise"]["target"] = "a"
    one(errors_of(b), "revise-segment", node="judge", says="['collect', 'join', 'plan']")


def test_revise_condition_field_is_in_the_schema() -> None:
    b = fan_out()
    node(b, "judge")["revise"]["when"]["field"] = "mood"
    one(errors_of(b), "condition-field", node="judge", says="revise.when tests field 'mood'")


def test_continue_on_failure_is_not_for_decisions() -> None:
    b = body()
    node(b, "judge")["continue_on_failure"] = True
    one(errors_of(b), "continue-on-failure", node="judge")


def test_split_and_merge_fields_only_on_their_roles() -> None:
    b = body()
    node(b, "think")["merge"] = {"policy": "any"}
    node(b, "think")["split"] = {"items": "x", "merge": "done"}
    errors = [e for e in errors_of(b) if e.rule == "role-fields"]
    assert {e.message for e in errors} == {"only SPLIT nodes declare split", "only MERGE nodes declare merge"}


# --- node declarations ------------------------------------------------------------------------

def test_exit_status_missing_on_exit() -> None:
    b = body()
    del node(b, "done")["status"]
    errors = errors_of(b)
    assert rules(errors) == {"exit-status"}
    one(errors, "exit-status", node="done", says="must declare status")


def test_exit_status_on_a_working_node() -> None:
    b = body()
    node(b, "think")["status"] = "succeeded"
    errors = errors_of(b)
    assert rules(errors) == {"exit-status"}
    one(errors, "exit-status", node="think", says="only EXIT nodes declare a status")


def test_exit_kind() -> None:
    b = body()
    node(b, "done")["kind"] = "tool"
    errors = errors_of(b)
    assert rules(errors) == {"exit-kind"}
    one(errors, "exit-kind", node="done")


def test_node_kind() -> None:
    b = body()
    del node(b, "think")["kind"]
    errors = errors_of(b)
    assert rules(errors) == {"node-kind"}
    one(errors, "node-kind", node="think", says="kind: agent or tool")


def test_agent_ref_and_tool_ref() -> None:
    b = body()
    del node(b, "think")["agent"]
    del node(b, "fetch")["tool"]
    errors = errors_of(b)
    assert rules(errors) == {"agent-ref", "tool-ref"}
    one(errors, "agent-ref", node="think")
    one(errors, "tool-ref", node="fetch")


def test_unknown_agent() -> None:
    b = body()
    node(b, "think")["agent"] = "ghost"
    errors = errors_of(b)
    assert rules(errors) == {"unknown-agent"}
    one(errors, "unknown-agent", node="think", says="agent 'ghost' is not declared in agents.yaml")


def test_unknown_tool() -> None:
    b = body()
    node(b, "fetch")["tool"] = "ghost"
    errors = errors_of(b)
    assert rules(errors) == {"unknown-tool"}
    one(errors, "unknown-tool", node="fetch", says="tool 'ghost' is not declared in tools.yaml")


def test_unknown_schema() -> None:
    b = body()
    b["agents"]["thinker"]["output_schema"] = "ghost"
    errors = errors_of(b)
    assert rules(errors) == {"unknown-schema"}
    one(errors, "unknown-schema", file="agents.yaml", node=None,
        says="agent 'thinker' names output_schema 'ghost'")


def test_unknown_mock_node() -> None:
    b = body()
    b["mock"]["ghost"] = [{"idea": "y"}]
    errors = errors_of(b)
    assert rules(errors) == {"unknown-mock-node"}
    one(errors, "unknown-mock-node", file="mock/ghost.json", node="ghost")


# --- decisions --------------------------------------------------------------------------------

def test_decision_condition() -> None:
    b = body()
    del edge(b, "judge", "failed")["default"]
    errors = errors_of(b)
    assert rules(errors) == {"decision-condition"}
    one(errors, "decision-condition", node="judge", says="edge judge -> failed needs a 'when' condition")


def test_decision_default() -> None:
    b = body()
    e = edge(b, "judge", "done")
    del e["when"]
    e["default"] = True
    errors = errors_of(b)
    assert rules(errors) == {"decision-default"}
    one(errors, "decision-default", node="judge", says="at most one default edge")


def test_condition_field() -> None:
    b = body()
    edge(b, "judge", "done")["when"] = {"field": "verdikt", "equals": "approve"}
    errors = errors_of(b)
    assert rules(errors) == {"condition-field"}
    one(errors, "condition-field", node="judge",
        says="tests field 'verdikt', which output schema 'verdict' does not declare")


def test_condition_field_follows_nested_paths() -> None:
    b = body()
    edge(b, "judge", "done")["when"] = {"field": "detail.score", "in": [1, 2]}
    assert errors_of(b) == []
    edge(b, "judge", "done")["when"] = {"field": "detail.missing", "equals": 1}
    one(errors_of(b), "condition-field", node="judge", says="'detail.missing'")


def test_every_problem_is_reported_at_once() -> None:
    b = body()
    node(b, "think")["agent"] = "ghost"
    node(b, "fetch")["tool"] = "ghost"
    b["mock"]["ghost"] = []
    assert rules(errors_of(b)) == {"unknown-agent", "unknown-tool", "unknown-mock-node"}


def test_an_exit_node_cannot_require_approval() -> None:
    from agent_engine.contracts.manifest import NodeSpec, WorkflowManifest
    from agent_engine.contracts.validation import validate

    wf = WorkflowManifest(name="wf", nodes=[
        NodeSpec(id="a", role="START", kind="tool", tool="t"),
        NodeSpec(id="done", role="EXIT", status="succeeded", approval="required")],
        edges=[{"from": "a", "to": "done"}], tools={"t": {"builtin": "text_stats"}})
    errors = validate(wf)
    assert [(e.file, e.node, e.rule) for e in errors] == [("workflow.yaml", "done", "exit-approval")]


def test_tier_condition_names_input_or_a_declared_node() -> None:
    b = body()
    b["agents"]["thinker"]["tiers"] = [
        {"model": "claude-opus-4-1", "when": {"field": "nodes.fetch.words", "equals": 1}},
        {"model": "claude-haiku-4-5", "when": {"field": "input.size", "equals": "small"}},
    ]
    assert errors_of(b) == []
    b["agents"]["thinker"]["tiers"][0]["when"]["field"] = "nodes.nowhere.words"
    one(errors_of(b), "tier-condition", file="agents.yaml", node=None,
        says="agent 'thinker' tier rule 1 tests 'nodes.nowhere.words'")
    b["agents"]["thinker"]["tiers"][0]["when"]["field"] = "words"
    one(errors_of(b), "tier-condition", file="agents.yaml", node=None, says="must start with input.<field>")


def test_context_profile_names_declared_nodes() -> None:
    b = body()
    node(b, "judge")["sees"] = {"input": False, "upstream": ["think", "ghost"], "max_tokens": 500}
    one(errors_of(b), "context-profile", node="judge", says="sees.upstream names ['ghost']")


def test_agent_tools_name_declared_tools_a_model_can_be_offered() -> None:
    b = body()
    b["agents"]["thinker"]["tools"] = ["stats"]
    assert errors_of(b) == []
    b["agents"]["thinker"]["tools"] = ["stats", "ghost"]
    one(errors_of(b), "agent-tools", file="agents.yaml", node=None,
        says="agent 'thinker' lists tool 'ghost', which is not declared in tools.yaml")
    b["agents"]["thinker"]["tools"] = ["stats", "stats"]
    one(errors_of(b), "agent-tools", file="agents.yaml", node=None, says="lists a tool more than once")


def test_a_tool_offered_to_a_model_needs_a_provider_safe_name_and_a_schema() -> None:
    b = body()
    b["tools"]["web.fetch"] = {"builtin": "http_fetch"}
    b["tools"]["custom"] = {"builtin": "my_own_tool"}
    b["agents"]["thinker"]["tools"] = ["web.fetch", "custom"]
    errors = errors_of(b)
    one(errors, "tool-name", file="tools.yaml", node=None, says="tool 'web.fetch' is offered to agent 'thinker'")
    one(errors, "tool-schema", file="tools.yaml", node=None, says="built-in 'my_own_tool' is not one this engine knows")
    b["tools"]["custom"]["args_schema"] = {"type": "object"}
    assert rules(errors_of(b)) == {"tool-name"}
    b["tools"]["custom"]["args_schema"] = {"properties": {"q": {"type": "string"}}}
    one(errors_of(b), "tool-schema", file="tools.yaml", node=None, says='does not say "type": "object" at the top')


def test_the_pinned_manifest_writes_out_what_models_are_offered_and_nothing_else() -> None:
    from agent_engine.contracts.builtins import BUILTINS

    b = body()
    b["tools"]["notes"] = {"builtin": "workspace_read", "description": "Your notes."}
    b["agents"]["thinker"]["tools"] = ["notes"]
    manifest = WorkflowManifest.model_validate(b)
    pinned = manifest.with_tool_interfaces()
    assert pinned.tools["notes"].args_schema == BUILTINS["workspace_read"].args_schema
    assert pinned.tools["notes"].description == "Your notes."  # tools.yaml's words are kept
    assert pinned.tools["stats"] == manifest.tools["stats"]  # not offered to a model: as written
    assert pinned.with_tool_interfaces() is pinned


def test_a_pause_for_confidence_tests_a_number_the_output_schema_declares() -> None:
    b = body()
    node(b, "judge")["pause"] = {"confidence": {"field": "detail.score", "below": 0.5}, "after_failures": 2}
    assert errors_of(b) == []
    node(b, "judge")["pause"] = {"confidence": {"field": "detail.sure", "below": 0.5}}
    one(errors_of(b), "pause-field", node="judge", says="'detail.sure', which output schema 'verdict' does not")
    node(b, "judge").pop("pause")
    node(b, "think")["pause"] = {"confidence": {"field": "idea", "below": 0.5}}
    one(errors_of(b), "pause-field", node="think", says="declares as string, not a number")


def test_an_exit_node_cannot_pause() -> None:
    b = body()
    node(b, "done")["pause"] = {"after_failures": 2}
    one(errors_of(b), "exit-pause", node="done", says="remove pause")


def test_a_pause_field_mistake_is_named() -> None:
    b = body()
    node(b, "judge")["pause"] = {"after_failure": 2}
    with pytest.raises(Exception, match="after_failure"):
        errors_of(b)


def test_an_output_topic_pattern_must_be_a_regular_expression() -> None:
    b = body()
    b["policy"] = {"output": {"pii": "fail", "topics": [{"id": "medical", "pattern": "diagnos\\w*"}]}}
    assert errors_of(b) == []
    b["policy"]["output"]["topics"][0]["pattern"] = "diagnos(is"
    one(errors_of(b), "output-topic", node=None, says="topic 'medical': pattern is not a regular expression")
