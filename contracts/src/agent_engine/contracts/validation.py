"""Workflow validation: every error names the file, the node and the rule broken."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agent_engine.contracts.manifest import SUPPORTED_ROLES, WorkflowManifest

WORKFLOW_FILE = "workflow.yaml"
AGENTS_FILE = "agents.yaml"
TOOLS_FILE = "tools.yaml"

Report = Callable[..., None]
"""report(node, rule, message, file=...) adds one error."""


@dataclass(frozen=True)
class ManifestError:
    file: str
    node: str | None
    rule: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: node '{self.node}'" if self.node else self.file
        return f"{where}: [{self.rule}] {self.message}"


def validate(manifest: WorkflowManifest, files: Mapping[str, str] | None = None) -> list[ManifestError]:
    """Check the graph and its references; return every problem found (empty means valid).

    `files` maps "workflow", "agents", "tools" to the file names they came from.
    """
    files = files or {}
    wf = files.get("workflow", WORKFLOW_FILE)
    agents_file = files.get("agents", AGENTS_FILE)
    errors: list[ManifestError] = []

    def err(node: str | None, rule: str, message: str, file: str = wf) -> None:
        errors.append(ManifestError(file, node, rule, message))

    ids = [n.id for n in manifest.nodes]
    seen: set[str] = set()
    for node_id in ids:
        if node_id in seen:
            err(node_id, "unique-node-id", "node id is declared more than once")
        seen.add(node_id)
    known = set(ids)

    starts = [n.id for n in manifest.nodes if n.role == "START"]
    if len(starts) != 1:
        err(None, "one-start", f"a workflow needs exactly one START node, found {len(starts)}: {starts}")
    if not any(n.role == "EXIT" for n in manifest.nodes):
        err(None, "has-exit", "a workflow needs at least one EXIT node")

    for edge in manifest.edges:
        for end, label in ((edge.from_, "from"), (edge.to, "to")):
            if end not in known:
                err(end, "edge-endpoint", f"edge {edge.from_} -> {edge.to}: '{label}' names no declared node")

    out: dict[str, list[str]] = {i: [] for i in ids}
    inc: dict[str, list[str]] = {i: [] for i in ids}
    for edge in manifest.edges:
        if edge.from_ in known and edge.to in known:
            out[edge.from_].append(edge.to)
            inc[edge.to].append(edge.from_)

    for node in manifest.nodes:
        _check_node(manifest, node.id, out[node.id], inc[node.id], err, agents_file)

    for name, agent in manifest.agents.items():
        if agent.output_schema and agent.output_schema not in manifest.schemas:
            err(None, "unknown-schema", f"agent '{name}' names output_schema '{agent.output_schema}', "
                f"which is not in schemas/", file=agents_file)

    for node_id in manifest.mock:
        if node_id not in known:
            err(node_id, "unknown-mock-node", "a mock script names a node the workflow does not declare",
                file=f"mock/{node_id}.json")

    cycle = _find_cycle(ids, out)
    if cycle:
        err(cycle[0], "acyclic", "the graph has a cycle: " + " -> ".join(cycle))
    if len(starts) == 1:
        reachable = _reachable(starts[0], out)
        for node_id in ids:
            if node_id not in reachable:
                err(node_id, "reachable", f"node cannot be reached from START node '{starts[0]}'")
    return errors


def _check_node(manifest: WorkflowManifest, node_id: str, succ: list[str], pred: list[str],
                report: Report, agents_file: str) -> None:
    node = manifest.node(node_id)
    if node.role not in SUPPORTED_ROLES:
        report(node.id, "role-supported",
               f"role {node.role} is not supported yet; this engine runs {sorted(SUPPORTED_ROLES)}")
        return
    if node.role == "EXIT":
        if succ:
            report(node.id, "role-arity", f"EXIT node must have no successors, has {succ}")
        if node.status is None:
            report(node.id, "exit-status", "EXIT node must declare status: succeeded or failed")
        if node.kind is not None:
            report(node.id, "exit-kind", "EXIT node does no work; remove its kind")
        if node.approval == "required":
            report(node.id, "exit-approval", "EXIT node does no work to approve; remove approval")
        return
    if node.role == "START" and pred:
        report(node.id, "role-arity", f"START node must have no predecessors, has {pred}")
    if node.status is not None:
        report(node.id, "exit-status", "only EXIT nodes declare a status")
    if node.role in ("START", "LINEAR") and len(succ) != 1:
        report(node.id, "role-arity", f"{node.role} node must have exactly one successor, has {len(succ)}")
    if node.role == "DECISION":
        _check_decision(manifest, node_id, succ, report)
    if node.kind is None:
        report(node.id, "node-kind", "node must declare kind: agent or tool")
    elif node.kind == "agent":
        if not node.agent:
            report(node.id, "agent-ref", "agent node must name an agent")
        elif node.agent not in manifest.agents:
            report(node.id, "unknown-agent", f"agent '{node.agent}' is not declared in {agents_file}")
    elif node.kind == "tool":
        if not node.tool:
            report(node.id, "tool-ref", "tool node must name a tool")
        elif node.tool not in manifest.tools:
            report(node.id, "unknown-tool", f"tool '{node.tool}' is not declared in tools.yaml")


def _check_decision(manifest: WorkflowManifest, node_id: str, succ: list[str], report: Report) -> None:
    if len(succ) < 2:
        report(node_id, "role-arity", f"DECISION node must have at least two successors, has {len(succ)}")
    edges = manifest.successors(node_id)
    defaults = [e for e in edges if e.default]
    if len(defaults) > 1:
        report(node_id, "decision-default", "a DECISION node may have at most one default edge")
    for edge in edges:
        if edge.when is None and not edge.default:
            report(node_id, "decision-condition",
                   f"edge {node_id} -> {edge.to} needs a 'when' condition or 'default: true'")
    node = manifest.node(node_id)
    if node.kind == "agent" and node.agent in manifest.agents:
        schema_name = manifest.agents[node.agent].output_schema
        schema = manifest.schemas.get(schema_name or "")
        if schema is not None:
            for edge in edges:
                if edge.when is not None and not _schema_has_path(schema, edge.when.field):
                    report(node_id, "condition-field",
                           f"edge {node_id} -> {edge.to} tests field '{edge.when.field}', "
                           f"which output schema '{schema_name}' does not declare")


def _schema_has_path(schema: dict[str, object], path: str) -> bool:
    current: object = schema
    for part in path.split("."):
        props = current.get("properties") if isinstance(current, dict) else None
        if not isinstance(props, dict) or part not in props:
            return False
        current = props[part]
    return True


def _find_cycle(ids: list[str], out: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in out[node]:
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in ids:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _reachable(start: str, out: dict[str, list[str]]) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for nxt in out[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
