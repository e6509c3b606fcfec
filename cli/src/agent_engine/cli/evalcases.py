"""Golden cases for `agentctl eval`: reading a case file and checking a finished task against its assertions.

Pure: no NATS, no files but the case file and the files it names. `commands/evals.py` runs the tasks.

A case file (YAML), for example examples/map-reduce/evals/summary.yaml:

    name: the summary covers every section     # default: the file's name
    workflow: ..                               # the workflow directory, relative to this file (default: ..)
    input: {document: "..."}                   # or input_file: ../input.json
    provider: mock                             # mock (default): every call must be the mock's; live: any provider
    timeout_s: 60
    expect:
      - status: succeeded
      - node_reached: reduce
      - equals: {path: outputs.sectioner.count, value: 3}
      - contains: {path: outputs.reduce.summary, value: "Durability"}
      - schema_valid: {path: outputs.reduce, schema: ../schemas/summary.json}
      - cost_at_most: "0.05"

A `path` is dotted, into the task's outcome: `status`, `reason`, `exit_node`, `outputs.<node>[.<field>...]`,
`nodes.<node>` (the node's status), `cost_usd`; a number is a list index (`outputs.split.sections.0.heading`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import jsonschema
import yaml

KINDS = ("status", "node_reached", "equals", "contains", "schema_valid", "cost_at_most")
PROVIDERS = ("mock", "live")
TOP_FIELDS = ("name", "workflow", "input", "input_file", "provider", "timeout_s", "expect")
TERMINAL = ("succeeded", "failed", "cancelled", "rejected")
NOT_REACHED = ("pending", "skipped", "subtasks")


class CaseError(Exception):
    """A case file that cannot be run: the message names the file and the field."""


@dataclass(frozen=True)
class Assertion:
    kind: str
    label: str
    """How the table names it, e.g. `equals outputs.sectioner.count`."""
    path: str = ""
    value: Any = None
    schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class Case:
    file: Path
    name: str
    workflow: Path
    input: dict[str, Any]
    provider: str
    timeout_s: float
    expect: list[Assertion] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    case: str
    assertion: str
    passed: bool
    why: str

    def as_json(self) -> dict[str, Any]:
        return {"case": self.case, "assertion": self.assertion, "passed": self.passed, "why": self.why}


def case_files(directory: Path) -> list[Path]:
    """The case files in `directory` (*.yaml, *.yml, sorted), or `directory` itself when it is one file;
    examples/ (a directory of workflows) means every examples/*/evals/."""
    if directory.is_file():
        return [directory]
    if not directory.is_dir():
        raise CaseError(f"{directory}: no such directory or case file")
    found = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not found:
        found = sorted(p for p in directory.glob("*/evals/*.y*ml") if p.is_file())
    if not found:
        raise CaseError(f"{directory}: no case files (*.yaml) in it, nor in */evals/ under it")
    return found


