"""Workflow validation: every error names the file, the node and the rule broken."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agent_engine.contracts.capabilities import capability_problem
from agent_engine.contracts.graph import find_cycle, predecessors, reachable, reachable_back, successors
from agent_engine.contracts.manifest import SUPPORTED_ROLES, NodeSpec, WorkflowManifest

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


ADVISORY_RULES = frozenset({"condition-field", "split-items", "tool-name", "tool-schema", "context-profile",
                            "reachable", "tier-condition", "unknown-mock-node"})
"""Rules `agentctl workflow validate` enforces for its user's sake (a condition that can never match, a tool a
provider would refuse): the router copes with a workflow that breaks only these, so it still runs one."""


def blocking(manifest: WorkflowManifest) -> list[ManifestError]:
    """The problems that keep the router from running the workflow at all: checked where a manifest comes in
    from outside (the registry, a subtask request), since anyone may have written it."""
    return [e for e in validate(manifest) if e.rule not in ADVISORY_RULES]


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

    out = successors(manifest)
    inc = predecessors(manifest)

    for node in manifest.nodes:
        _check_node(manifest, node.id, out[node.id], inc[node.id], err, agents_file)
        if node.sees is not None and isinstance(node.sees.upstream, list):
            unknown = [n for n in node.sees.upstream if n not in known]
            if unknown:
                err(node.id, "context-profile", f"sees.upstream names {unknown}, which are not nodes of this workflow")

    for name, agent in manifest.agents.items():
        for index, rule in enumerate(agent.tiers, start=1):
            if rule.when is None:
                continue
            root, _, rest = rule.when.field.partition(".")
            node_ref = rest.split(".", 1)[0]
            if root not in ("input", "nodes") or not rest or (root == "nodes" and node_ref not in known):
                err(None, "tier-condition", f"agent '{name}' tier rule {index} tests '{rule.when.field}': it must "
                    "start with input.<field> or nodes.<declared node id>.<field>", file=agents_file)
        if agent.output_schema and agent.output_schema not in manifest.schemas:
            err(None, "unknown-schema", f"agent '{name}' names output_schema '{agent.output_schema}', "
                f"which is not in schemas/", file=agents_file)
        _check_agent_tools(manifest, name, err, agents_file, files.get("tools", TOOLS_FILE))

    if manifest.input_schema is not None and manifest.input_schema not in manifest.schemas:
        err(None, "input-schema", f"input_schema names '{manifest.input_schema}', which is not in schemas/ "
            f"(known: {sorted(manifest.schemas)})")

    output = manifest.policy.output if manifest.policy else None
    for topic in output.topics if output else []:
        try:
            re.compile(topic.pattern)
        except re.error as exc:
            err(None, "output-topic", f"policy.output topic '{topic.id}': pattern is not a regular expression "
                f"({exc})")

    for node_id in manifest.mock:
        if node_id not in known:
            err(node_id, "unknown-mock-node", "a mock script names a node the workflow does not declare",
                file=f"mock/{node_id}.json")

    cycle = find_cycle(ids, out)
    if cycle:
        err(cycle[0], "acyclic", "the graph has a cycle: " + " -> ".join(cycle)
            + "; a loop is declared with `revise:` on the reviewing node, bounded by max_revisions")
    if len(starts) == 1:
        from_start = reachable(starts[0], out)
        for node_id in ids:
            if node_id not in from_start:
                err(node_id, "reachable", f"node cannot be reached from START node '{starts[0]}'")
    if not cycle and len(seen) == len(ids):
        _check_fan_in(manifest, out, inc, err)
        for node in manifest.nodes:
            if node.revise is not None:
                _check_revise(manifest, node, out, inc, err)
    return errors


TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""What the providers accept as a tool's name (Anthropic's rule; OpenAI's is the same)."""


def _check_agent_tools(manifest: WorkflowManifest, name: str, report: Report, agents_file: str,
                       tools_file: str) -> None:
    """An agent's `tools` name declared tools a model can be offered: a provider-safe name and a schema."""
    agent = manifest.agents[name]
    if len(set(agent.tools)) != len(agent.tools):
        report(None, "agent-tools", f"agent '{name}' lists a tool more than once: {agent.tools}", file=agents_file)
    for tool_name in dict.fromkeys(agent.tools):
        tool = manifest.tools.get(tool_name)
        if tool is None:
            report(None, "agent-tools", f"agent '{name}' lists tool '{tool_name}', which is not declared in "
                   f"{tools_file}", file=agents_file)
            continue
        problem = capability_problem(name, agent, tool_name, tool)
        if problem is not None:
            fix = "grant it" if problem.rule == "agent-capability" else "drop the mode"
            report(None, problem.rule, f"{problem.message}; {fix} in {agents_file}, or remove the tool",
                   file=agents_file)
        if not TOOL_NAME.match(tool_name):
            report(None, "tool-name", f"tool '{tool_name}' is offered to agent '{name}', but a model can only be "
                   "offered names of letters, digits, '_' and '-' (at most 64)", file=tools_file)
        schema = tool.model_schema()
        if schema is None and tool.mcp is not None:
            continue  # the MCP server's own schema, pinned from the tool-runner's catalogue when a task starts
        if schema is None:
            report(None, "tool-schema", f"tool '{tool_name}' is offered to agent '{name}', but its built-in "
                   f"'{tool.builtin}' is not one this engine knows; declare its args_schema", file=tools_file)
        elif schema.get("type") != "object":
            report(None, "tool-schema", f"tool '{tool_name}' is offered to agent '{name}', but its args_schema does "
                   "not say \"type\": \"object\" at the top: a model's arguments are always an object",
                   file=tools_file)


