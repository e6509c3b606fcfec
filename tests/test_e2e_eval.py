"""`agentctl eval` end to end (issue 16, item 6): every example's golden cases pass on the mock against a real
stack, and a deliberately wrong expectation fails with exit code 1, naming the case and the assertion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if (p / "evals").is_dir()))
def test_each_examples_golden_cases_pass_on_the_mock(engine, tenant, example):
    ran = engine.agentctl("eval", f"examples/{example}/evals", "--approve-tools", "--tenant", tenant, "--json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report = json.loads(ran.stdout)
    assert report["failed"] == 0 and report["cases"] >= 1
    assertions = {v["assertion"].split()[0] for v in report["verdicts"]}
    assert {"status", "node_reached", "provider"} <= assertions


def test_a_wrong_expectation_fails_with_exit_code_1_naming_the_assertion(engine, tenant, tmp_path):
    workflow = tmp_path / "map-reduce"
    shutil.copytree(EXAMPLES / "map-reduce", workflow)
    case = workflow / "evals" / "summary.yaml"
    case.write_text(case.read_text().replace("value: Routing", "value: Latency"))
    ran = engine.agentctl("eval", str(workflow / "evals"), "--tenant", tenant)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    failed = [line for line in ran.stdout.splitlines() if " FAIL " in line]
    assert len(failed) == 1, ran.stdout
    assert failed[0].startswith("map-reduce summarises every section")
    assert "equals outputs.split.sections.1.heading" in failed[0] and 'found "Routing", expected "Latency"' in failed[0]
    assert ran.stdout.rstrip().endswith("1 failed")


def test_a_malformed_case_file_is_refused_before_anything_runs(engine, tmp_path):
    workflow = tmp_path / "map-reduce"
    shutil.copytree(EXAMPLES / "map-reduce", workflow)
    case = workflow / "evals" / "summary.yaml"
    case.write_text(case.read_text().replace("node_reached:", "node_reched:"))
    ran = engine.agentctl("eval", str(workflow / "evals"))
    assert ran.returncode == 1 and "task" not in ran.stderr.split("agentctl:")[0]
    assert f"{case}: expect[1]: unknown assertion 'node_reched'" in ran.stderr
