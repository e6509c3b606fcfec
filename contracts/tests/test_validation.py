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
        "mock": {p.stem: [json.loads(p.read_text())] for p in (EXAMPLE / "mock").glob("*.json")},
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


@pytest.mark.parametrize("role", ["BRANCH", "SPLIT", "MERGE"])
def test_role_supported(role: str) -> None:
    b = body()
    node(b, "think")["role"] = role
    errors = errors_of(b)
    assert rules(errors) == {"role-supported"}
    one(errors, "role-supported", node="think", says=f"role {role} is not supported yet")


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