def _check_fan_in(manifest: WorkflowManifest, out: dict[str, list[str]], inc: dict[str, list[str]],
                  report: Report) -> None:
    """SPLIT bodies are closed by their MERGE; parallel paths of a BRANCH only join at a MERGE."""
    named: dict[str, str] = {}
    for node in manifest.nodes:
        if node.role != "SPLIT" or node.split is None or len(out[node.id]) != 1:
            continue
        merge = node.split.merge
        if merge not in out or manifest.node(merge).role != "MERGE":
            report(node.id, "split-merge", f"split.merge names '{merge}', which is not a MERGE node of this workflow")
            continue
        if merge in named:
            report(node.id, "split-merge", f"MERGE node '{merge}' already collects SPLIT node '{named[merge]}'")
            continue
        named[merge] = node.id
        entry = out[node.id][0]
        if entry == merge:
            report(node.id, "split-body", "a SPLIT needs at least one node between it and its MERGE")
            continue
        body = reachable(entry, out, stop=merge)
        if merge not in {t for n in body for t in out[n]}:
            report(node.id, "split-body", f"no path from '{entry}' reaches MERGE node '{merge}'")
        if len(inc[merge]) != 1:
            report(merge, "split-merge-arity", f"the MERGE of SPLIT '{node.id}' must have exactly one predecessor "
                   f"(the last node each subtask runs), has {inc[merge]}")
        for inner in sorted(body):
            outside = [p for p in inc[inner] if p not in body and p != node.id]
            if outside:
                report(inner, "split-body", f"node is inside the body of SPLIT '{node.id}' but is also entered "
                       f"from {outside}, outside it")
        _check_split_items(manifest, node, report)
    for node in manifest.nodes:
        if node.role != "MERGE" or node.id in named:
            continue
        upstream_branches = [b for b in reachable_back(node.id, inc) if manifest.node(b).role == "BRANCH"]
        if len(inc[node.id]) < 2 or not upstream_branches:
            report(node.id, "merge-fan-out", "a MERGE node must collect a SPLIT (named by its split.merge) or join "
                   "two or more paths of a BRANCH; this one does neither")
        elif node.merge is not None and node.merge.policy == "quorum" and (node.merge.quorum or 0) > len(inc[node.id]):
            report(node.id, "merge-quorum", f"quorum {node.merge.quorum} is more than the {len(inc[node.id])} "
                   "inputs this MERGE has")
    merges = {n for n in out if manifest.node(n).role == "MERGE"}
    for branch in (n for n in manifest.nodes if n.role == "BRANCH"):
        # where each path of the BRANCH can go before a MERGE closes it (the MERGE itself not counted)
        reach = {s: reachable(s, out, ends=merges) - merges for s in out[branch.id]}
        for node in manifest.nodes:
            if node.role in ("MERGE", "EXIT") or len(inc[node.id]) < 2:  # the first path to an EXIT ends the task
                continue
            sources = {s for s, r in reach.items() if any(p in r for p in inc[node.id])}
            if len(sources) >= 2:
                report(node.id, "join-needs-merge", f"parallel paths of BRANCH '{branch.id}' (through "
                       f"{sorted(sources)}) meet here; join them with a MERGE node")


def _check_split_items(manifest: WorkflowManifest, node: NodeSpec, report: Report) -> None:
    assert node.split is not None
    schema = _output_schema(manifest, node)
    if schema is None:
        return
    found = _schema_at(schema, node.split.items)
    if found is None:
        report(node.id, "split-items", f"split.items names '{node.split.items}', which the node's output schema "
               "does not declare")
    elif found.get("type") not in (None, "array"):
        report(node.id, "split-items", f"split.items names '{node.split.items}', which the output schema "
               f"declares as {found.get('type')}, not an array")


def _check_revise(manifest: WorkflowManifest, node: NodeSpec, out: dict[str, list[str]], inc: dict[str, list[str]],
                  report: Report) -> None:
    rule = node.revise
    assert rule is not None
    if rule.max_revisions is None:
        report(node.id, "loop-bound", "revise needs max_revisions (1-10): a loop must be bounded")
    if rule.target not in out:
        report(node.id, "revise-target", f"revise.target names '{rule.target}', which is not a node of this workflow")
        return
    ahead = reachable(rule.target, out)
    if rule.target == node.id or node.id not in ahead:
        report(node.id, "revise-target", f"revise.target '{rule.target}' must come before this node on its path")
        return
    between = ahead & reachable_back(node.id, inc)
    odd = sorted(n for n in between if manifest.node(n).role in ("BRANCH", "SPLIT", "MERGE"))
    if odd:
        report(node.id, "revise-segment", f"the nodes a revision runs again may not include BRANCH, SPLIT "
               f"or MERGE nodes; this one would include {odd}")
    schema = _output_schema(manifest, node)
    if schema is not None and _schema_at(schema, rule.when.field) is None:
        report(node.id, "condition-field", f"revise.when tests field '{rule.when.field}', which the node's output "
               "schema does not declare")


