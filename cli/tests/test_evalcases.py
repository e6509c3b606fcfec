"""Case files for `agentctl eval`: what a malformed one is told (file and field), and each assertion's verdict."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agent_engine.cli.evalcases import CaseError, case_files, check, load_case, outcome_of

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SHOWN = {"status": "succeeded", "reason": "reached EXIT node 'done'", "exit_node": "done", "nodes": [
    {"node": "sectioner", "status": "succeeded", "output": {"count": 3, "topic": "runtimes"}},
    {"node": "reduce", "status": "succeeded", "output": {"summary": "Durability and cost", "largest": "Routing"}},
    {"node": "later", "status": "skipped", "output": None}]}


def write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "wf").mkdir(exist_ok=True)
    (tmp_path / "wf" / "workflow.yaml").write_text("name: x\n")
    case = tmp_path / "wf" / "evals" / "case.yaml"
    case.parent.mkdir(exist_ok=True)
    case.write_text(body)
    return case


def test_every_example_ships_cases_that_load() -> None:
    cases = [load_case(p) for p in case_files(EXAMPLES)]
    assert {c.workflow.name for c in cases} == {p.name for p in EXAMPLES.iterdir() if (p / "workflow.yaml").exists()}
    assert all(c.provider == "mock" and c.input for c in cases)


@pytest.mark.parametrize(("body", "named"), [
    ("expect: [{status: succeeded}]\nprovder: mock\n", "unknown field 'provder'"),
    ("expect: []\n", "field 'expect'"),
    ("provider: recorded\nexpect: [{status: succeeded}]\n", "field 'provider'"),
    ("expect: [{status: done}]\n", "expect[0].status"),
    ("expect: [{status: succeeded}, {equal: {path: status, value: 1}}]\n", "expect[1]: unknown assertion 'equal'"),
    ("expect: [{equals: {value: 1}}]\n", "expect[0].equals.path is required"),
    ("expect: [{equals: {path: status}}]\n", "expect[0].equals.value is required"),
    ("expect: [{cost_at_most: cheap}]\n", "expect[0].cost_at_most"),
    ("expect: [{schema_valid: {path: outputs.a, schema: {type: 12}}}]\n", "expect[0].schema_valid.schema is not a valid"),
    ("expect: [{schema_valid: {path: outputs.a, schema: nope.json}}]\n", "expect[0].schema_valid.schema"),
    ("workflow: elsewhere\nexpect: [{status: succeeded}]\n", "field 'workflow'"),
    ("input: [1]\nexpect: [{status: succeeded}]\n", "must be a JSON object"),
    ("expect: [{status: succeeded}\n", "not valid YAML"),
])
def test_a_malformed_case_file_is_refused_naming_the_file_and_the_field(tmp_path: Path, body: str,
                                                                         named: str) -> None:
    case = write(tmp_path, body)
    with pytest.raises(CaseError) as raised:
        load_case(case)
    assert str(raised.value).startswith(str(case)) and named in str(raised.value)


def test_a_case_defaults_to_the_workflow_above_its_evals_directory(tmp_path: Path) -> None:
    case = load_case(write(tmp_path, "input: {a: 1}\nexpect: [{status: succeeded}]\n"))
    assert case.workflow == (tmp_path / "wf").resolve() and case.name == "case" and case.input == {"a": 1}
    assert case.provider == "mock" and case.timeout_s == 60


def verdict(tmp_path: Path, assertion: str, outcome: dict[str, Any]) -> tuple[bool, str]:
    case = load_case(write(tmp_path, f"expect: [{assertion}]\n"))
    return check(case.expect[0], outcome)


@pytest.mark.parametrize(("assertion", "passed", "why"), [
    ("{status: succeeded}", True, "status is succeeded"),
    ("{status: failed}", False, "status is succeeded: reached EXIT node 'done'"),
    ("{node_reached: reduce}", True, "node reduce is succeeded"),
    ("{node_reached: done}", True, "exit node done"),
    ("{node_reached: later}", False, "node later is skipped"),
    ("{node_reached: nowhere}", False, "no node 'nowhere'"),
    ("{equals: {path: outputs.sectioner.count, value: 3}}", True, "found 3"),
    ("{equals: {path: outputs.sectioner.count, value: 4}}", False, "found 3, expected 4"),
    ("{equals: {path: outputs.sectioner.missing, value: 4}}", False, "nothing at outputs.sectioner.missing"),
    ("{contains: {path: outputs.reduce.summary, value: cost}}", True, "contains"),
    ("{contains: {path: outputs.reduce.summary, value: latency}}", False, "does not contain \"latency\""),
    ("{schema_valid: {path: outputs.reduce, schema: {type: object, required: [summary]}}}", True, "valid"),
    ("{schema_valid: {path: outputs.reduce, schema: {properties: {largest: {type: integer}}}}}", False,
     "not valid at largest"),
    ("{cost_at_most: '0.01'}", True, "cost 0.0075 USD"),
    ("{cost_at_most: '0.005'}", False, "cost 0.0075 USD"),
])
def test_each_assertion_says_what_it_found(tmp_path: Path, assertion: str, passed: bool, why: str) -> None:
    outcome = outcome_of(SHOWN, ["0.005", "0.0025"])
    got = verdict(tmp_path, assertion, outcome)
    assert got[0] is passed and why in got[1]


def test_a_cost_limit_fails_when_a_call_has_no_price(tmp_path: Path) -> None:
    outcome = outcome_of(SHOWN, ["0.001", "unpriced"])
    assert outcome["cost_usd"] == str(Decimal("0.001"))
    passed, why = verdict(tmp_path, "{cost_at_most: '1'}", outcome)
    assert not passed and "1 call(s) have no price" in why


def test_a_case_file_that_is_not_utf8_is_refused_naming_the_file(tmp_path: Path) -> None:
    """Review of issue #16: a binary or Latin-1 file among the cases gave a traceback, not a named error."""
    case = tmp_path / "latin1.yaml"
    case.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(CaseError, match=rf"{case}: cannot be read: not UTF-8"):
        load_case(case)
