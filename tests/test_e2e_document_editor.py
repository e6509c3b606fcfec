"""The document-editor example (issue 15, item 9) offline with `agentctl run --approve-tools`, on a stack whose
workspace is a scratch copy of the example's: the editor's read of docs/private/ is refused by the workflow's
tool policy and its model goes on with an allowed file; its write waits for approval, which --approve-tools
gives under the credential's name; the write lands once; the reviewer approves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "document-editor"


def test_the_document_editor_runs_offline_confined_by_policy_with_writes_approved(own_stack: Any,
                                                                                  tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    shutil.copytree(EXAMPLE / "workspace", workspace)
    engine = own_stack(AE_TOOL_WORKSPACE=str(workspace))
    ran = engine.agentctl("run", "examples/document-editor", "--tenant", "docs", "--approve-tools",
                          "--input", "@" + str(EXAMPLE / "input.json"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "refused by policy (rule tool.path)" in ran.stdout
    assert "approved append_doc (tool.approval)" in ran.stdout and "--approve-tools" in ran.stdout

    guide = (workspace / "docs" / "guide.md").read_text()
    assert guide.count("## Troubleshooting") == 1  # the approved write ran, once
    task_id = ran.stdout.strip().splitlines()[-1].split()[1]
    history = json.loads(engine.agentctl("task", "history", task_id, "--json").stdout)
    returned = [e["data"] for e in history if e["type"] == "node.tool_returned"]
    refused = [r for r in returned if r.get("refusal")]
    assert [(r["node"], r["tool"], r["refusal"]["rule"]) for r in refused] == [("edit", "read_doc", "tool.path")]
    [approved] = [e["data"] for e in history if e["type"] == "node.approved"]
    assert approved["rule"] == "tool.approval" and approved["decided_by"]
    assert [e["data"]["exit_node"] for e in history if e["type"] == "task.succeeded"] == ["approved"]
