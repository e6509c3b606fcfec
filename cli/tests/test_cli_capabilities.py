"""`agentctl workflow validate` and capabilities: an agent listing a tool it may not use is refused, naming the
file, the agent, the tool and the capability; an MCP tool validates without a schema (its server gives it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_engine.cli.main import main


def test_an_agent_listing_a_tool_it_may_not_use_is_refused(workflow_dir: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    tools = workflow_dir / "tools.yaml"
    tools.write_text(tools.read_text() + "  fetch:\n    builtin: http_fetch\n  append:\n    builtin: workspace_append\n")
    agents = workflow_dir / "agents.yaml"
    agents.write_text(agents.read_text().replace(
        "    tools: [word_count]\n",
        "    tools: [word_count, fetch]\n    capabilities: [fs.read]\n"))
    assert main(["workflow", "validate", str(workflow_dir)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"{workflow_dir}/agents.yaml: [agent-capability] agent 'executor' may not use tool 'fetch': "
                      "it needs capability 'network', which the agent is not granted (capabilities: ['fs.read']); "
                      "grant it in agents.yaml, or remove the tool")

    agents.write_text(agents.read_text().replace("tools: [word_count, fetch]\n    capabilities: [fs.read]\n",
                                                 "tools: [word_count, append]\n    mode: analysis-only\n"))
    assert main(["workflow", "validate", str(workflow_dir)]) == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        f"{workflow_dir}/agents.yaml: [agent-mode] agent 'executor' is analysis-only and may not use tool 'append': "
        "it needs capability 'fs.write'; drop the mode in agents.yaml, or remove the tool")


def test_an_mcp_tool_validates_without_a_schema(workflow_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tools = workflow_dir / "tools.yaml"
    tools.write_text(tools.read_text() + "  add_note:\n    mcp: {server: notes, tool: add_note}\n")
    agents = workflow_dir / "agents.yaml"
    agents.write_text(agents.read_text().replace("tools: [word_count]", "tools: [word_count, add_note]"))
    assert main(["workflow", "validate", str(workflow_dir)]) == 0, capsys.readouterr().err
    assert "is valid" in capsys.readouterr().out
