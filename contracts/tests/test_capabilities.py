"""Capabilities (T3) and MCP tools in manifests: what each built-in needs, what an agent is granted, analysis-only
agents, and how an MCP tool's interface is pinned from the tool-runner's catalogue."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from test_validation import body, errors_of, one, rules

from agent_engine.contracts.builtins import BUILTINS
from agent_engine.contracts.capabilities import capability_problem
from agent_engine.contracts.manifest import AgentSpec, ToolSpec, WorkflowManifest
from agent_engine.contracts.mcp import McpToolEntry


def test_each_builtin_declares_what_it_needs() -> None:
    needs = {name: set(b.capabilities) for name, b in BUILTINS.items()}
    assert needs == {"text_stats": set(), "workspace_list": {"fs.read"}, "workspace_read": {"fs.read"},
                     "workspace_append": {"fs.write"}, "http_fetch": {"network"}, "python": {"shell"},
                     "memory_save": set(), "memory_search": set()}


def test_an_agent_without_capabilities_keeps_every_one_so_old_manifests_stay_valid() -> None:
    agent = AgentSpec()
    for name in BUILTINS:
        assert capability_problem("a", agent, name, ToolSpec(builtin=name)) is None


def with_tools(agent: dict[str, Any], **tools: dict[str, Any]) -> dict[str, Any]:
    b = body()
    b["tools"].update(tools)
    b["agents"]["thinker"].update(agent)
    b["agents"]["thinker"]["tools"] = list(tools)
    return b


def test_validate_refuses_a_tool_needing_a_capability_the_agent_is_not_granted() -> None:
    b = with_tools({"capabilities": ["fs.read"]}, notes={"builtin": "workspace_read"}, fetch={"builtin": "http_fetch"})
    one(errors_of(b), "agent-capability", file="agents.yaml", node=None,
        says="agent 'thinker' may not use tool 'fetch': it needs capability 'network', which the agent is not "
             "granted (capabilities: ['fs.read'])")
    b["agents"]["thinker"]["capabilities"] = ["fs.read", "network"]
    assert errors_of(b) == []
    b["agents"]["thinker"]["capabilities"] = []  # none at all: only tools needing nothing
    assert {e.message.split(":")[0] for e in errors_of(b)} == {
        "agent 'thinker' may not use tool 'notes'", "agent 'thinker' may not use tool 'fetch'"}


def test_a_tools_yaml_entry_adds_capabilities_and_an_mcp_tool_has_only_those_it_declares() -> None:
    b = with_tools({"capabilities": ["fs.read"]}, snippet={"builtin": "text_stats", "capabilities": ["network"]},
                   search={"mcp": {"server": "web", "tool": "search"}, "capabilities": ["network"]},
                   notes={"mcp": {"server": "notes", "tool": "list_notes"}})
    errors = errors_of(b)
    assert rules(errors) == {"agent-capability"}
    assert sorted(e.message.split("'")[3] for e in errors) == ["search", "snippet"]


def test_an_analysis_only_agent_may_not_use_tools_that_change_anything() -> None:
    b = with_tools({"mode": "analysis-only"}, stats={"builtin": "text_stats"}, read={"builtin": "workspace_read"},
                   fetch={"builtin": "http_fetch"})
    assert errors_of(b) == []  # reading and fetching are analysis
    for tool, why in ((({"builtin": "workspace_append"}), "it needs capability 'fs.write'"),
                      (({"builtin": "python"}), "it needs capability 'shell'"),
                      (({"builtin": "text_stats", "side_effects": True}), "it has side effects"),
                      (({"mcp": {"server": "notes", "tool": "add_note"}, "side_effects": True}), "it has side effects")):
        b = with_tools({"mode": "analysis-only"}, change=tool)
        one(errors_of(b), "agent-mode", file="agents.yaml", node=None,
            says=f"agent 'thinker' is analysis-only and may not use tool 'change': {why}")


def test_unknown_capabilities_and_modes_are_refused_when_loading() -> None:
    with pytest.raises(ValidationError, match="capabilities.0"):
        AgentSpec.model_validate({"capabilities": ["disk"]})
    with pytest.raises(ValidationError, match="mode"):
        AgentSpec.model_validate({"mode": "read-only"})


def test_a_tool_is_a_builtin_or_an_mcp_tool_exactly() -> None:
    with pytest.raises(ValidationError, match="exactly one of builtin"):
        ToolSpec.model_validate({"builtin": "text_stats", "mcp": {"server": "notes", "tool": "add_note"}})
    with pytest.raises(ValidationError, match="exactly one of builtin"):
        ToolSpec.model_validate({"description": "nothing to run"})
    with pytest.raises(ValidationError, match="server"):
        ToolSpec.model_validate({"mcp": {"server": "Notes Server", "tool": "add_note"}})
    assert ToolSpec.model_validate({"mcp": {"server": "notes", "tool": "add_note"}}).runs_as == "mcp:notes/add_note"


ADD_NOTE = McpToolEntry(server="notes", tool="add_note", description="Adds a note.",
                        input_schema={"type": "object", "required": ["title"],
                                      "properties": {"title": {"type": "string"}}},
                        annotations={"readOnlyHint": False, "idempotentHint": False})
LIST_NOTES = McpToolEntry(server="notes", tool="list_notes", input_schema={"type": "object"},
                          annotations={"readOnlyHint": True})


def test_an_mcp_tool_needs_no_args_schema_to_validate_and_is_pinned_from_the_catalogue() -> None:
    b = with_tools({}, add={"mcp": {"server": "notes", "tool": "add_note"}},
                   notes={"mcp": {"server": "notes", "tool": "list_notes"}, "description": "Our notes."},
                   ghost={"mcp": {"server": "notes", "tool": "gone"}})
    assert errors_of(b) == []  # the schema comes from the server when a task starts
    manifest = WorkflowManifest.model_validate(b)
    assert manifest.with_tool_interfaces() == manifest  # without the catalogue: left as written
    pinned = manifest.with_tool_interfaces({e.server + "." + e.tool: e for e in (ADD_NOTE, LIST_NOTES)})
    add, notes, ghost = pinned.tools["add"], pinned.tools["notes"], pinned.tools["ghost"]
    assert (add.args_schema, add.description, add.has_side_effects) == (ADD_NOTE.input_schema, "Adds a note.", True)
    assert (notes.description, notes.has_side_effects) == ("Our notes.", False)  # tools.yaml's words kept
    assert ghost.model_schema() is None  # not in the catalogue: the router refuses calls to it, saying why
    assert [r.key for r in manifest.mcp_tools()] == ["notes.add_note", "notes.list_notes", "notes.gone"]


def test_a_server_hint_never_undoes_side_effects_tools_yaml_declares() -> None:
    spec = ToolSpec.model_validate({"mcp": {"server": "notes", "tool": "list_notes"}, "side_effects": True})
    assert spec.with_mcp_interface(LIST_NOTES).has_side_effects
    plain = ToolSpec.model_validate({"mcp": {"server": "notes", "tool": "list_notes"}})
    no_hints = LIST_NOTES.model_copy(update={"annotations": None})
    assert not plain.with_mcp_interface(no_hints).has_side_effects  # no hints: tools.yaml's flag (false)
    assert plain.with_mcp_interface(ADD_NOTE).has_side_effects


def test_a_pinned_manifest_round_trips_its_capabilities_and_mcp_tools() -> None:
    """What the router records with a task is dumped and parsed again at replay: an agent granted nothing must
    stay granted nothing (not "absent", which grants everything)."""
    b = with_tools({"capabilities": [], "mode": "analysis-only"}, add={"mcp": {"server": "notes", "tool": "add_note"}})
    manifest = WorkflowManifest.model_validate(b)
    again = WorkflowManifest.model_validate(manifest.model_dump(mode="json", by_alias=True))
    assert again == manifest and again.agents["thinker"].granted() == frozenset()
    plain = WorkflowManifest.model_validate(body()).model_dump(mode="json", by_alias=True)
    assert "capabilities" not in plain["agents"]["thinker"] and "mcp" not in plain["tools"]["stats"]