def _output_schema(manifest: WorkflowManifest, node: NodeSpec) -> dict[str, object] | None:
    if node.kind != "agent" or node.agent not in manifest.agents:
        return None
    return manifest.schemas.get(manifest.agents[node.agent or ""].output_schema or "")


def _check_node(manifest: WorkflowManifest, node_id: str, succ: list[str], pred: list[str],
                report: Report, agents_file: str) -> None:
    node = manifest.node(node_id)
    if node.role not in SUPPORTED_ROLES:
        report(node.id, "role-supported",
               f"role {node.role} is not supported yet; this engine runs {sorted(SUPPORTED_ROLES)}")
        return
    if node.role == "EXIT":
        if node.continue_on_failure or node.revise is not None:
            report(node.id, "exit-fields", "EXIT node does no work: remove continue_on_failure and revise")
        if succ:
            report(node.id, "role-arity", f"EXIT node must have no successors, has {succ}")
        if node.status is None:
            report(node.id, "exit-status", "EXIT node must declare status: succeeded or failed")
        if node.kind is not None:
            report(node.id, "exit-kind", "EXIT node does no work; remove its kind")
        if node.approval == "required":
            report(node.id, "exit-approval", "EXIT node does no work to approve; remove approval")
        if node.pause is not None:
            report(node.id, "exit-pause", "EXIT node does no work to pause on; remove pause")
        return
    if node.role == "START" and pred:
        report(node.id, "role-arity", f"START node must have no predecessors, has {pred}")
    if node.status is not None:
        report(node.id, "exit-status", "only EXIT nodes declare a status")
    if node.role in ("START", "LINEAR", "SPLIT", "MERGE") and len(succ) != 1:
        report(node.id, "role-arity", f"{node.role} node must have exactly one successor, has {len(succ)}")
    if node.role == "DECISION":
        _check_decision(manifest, node_id, succ, report)
        if node.continue_on_failure:
            report(node.id, "continue-on-failure", "a DECISION node cannot continue_on_failure: without an output "
                   "there is no edge to choose")
    if node.role == "BRANCH":
        if len(succ) < 2:
            report(node.id, "role-arity", f"BRANCH node must have at least two successors, has {len(succ)}")
        for edge in manifest.successors(node_id):
            if edge.when is not None or edge.default:
                report(node.id, "branch-condition", f"edge {node_id} -> {edge.to}: a BRANCH runs every successor; "
                       "use a DECISION node to choose one")
    if node.role == "SPLIT" and node.split is None:
        report(node.id, "split-spec", "SPLIT node must declare split: {items: <output field>, merge: <MERGE node>}")
    if node.split is not None and node.role != "SPLIT":
        report(node.id, "role-fields", "only SPLIT nodes declare split")
    if node.merge is not None and node.role != "MERGE":
        report(node.id, "role-fields", "only MERGE nodes declare merge")
    if node.role == "MERGE":
        if node.merge is not None and (node.merge.policy == "quorum") != (node.merge.quorum is not None):
            report(node.id, "merge-quorum", "merge.quorum is given exactly when merge.policy is quorum")
        if node.kind == "tool":
            report(node.id, "merge-kind", "a MERGE node combines by itself (no kind) or with an agent (kind: agent)")
        elif node.kind is None:
            if node.agent or node.tool or node.approval == "required":
                report(node.id, "merge-kind", "a MERGE node without kind does no work: remove agent/tool/approval")
            return
    _check_pause(manifest, node, report)
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


def _check_pause(manifest: WorkflowManifest, node: NodeSpec, report: Report) -> None:
    """A confidence field must be one the node's output schema can hold, as a number."""
    rule = node.pause.confidence if node.pause else None
    schema = _output_schema(manifest, node)
    if rule is None or schema is None:
        return
    found = _schema_at(schema, rule.field)
    if found is None:
        report(node.id, "pause-field", f"pause.confidence tests field '{rule.field}', which output schema "
               f"'{manifest.agents[node.agent or ''].output_schema}' does not declare")
    elif found.get("type") not in ("number", "integer", None):
        report(node.id, "pause-field", f"pause.confidence tests field '{rule.field}', which the output schema "
               f"declares as {found.get('type')}, not a number")


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
    return _schema_at(schema, path) is not None


def _schema_at(schema: dict[str, object], path: str) -> dict[str, object] | None:
    current: object = schema
    for part in path.split("."):
        props = current.get("properties") if isinstance(current, dict) else None
        if not isinstance(props, dict) or part not in props:
            return None
        current = props[part]
    return current if isinstance(current, dict) else {}
