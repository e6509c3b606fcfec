"""`agentctl workflow validate`, `agentctl --help` and --input parsing: no running stack needed."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from agent_engine.cli.client import CliError
from agent_engine.cli.main import main
from agent_engine.cli.options import parse_input


def test_validate_the_example(workflow_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["workflow", "validate", str(workflow_dir)])
    out = capsys.readouterr()
    assert code == 0
    assert re.fullmatch(rf"{re.escape(str(workflow_dir))}: workflow 'research-review' is valid "
                        r"\(8 nodes, revision [0-9a-f]{12}\)\n", out.out)
    assert out.err == ""


@pytest.mark.parametrize("name", ["workflow.yaml", "agents.yaml", "mock/review.json", "schemas/review.json"])
def test_a_file_that_is_not_utf8_is_named_with_the_rule_not_a_traceback(
        name: str, workflow_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 10: a workflow.yaml or mock/*.json that is not UTF-8 printed a UnicodeDecodeError traceback."""
    path = workflow_dir / name
    path.write_bytes(path.read_bytes()[:5] + b"\xff\xfe" + path.read_bytes()[5:])
    code = main(["workflow", "validate", str(workflow_dir)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert (f"{workflow_dir}/{name}: [encoding] is not UTF-8 text: byte 0xff at offset 5 cannot be decoded; "
            "save it as UTF-8") in err


def test_a_manifest_file_that_cannot_be_read_is_named(workflow_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workflow_dir / "tools.yaml").unlink()
    (workflow_dir / "tools.yaml").mkdir()
    assert main(["workflow", "validate", str(workflow_dir)]) == 1
    assert f"{workflow_dir}/tools.yaml: [file] cannot be read: Is a directory" in capsys.readouterr().err


def test_validate_a_broken_workflow_prints_each_error(workflow_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = workflow_dir / "workflow.yaml"
    text = path.read_text().replace("agent: planner", "agent: plannr").replace("tool: brief_stats", "tool: stats")
    path.write_text(text)
    directory = str(workflow_dir) + "/"  # a trailing slash is not doubled in the output

    code = main(["workflow", "validate", directory])
    out = capsys.readouterr()

    assert code == 1
    assert out.out == ""
    lines = out.err.splitlines()
    assert set(lines[:-1]) == {
        (f"{workflow_dir}/workflow.yaml: node 'gather_context': [unknown-tool] "
         "tool 'stats' is not declared in tools.yaml"),
        (f"{workflow_dir}/workflow.yaml: node 'planning': [unknown-agent] "
         "agent 'plannr' is not declared in agents.yaml"),
    }
    assert lines[-1] == f"agentctl: {directory}: 2 error(s); nothing was pushed or run"


def test_validate_a_file_level_error_has_no_node(workflow_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workflow_dir / "workflow.yaml").unlink()
    assert main(["workflow", "validate", str(workflow_dir)]) == 1
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"{workflow_dir}/workflow.yaml: [file] missing")


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: agentctl")
    for command in ("up", "down", "ps", "workflow", "submit", "run", "tail", "task", "cost"):
        assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), f"{command} missing from --help"


def test_subcommand_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["workflow", "validate", "--help"])
    assert exit_info.value.code == 0
    assert "usage: agentctl workflow validate" in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


# --- --input ----------------------------------------------------------------------------------

def test_parse_input_absent_is_empty() -> None:
    assert parse_input(None) == {}


def test_parse_input_inline_and_from_file(tmp_path: Path) -> None:
    assert parse_input('{"brief": "hi", "n": 2}') == {"brief": "hi", "n": 2}
    path = tmp_path / "input.json"
    path.write_text('{"brief": "from a file"}')
    assert parse_input(f"@{path}") == {"brief": "from a file"}


def test_parse_input_bad_json() -> None:
    with pytest.raises(CliError, match=r"^--input is not valid JSON: "):
        parse_input("{brief: hi}")


def test_parse_input_bad_json_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text("not json")
    with pytest.raises(CliError, match="not valid JSON"):
        parse_input(f"@{path}")


@pytest.mark.parametrize("raw", ["[1, 2]", '"text"', "42", "null"])
def test_parse_input_must_be_an_object(raw: str) -> None:
    with pytest.raises(CliError, match=r"^--input must be a JSON object$"):
        parse_input(raw)


def test_parse_input_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(CliError, match=rf"^--input @{re.escape(str(missing))}: no such file$"):
        parse_input(f"@{missing}")


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(("example", "edit", "expected"), [
    # role arity: a BRANCH left with one successor
    ("committee", lambda t: t.replace("  - {from: convene, to: skeptic}\n", "").replace(
        "  - {from: convene, to: expert}\n", ""),
     "workflow.yaml: node 'convene': [role-arity] BRANCH node must have at least two successors, has 1"),
    # a MERGE without a matching fan-out: the SPLIT no longer names it
    ("map-reduce", lambda t: t.replace("merge: reduce}", "merge: done}"),
     "workflow.yaml: node 'reduce': [merge-fan-out] a MERGE node must collect a SPLIT"),
    # a condition referencing a field the output schema does not declare
    ("supervisor", lambda t: t.replace("when: {field: approved, equals: true}", "when: {field: aproved, equals: true}"),
     "workflow.yaml: node 'review': [condition-field] edge review -> published tests field 'aproved'"),
    # a loop without max_revisions
    ("supervisor", lambda t: t.replace("      max_revisions: 2\n", ""),
     "workflow.yaml: node 'review': [loop-bound] revise needs max_revisions"),
])
def test_validate_names_file_node_and_rule_for_each_kind_of_graph_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], example: str, edit: Callable[[str], str],
        expected: str) -> None:
    target = tmp_path / example
    shutil.copytree(EXAMPLES / example, target)
    workflow = target / "workflow.yaml"
    before = workflow.read_text()
    workflow.write_text(edit(before))
    assert workflow.read_text() != before, "the edit changed nothing"

    assert main(["workflow", "validate", str(target)]) == 1
    err = capsys.readouterr().err
    assert f"{target}/{expected}" in err, err
