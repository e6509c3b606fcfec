"""The router's side of MCP tools and capabilities, pure: what a model's call to an MCP tool meets once the
task's manifest is pinned from the tool-runner's catalogue, and what the dispatch tells the tool-runner."""

from __future__ import annotations

from typing import Any

from agent_engine.contracts.events import RequestedCall
from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.contracts.mcp import McpToolEntry
from agent_engine.contracts.validation import blocking
from agent_engine.router.conversation import call_problem, tool_defs
from agent_engine.router.dispatch import dispatched_tool

ADD = McpToolEntry(server="notes", tool="add_note", description="Adds a note.",
                   input_schema={"type": "object", "required": ["title", "text"],
                                 "properties": {"title": {"type": "string"}, "text": {"type": "string"}}},
                   annotations={"readOnlyHint": False})


def manifest(agent: dict[str, Any]) -> WorkflowManifest:
    return WorkflowManifest.model_validate({
        "name": "notes",
        "nodes": [{"id": "scribe", "role": "START", "kind": "agent", "agent": "scribe"},
                  {"id": "done", "role": "EXIT", "status": "succeeded"}],
        "edges": [{"from": "scribe", "to": "done"}],
        "agents": {"scribe": {"provider": "mock", "tools": ["add", "gone"], **agent}},
        "tools": {"add": {"mcp": {"server": "notes", "tool": "add_note"}},
                  "gone": {"mcp": {"server": "notes", "tool": "missing"}}}})


def problem(pinned: WorkflowManifest, name: str, args: dict[str, Any]) -> str:
    return call_problem(pinned, "scribe", pinned.agents["scribe"], RequestedCall(name=name, args=args))


def test_a_pinned_mcp_tool_is_offered_and_checked_with_its_servers_schema() -> None:
    pinned = manifest({}).with_tool_interfaces({"notes.add_note": ADD})
    [add, gone] = tool_defs(pinned, pinned.agents["scribe"])
    assert (add.description, add.input_schema) == ("Adds a note.", ADD.input_schema)
    assert gone.input_schema == {"type": "object"}  # offered, but each call is refused (below), saying why
    assert problem(pinned, "add", {"title": "t"}) == "invalid arguments for tool 'add': (root): 'text' is a required property"
    assert problem(pinned, "add", {"title": "t", "text": "x"}) == ""
    assert "was not in the tool-runner's MCP catalogue when this task started" in problem(pinned, "gone", {})
    tool = dispatched_tool(pinned, "add", {"title": "t", "text": "x"})
    assert (tool.builtin, tool.side_effects) == ("mcp:notes/add_note", True)  # the server's annotations


def test_an_analysis_only_agent_is_refused_an_mcp_tool_whose_server_says_it_has_side_effects() -> None:
    written = manifest({"mode": "analysis-only"})
    assert blocking(written) == []  # as written, nothing says add_note changes anything
    pinned = written.with_tool_interfaces({"notes.add_note": ADD})
    [error] = blocking(pinned)  # the router checks the pinned manifest before a task starts: rejected
    assert (error.rule, error.file) == ("agent-mode", "agents.yaml")
    assert "agent 'scribe' is analysis-only and may not use tool 'add': it has side effects" in error.message
    assert problem(pinned, "add", {"title": "t", "text": "x"}) == (  # and each call, should one get that far
        "agent 'scribe' is analysis-only and may not use tool 'add': it has side effects")


# --- a server the deployment keeps to other tenants ----------------------------------------------------------

KEPT = ADD.model_copy(update={"tenants": ["acme"]})


def test_a_task_naming_a_tool_of_a_server_kept_from_its_tenant_is_rejected_naming_tool_and_tenant() -> None:
    from agent_engine.router.core import apply, replay
    from agent_engine.router.records import Resolved, RouterInput, input_from_record
    from agent_engine.router.state import TaskState
    from agent_engine.runtime.mcp_catalogue import withheld

    written = manifest({})
    found = {"notes.add_note": KEPT}
    assert withheld(written, found, "acme") == ()
    assert withheld(written, found, "globex") == ("add",)  # "gone" is in no catalogue entry: not withheld
    accepted = RouterInput(envelope("globex"), Resolved("rev1", written.with_tool_interfaces({})),
                           withheld=("add",))
    _, records = apply(TaskState(), accepted)
    assert [r.type for r in records] == ["router.input", "task.rejected"]
    assert records[1].data["reason"] == (
        "tool 'add' (MCP server 'notes') is not available to tenant 'globex': the deployment's MCP servers "
        "(AE_MCP_SERVERS) are declared for other tenants only")
    assert records[0].data["withheld"] == ["add"] and input_from_record(records[0]).withheld == ("add",)
    assert replay(records) == records  # what the catalogue said is recorded: replay needs no catalogue


def test_an_input_with_nothing_withheld_is_stored_as_before() -> None:
    """Tasks pinned before servers had tenants replay exactly: no `withheld` key unless something was."""
    from agent_engine.router.core import apply
    from agent_engine.router.records import Resolved, RouterInput, input_from_record
    from agent_engine.router.state import TaskState

    _, records = apply(TaskState(), RouterInput(envelope("acme"), Resolved("rev1", manifest({}))))
    assert "withheld" not in records[0].data and input_from_record(records[0]).withheld is None
    assert "task.started" in [r.type for r in records]


def envelope(tenant: str) -> Any:
    from datetime import UTC, datetime

    from agent_engine.contracts.envelope import Envelope

    return Envelope(id="accept-1", source="test", type="task.accepted", time=datetime(2026, 1, 1, tzinfo=UTC),
                    tenant=tenant, task_id="task-1", correlation_id="c-1",
                    data={"workflow": "notes", "input": {}})