def load_case(path: Path) -> Case:
    """Read and check one case file; a CaseError names the file and the field that is wrong."""
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CaseError(f"{where}: cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # a binary or Latin-1 file among the cases: named, not a traceback
        raise CaseError(f"{where}: cannot be read: not UTF-8 (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise CaseError(f"{where}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise CaseError(f"{where}: a case file is a mapping (name, workflow, input, provider, expect)")
    unknown = sorted(set(map(str, raw)) - set(TOP_FIELDS))
    if unknown:
        raise CaseError(f"{where}: unknown field '{unknown[0]}' (known: {', '.join(TOP_FIELDS)})")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise CaseError(f"{where}: field 'name' must be a non-empty string")
    workflow = raw.get("workflow", "..")
    if not isinstance(workflow, str):
        raise CaseError(f"{where}: field 'workflow' must be a directory path (relative to the case file)")
    workflow_dir = (path.parent / workflow).resolve()
    if not (workflow_dir / "workflow.yaml").is_file():
        raise CaseError(f"{where}: field 'workflow': {workflow_dir} has no workflow.yaml")
    provider = raw.get("provider", "mock")
    if provider not in PROVIDERS:
        raise CaseError(f"{where}: field 'provider' is {provider!r}; write one of: {', '.join(PROVIDERS)}")
    timeout = raw.get("timeout_s", 60)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise CaseError(f"{where}: field 'timeout_s' must be a number of seconds above 0")
    expect = raw.get("expect")
    if not isinstance(expect, list) or not expect:
        raise CaseError(f"{where}: field 'expect' must be a list of at least one assertion ({', '.join(KINDS)})")
    return Case(path, name, workflow_dir, _input(path, raw), provider, float(timeout),
                [_assertion(path, f"expect[{i}]", item) for i, item in enumerate(expect)])


def _input(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    if "input" in raw and "input_file" in raw:
        raise CaseError(f"{path}: give 'input' or 'input_file', not both")
    value: Any = raw.get("input", {})
    if "input_file" in raw:
        name = raw["input_file"]
        if not isinstance(name, str):
            raise CaseError(f"{path}: field 'input_file' must be a file path (relative to the case file)")
        try:
            value = json.loads((path.parent / name).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CaseError(f"{path}: field 'input_file': {path.parent / name}: {exc.strerror}") from None
        except ValueError as exc:
            raise CaseError(f"{path}: field 'input_file': {path.parent / name} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CaseError(f"{path}: the task input must be a JSON object (a mapping)")
    return value


def _assertion(path: Path, at: str, item: Any) -> Assertion:
    if not isinstance(item, dict) or len(item) != 1:
        raise CaseError(f"{path}: {at} must be a mapping with one key, one of: {', '.join(KINDS)}")
    ((kind, body),) = item.items()
    if kind not in KINDS:
        raise CaseError(f"{path}: {at}: unknown assertion '{kind}' (known: {', '.join(KINDS)})")
    where = f"{path}: {at}.{kind}"
    if kind == "status":
        if body not in TERMINAL:
            raise CaseError(f"{where} must be one of: {', '.join(TERMINAL)}")
        return Assertion(kind, f"status {body}", value=body)
    if kind == "node_reached":
        if not isinstance(body, str) or not body:
            raise CaseError(f"{where} must name a node")
        return Assertion(kind, f"node_reached {body}", value=body)
    if kind == "cost_at_most":
        try:
            limit = Decimal(str(body))
        except InvalidOperation:
            limit = Decimal(-1)
        if isinstance(body, bool) or not limit.is_finite() or limit < 0:
            raise CaseError(f"{where} must be an amount in USD such as 0.05")
        return Assertion(kind, f"cost_at_most {body}", value=limit)
    second = "schema" if kind == "schema_valid" else "value"
    if not isinstance(body, dict):
        raise CaseError(f"{where} must be a mapping with 'path' and '{second}'")
    extra = sorted(set(body) - {"path", second})
    if extra:
        raise CaseError(f"{where}: unknown field '{extra[0]}'")
    target = body.get("path")
    if not isinstance(target, str) or not target:
        raise CaseError(f"{where}.path is required: a dotted path such as outputs.<node>.<field>")
    if kind == "schema_valid":
        return Assertion(kind, f"{kind} {target}", path=target, schema=_schema(path, where, body.get("schema")))
    if "value" not in body:
        raise CaseError(f"{where}.value is required")
    if kind == "contains" and not isinstance(body["value"], str | int | float | bool | dict) \
            and body["value"] is not None:
        raise CaseError(f"{where}.value must be a string (found in text), or an item of a list")
    return Assertion(kind, f"{kind} {target}", path=target, value=body["value"])


def _schema(path: Path, where: str, given: Any) -> dict[str, Any]:
    """An inline JSON Schema, or one read from a file named relative to the case file; checked to be a schema."""
    schema: Any = given
    if isinstance(given, str):
        try:
            schema = json.loads((path.parent / given).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CaseError(f"{where}.schema: {path.parent / given}: {exc.strerror}") from None
        except ValueError as exc:
            raise CaseError(f"{where}.schema: {path.parent / given} is not JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise CaseError(f"{where}.schema is required: a JSON Schema (a mapping) or a file path")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise CaseError(f"{where}.schema is not a valid JSON Schema: {exc.message}") from None
    return schema


MISSING = object()


def lookup(outcome: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of the outcome, or MISSING."""
    current: Any = outcome
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return MISSING
    return current


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def check(assertion: Assertion, outcome: dict[str, Any]) -> tuple[bool, str]:
    """Whether the outcome of a task passes one assertion, and why (what was found)."""
    if assertion.kind == "status":
        status = outcome.get("status")
        reason = f": {outcome['reason']}" if status != assertion.value and outcome.get("reason") else ""
        return status == assertion.value, f"status is {status}{reason}"
    if assertion.kind == "node_reached":
        node = str(assertion.value)
        status = outcome.get("nodes", {}).get(node)
        if node == outcome.get("exit_node"):
            return True, f"the task ended at exit node {node}"
        if status is None:
            return False, f"the task has no node '{node}'"
        return status not in NOT_REACHED, f"node {node} is {status}"
    if assertion.kind == "cost_at_most":
        cost = Decimal(str(outcome.get("cost_usd", "0")))
        unpriced = int(outcome.get("unpriced_calls", 0))
        if unpriced:
            return False, f"{unpriced} call(s) have no price, so the cost is not known (priced calls: {cost} USD)"
        return cost <= assertion.value, f"cost {cost} USD"
    found = lookup(outcome, assertion.path)
    if found is MISSING:
        return False, f"nothing at {assertion.path}"
    if assertion.kind == "equals":
        return found == assertion.value, f"found {_show(found)}" + (
            "" if found == assertion.value else f", expected {_show(assertion.value)}")
    if assertion.kind == "contains":
        if isinstance(found, str):
            ok = isinstance(assertion.value, str) and assertion.value in found
        elif isinstance(found, list | dict):
            ok = assertion.value in found
        else:
            ok = False
        return ok, f"{_show(found)} {'contains' if ok else 'does not contain'} {_show(assertion.value)}"
    assert assertion.schema is not None
    errors = sorted(jsonschema.Draft202012Validator(assertion.schema).iter_errors(found), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        at = ".".join(str(p) for p in first.path)
        return False, f"not valid{' at ' + at if at else ''}: {first.message[:120]}"
    return True, "valid against the schema"


def outcome_of(shown: dict[str, Any], costs: list[str]) -> dict[str, Any]:
    """What assertions look at, from `task show` and the task's call costs (the strings llm.called recorded,
    "unpriced" for a call with no price)."""
    priced = [Decimal(c) for c in costs if c != "unpriced"]
    return {
        "status": shown.get("status"), "reason": shown.get("reason") or "", "exit_node": shown.get("exit_node"),
        "outputs": {n["node"]: n.get("output") for n in shown.get("nodes", []) if n.get("output") is not None},
        "nodes": {n["node"]: n.get("status") for n in shown.get("nodes", [])},
        "cost_usd": str(sum(priced, Decimal(0))), "unpriced_calls": len(costs) - len(priced),
    }
