"""Loading a workflow directory: errors name the file (and node); the revision tracks every file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from agent_engine.runtime.manifests import load


def test_the_example_loads_clean(workflow_dir: Path) -> None:
    loaded = load(workflow_dir)
    assert loaded.errors == []
    assert loaded.manifest is not None
    assert loaded.manifest.name == "research-review"
    assert [n.id for n in loaded.manifest.nodes][:2] == ["gather_context", "interpretation"]
    assert set(loaded.manifest.schemas) == {"interpretation", "decomposition", "planning", "execution", "review"}
    assert loaded.manifest.mock["review"] == [json.loads((workflow_dir / "mock" / "review.json").read_text())]
    assert len(loaded.revision) == 64


def test_mock_file_holding_a_list_is_one_script_per_attempt(workflow_dir: Path) -> None:
    (workflow_dir / "mock" / "review.json").write_text(json.dumps(
        [{"verdict": "reject", "comments": "no"}, {"verdict": "approve", "comments": "ok"}]))
    loaded = load(workflow_dir)
    assert loaded.errors == []
    assert loaded.manifest is not None
    assert [m["verdict"] for m in loaded.manifest.mock["review"]] == ["reject", "approve"]


def test_not_a_directory(tmp_path: Path) -> None:
    loaded = load(tmp_path / "nope")
    assert [(e.rule, e.message) for e in loaded.errors] == [("directory", "is not a directory")]
    assert loaded.manifest is None


def test_missing_workflow_yaml(workflow_dir: Path) -> None:
    (workflow_dir / "workflow.yaml").unlink()
    loaded = load(workflow_dir)
    assert loaded.manifest is None
    assert [(e.file, e.rule) for e in loaded.errors] == [("workflow.yaml", "file")]
    assert "missing" in loaded.errors[0].message


def test_yaml_syntax_error_names_the_file(workflow_dir: Path) -> None:
    (workflow_dir / "agents.yaml").write_text("agents:\n  interpreter: [unclosed\n")
    loaded = load(workflow_dir)
    assert loaded.manifest is None
    assert [(e.file, e.rule) for e in loaded.errors] == [("agents.yaml", "yaml")]
    assert "\n" not in loaded.errors[0].message


def test_yaml_top_level_must_be_a_mapping(workflow_dir: Path) -> None:
    (workflow_dir / "tools.yaml").write_text("- brief_stats\n")
    loaded = load(workflow_dir)
    assert [(e.file, e.rule, e.message) for e in loaded.errors] == [
        ("tools.yaml", "yaml", "top level must be a mapping")]


def test_json_syntax_error_names_the_schema_file(workflow_dir: Path) -> None:
    (workflow_dir / "schemas" / "review.json").write_text('{"type": "object",')
    loaded = load(workflow_dir)
    assert [(e.file, e.rule) for e in loaded.errors] == [("schemas/review.json", "json")]


def test_model_error_in_a_node_names_the_node(workflow_dir: Path) -> None:
    path = workflow_dir / "workflow.yaml"
    path.write_text(path.read_text().replace("    timeout_s: 120\n", "    timeout_s: -5\n"))
    loaded = load(workflow_dir)
    assert loaded.manifest is None
    assert [(e.file, e.node, e.rule) for e in loaded.errors] == [("workflow.yaml", "execution", "schema")]
    assert "timeout_s" in loaded.errors[0].message


def test_unknown_key_in_a_node_names_the_node(workflow_dir: Path) -> None:
    path = workflow_dir / "workflow.yaml"
    path.write_text(path.read_text().replace("    agent: reviewer\n", "    agent: reviewer\n    retries: 3\n"))
    errors = load(workflow_dir).errors
    assert [(e.file, e.node, e.rule) for e in errors] == [("workflow.yaml", "review", "schema")]
    assert "retries" in errors[0].message


def test_model_error_in_an_agent_names_agents_yaml(workflow_dir: Path) -> None:
    path = workflow_dir / "agents.yaml"
    path.write_text(path.read_text().replace("max_tokens: 4096", "max_tokens: lots"))
    errors = load(workflow_dir).errors
    assert [(e.file, e.rule) for e in errors] == [("agents.yaml", "schema")]
    assert "agents.executor.max_tokens" in errors[0].message


def test_model_error_in_a_mock_file_names_the_mock_file(workflow_dir: Path) -> None:
    (workflow_dir / "mock" / "review.json").write_text('["approve"]')
    errors = load(workflow_dir).errors
    assert [(e.file, e.rule) for e in errors] == [("mock/review.json", "schema")]


def test_graph_errors_come_back_with_the_manifest(workflow_dir: Path) -> None:
    path = workflow_dir / "workflow.yaml"
    path.write_text(path.read_text().replace("agent: planner", "agent: plannr"))
    loaded = load(workflow_dir)
    assert [(e.file, e.node, e.rule) for e in loaded.errors] == [("workflow.yaml", "planning", "unknown-agent")]


# --- revision ---------------------------------------------------------------------------------

def test_revision_is_stable_and_independent_of_location(workflow_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "copy"
    shutil.copytree(workflow_dir, elsewhere)
    assert load(workflow_dir).revision == load(workflow_dir).revision == load(elsewhere).revision


def test_revision_changes_when_any_file_changes(workflow_dir: Path) -> None:
    seen = {load(workflow_dir).revision}
    for relative in ("workflow.yaml", "agents.yaml", "tools.yaml", "schemas/review.json", "mock/planning.json"):
        path = workflow_dir / relative
        path.write_text(path.read_text() + "\n")
        revision = load(workflow_dir).revision
        assert revision not in seen, f"editing {relative} did not change the revision"
        seen.add(revision)


def test_revision_changes_when_a_file_is_added_or_renamed(workflow_dir: Path) -> None:
    before = load(workflow_dir).revision
    mock = workflow_dir / "mock" / "review.json"
    renamed = workflow_dir / "mock" / "review_old.json"
    mock.rename(renamed)
    after_rename = load(workflow_dir).revision
    assert after_rename != before
    renamed.rename(mock)
    assert load(workflow_dir).revision == before
    (workflow_dir / "schemas" / "extra.json").write_text('{"type": "object"}')
    assert load(workflow_dir).revision != before


def test_files_outside_the_manifest_do_not_change_the_revision(workflow_dir: Path) -> None:
    before = load(workflow_dir).revision
    (workflow_dir / "README.md").write_text("edited")
    (workflow_dir / "input.json").write_text("{}")
    assert load(workflow_dir).revision == before


def test_schemas_that_are_not_json_schemas_are_reported_with_their_file(workflow_dir: Path) -> None:
    target = workflow_dir
    (target / "schemas" / "review.json").write_text('{"type": "objekt"}')
    (target / "tools.yaml").write_text("tools:\n  brief_stats: {builtin: text_stats, args_schema: {type: 12}}\n"
                                       "  word_count: {builtin: text_stats}\n")
    errors = {(e.file, e.rule, e.message.split(":")[0]) for e in load(target).errors}
    assert ("schemas/review.json", "json-schema", "is not a valid JSON Schema at type") in errors
    assert ("tools.yaml", "json-schema", "tool 'brief_stats' args_schema is not a valid JSON Schema at type") in errors


def test_a_schema_nested_too_deeply_to_check_is_named_not_raised(workflow_dir: Path) -> None:
    """Found in review: a schema with hundreds of nested properties made `workflow validate` print a traceback."""
    deep: dict[str, object] = {"type": "string"}
    for _ in range(400):
        deep = {"type": "object", "properties": {"x": deep}}
    path = next((workflow_dir / "schemas").glob("*.json"))
    path.write_text(json.dumps(deep))
    loaded = load(workflow_dir)
    assert any(e.rule == "json-schema" and "nests too deeply to check" in e.message for e in loaded.errors)
