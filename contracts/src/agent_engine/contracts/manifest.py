"""Workflow manifest models: what a workflow directory declares, as one validated object.

Loading the YAML files is the CLI's job; these models and `validation` are pure pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent_engine.contracts.builtins import BUILTINS, NON_IDEMPOTENT_BUILTINS, Capability
from agent_engine.contracts.mcp import McpRef, McpToolEntry
from agent_engine.contracts.policy import WorkflowPolicy

Role = Literal["START", "LINEAR", "DECISION", "BRANCH", "SPLIT", "MERGE", "EXIT"]
SUPPORTED_ROLES: frozenset[str] = frozenset({"START", "LINEAR", "DECISION", "BRANCH", "SPLIT", "MERGE", "EXIT"})
Kind = Literal["agent", "tool"]
ExitStatus = Literal["succeeded", "failed"]
Provider = Literal["auto", "mock", "anthropic", "openai"]
ConcreteProvider = Literal["mock", "anthropic", "openai"]


WORKFLOW_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
"""A workflow name: lower case, digits, '-' and '_' (also a token of its registry key)."""

class Condition(BaseModel):
    """Chooses a DECISION edge from the node's output: `field` is a dotted path into it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    field: str = Field(min_length=1)
    equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")

    def matches(self, output: dict[str, Any]) -> bool:
        found, value = lookup(output, self.field)
        if not found:
            return False
        if self.in_ is not None:
            return value in self.in_
        return bool(value == self.equals)


def lookup(data: Any, path: str) -> tuple[bool, Any]:
    """Follow a dotted path through nested objects; (False, None) when any step is missing."""
    current = data
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return False, None
        current = current[part]
    return True, current


class MergeSpec(BaseModel):
    """How a MERGE node joins: when it fires, and how the arrived outputs combine."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["all", "any", "quorum"] = "all"
    """all: every input settled; any: the first output; quorum: `quorum` outputs arrived."""
    quorum: int | None = Field(default=None, ge=1)
    combine: Literal["list", "keyed"] = "list"
    """list: {"items": [outputs in order]}; keyed: {source: output} (a node id, or a SPLIT item index).
    An agent MERGE node gets the combined value as `merged` in its context and its output is the node's."""


class SplitSpec(BaseModel):
    """A SPLIT node's fan-out: one subtask per item of the list at `items` in the node's output."""

    model_config = ConfigDict(extra="forbid")

    items: str = Field(min_length=1)
    """Dotted path into the SPLIT node's output naming the list to fan out over."""
    max_items: int = Field(default=100, ge=1, le=1000)
    """More items than this fails the node (nothing is silently cut)."""
    merge: str = Field(min_length=1)
    """The MERGE node that collects the subtasks; each subtask runs the nodes between the two."""


class ReviseSpec(BaseModel):
    """A bounded loop without a cycle in the graph: when `when` matches this node's output, the
    nodes from `target` to this one run again, with this node's output as `feedback`."""

    model_config = ConfigDict(extra="forbid")

    target: str
    when: Condition
    max_revisions: int | None = Field(default=None, ge=1, le=10)
    """Required (validation names a missing one); after this many revisions the output is routed as usual."""


MemoryLayer = Literal["task", "project", "global"]


class ContextProfile(BaseModel):
    """What one node sees of the task (A4): the input or not, which earlier outputs, and a token budget."""

    model_config = ConfigDict(extra="forbid")

    input: bool = True
    upstream: list[str] | Literal["all", "none"] = "all"
    """Node ids whose outputs the node sees (a tool node's `$nodes.` arguments still resolve from all)."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Budget for the context, in estimated tokens (JSON length / 4); over it the node fails, naming both
    numbers, instead of being cut silently. The agent-runner also counts the prompt exactly where the
    provider offers a count (Anthropic) and refuses a call over the budget."""
    memory: list[MemoryLayer] = Field(default_factory=list)
    """Memory layers the node's prompt includes: task (notes saved earlier in this task), project (the
    workflow's project, across tasks) and global (the tenant's); saved with the memory_save tool."""


class ConfidenceRule(BaseModel):
    """A number in the node's output below which a person looks before the task goes on."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(default="confidence", min_length=1)
    """Dotted path into the output."""
    below: float


class PauseSpec(BaseModel):
    """When a node puts its task in `waiting` for a person (`agentctl approve` / `reject`) instead of going on."""

    model_config = ConfigDict(extra="forbid")

    after_failures: int | None = Field(default=None, ge=1, le=20)
    """This many failed attempts in a row (errors and deadlines): wait instead of retrying or failing.
    Approving gives the node `max_attempts` fresh attempts; rejecting fails it."""
    confidence: ConfidenceRule | None = None
    """An output whose `field` is below `below`, or is no number: wait. Approving accepts the output;
    rejecting fails the node."""


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    role: Role
    kind: Kind | None = None
    agent: str | None = None
    tool: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    status: ExitStatus | None = None
    approval: Literal["none", "required"] = "none"
    """`required`: the task waits (status `waiting`) until an operator approves or rejects the node."""
    timeout_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=20)
    backoff_s: float = Field(default=0.0, ge=0, le=3600)
    """Delay before retry N+1: backoff_s * 2**(N-1), capped at backoff_max_s, times a jitter factor in
    [0.5, 1) derived from the task, node and attempt (deterministic). 0 retries at once."""
    backoff_max_s: float = Field(default=60.0, gt=0, le=86400)
    continue_on_failure: bool = False
    """A failure (after retries) does not fail the task: successors see {"error": reason} as the
    node's output, a MERGE counts it as a failed input; on a SPLIT it covers its subtasks."""
    merge: MergeSpec | None = None
    """MERGE nodes only (default: policy all, combine list)."""
    split: SplitSpec | None = None
    """SPLIT nodes only (required there)."""
    revise: ReviseSpec | None = None
    model: str | None = None
    """For an agent node: this node's model instead of its agent's (tier rules still apply after it)."""
    sees: ContextProfile | None = None
    """Default: the task input and every earlier output, without a budget."""
    pause: PauseSpec | None = Field(default=None, exclude_if=lambda v: v is None)
    """When the task waits for a person: after failures in a row, or on an output of low confidence.
    Left out of the dump when unset (as every field added after tasks were recorded must be), so a replay of
    a task recorded before the field existed stores exactly what it stored then."""
    description: str = ""


class EdgeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    when: Condition | None = None
    default: bool = False


class Fallback(BaseModel):
    """A model to try when the ones before it in the agent's chain failed or their circuit is open."""

    model_config = ConfigDict(extra="forbid")

    provider: ConcreteProvider
    model: str = Field(min_length=1)


class TierRule(BaseModel):
    """Sends an agent's call to another model when it matches (A6); the first matching rule wins.

    `when` tests the dispatch's context: a dotted path starting with `input.` (the task input) or
    `nodes.<id>.` (an earlier node's output, e.g. a classifier agent's). `when_context_over` is the
    context's size in estimated tokens (about four characters each)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    provider: Provider | None = None
    """Default: the agent's provider."""
    when: Condition | None = None
    when_context_over: int | None = Field(default=None, ge=1)
    reason: str = ""


def _unset(value: object) -> bool:
    """Fields added after manifests were first recorded leave a dump out when unset, so a task's pinned manifest
    (kept in its router.input records) dumps as it did when it was recorded and replay stays identical."""
    return value is None or value == "" or value == []


class AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Provider = "auto"
    model: str = "claude-sonnet-4-6"
    system: str = ""
    prompt: str = ""
    output_schema: str | None = None
    max_tokens: int = Field(default=1024, ge=1, le=64000)
    fallbacks: list[Fallback] = Field(default_factory=list, max_length=5)
    """Tried in order after `provider`/`model`; empty by default."""
    fallback_order: Literal["declared", "by_score"] = Field(default="declared", exclude_if=lambda v: v == "declared")
    """declared: the fallbacks are tried in the order written. by_score: the agent-runner orders them by the
    tenant's recent figures (success rate, then cost per call; `agentctl agents stats`); the model that answered
    is recorded in llm.called, so replay and fork stay exact (docs/workflows.md)."""
    max_repairs: int = Field(default=2, ge=0, le=10)
    """How often an output that is not JSON or breaks the schema goes back to the model with the problem."""
    tiers: list[TierRule] = Field(default_factory=list, max_length=10)
    """Rules that pick a cheaper or stronger model per call; the choice and its reason are recorded."""
    tools: list[str] = Field(default_factory=list, max_length=32)
    """Tools (names in tools.yaml) the model may call; each call is recorded and run by the tool-runner."""
    max_tool_turns: int = Field(default=8, ge=1, le=50)
    """Model turns of one node that may ask for tools; in the turn after, the model must answer."""
    summarise_over: int | None = Field(default=None, ge=100)
    """When the earlier tool turns a call carries are over this many estimated tokens, the older ones are
    summarised by the model (the last `keep_turns` stay verbatim) instead of being cut."""
    keep_turns: int = Field(default=2, ge=1, le=20)
    capabilities: list[Capability] | None = Field(default=None, exclude_if=lambda v: v is None)  # [] grants none
    """What the agent's tools may reach (fs.read, fs.write, network, shell). None (absent): every capability,
    so manifests written before capabilities existed keep their meaning; [] grants none."""
    mode: Literal["standard", "analysis-only"] = Field(default="standard", exclude_if=lambda v: v == "standard")
    """analysis-only: no tool with side effects, nor one needing fs.write or shell."""

    def granted(self) -> frozenset[str] | None:
        return None if self.capabilities is None else frozenset(self.capabilities)


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    builtin: str = Field(default="", exclude_if=_unset)
    mcp: McpRef | None = Field(default=None, exclude_if=_unset)
    """A tool of an MCP server the deployment declares (AE_MCP_SERVERS), instead of a built-in."""
    description: str = ""
    """What a model that may call the tool is told (default: the built-in's, or the MCP server's, description)."""
    side_effects: bool = False
    args_schema: dict[str, Any] | None = None
    """JSON Schema the arguments must satisfy: those edited at approval, and those a model asks for (default for
    a model: the built-in's schema, or the MCP tool's). The tool-runner checks the tool's own schema too."""
    capabilities: list[Capability] = Field(default_factory=list, exclude_if=_unset)
    """What the tool needs beyond its built-in's own (the catalogue's); for an MCP tool, all it needs: the
    server cannot be asked, so whoever writes tools.yaml says."""

    @model_validator(mode="after")
    def _one_kind(self) -> ToolSpec:
        if bool(self.builtin) == (self.mcp is not None):
            raise ValueError("a tool names exactly one of builtin: <name> or mcp: {server: <name>, tool: <name>}")
        return self

    @property
    def runs_as(self) -> str:
        """The name the tool-runner knows it by: the built-in's, or `mcp:<server>/<tool>`."""
        return self.mcp.runs_as if self.mcp is not None else self.builtin

    @property
    def has_side_effects(self) -> bool:
        """Declared, or implied by a built-in that is not idempotent (or, once pinned, by an MCP tool's annotations)."""
        return self.side_effects or self.builtin in NON_IDEMPOTENT_BUILTINS

    def needs(self) -> frozenset[str]:
        """The capabilities this tool needs: its built-in's and those tools.yaml declares."""
        known = BUILTINS.get(self.builtin)
        return frozenset(self.capabilities) | (known.capabilities if known else frozenset())

    def model_schema(self) -> dict[str, Any] | None:
        """The argument schema a model is given and its calls are checked against (None: unknown built-in, or an
        MCP tool whose schema the router has not pinned from the tool-runner's catalogue)."""
        if self.args_schema is not None:
            return self.args_schema
        known = BUILTINS.get(self.builtin)
        return known.args_schema if known else None

    def model_description(self) -> str:
        known = BUILTINS.get(self.builtin)
        return self.description or (known.description if known else "")

    def with_mcp_interface(self, entry: McpToolEntry) -> ToolSpec:
        """This MCP tool with what its server listed filled in where tools.yaml says nothing; side effects when
        either says so (tools.yaml's `side_effects: true` is never undone by a server's hint)."""
        return self.model_copy(update={
            "args_schema": self.args_schema if self.args_schema is not None else entry.input_schema,
            "description": self.description or entry.description,
            "side_effects": self.side_effects or bool(entry.side_effects)})


USD_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,12})?$"
"""Money: an exact decimal in a string, in US dollars (never a float, so sums stay exact)."""


class BudgetSpec(BaseModel):
    """What one task of the workflow may spend on LLM calls (docs/guardrails.md, Budgets). Before each agent
    dispatch the router reserves its worst-case cost against `task_usd`; over it, the node waits or fails."""

    model_config = ConfigDict(extra="forbid")

    task_usd: str = Field(pattern=USD_PATTERN)
    """The most one task may spend, e.g. "0.50"."""
    on_exceed: Literal["wait", "fail"] = "fail"
    """`fail`: the node (and so the task) fails before the call that could go over. `wait`: the node waits
    (task status `waiting`) until a reservation of the task settles and leaves room; it fails when nothing is
    left to wait for."""
    alert_at: float | None = Field(default=None, gt=0, le=1)
    """Record one `budget.alert` when the task has spent this share of `task_usd` (e.g. 0.8)."""

    @field_validator("task_usd", mode="before")
    @classmethod
    def _money_is_a_string(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f'write it in quotes, e.g. task_usd: "{value}" (money is an exact decimal, never a '
                             "float)")
        return value


class WorkflowManifest(BaseModel):
    """A whole workflow: graph, agents, tools, output schemas and (optional) mock scripts."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=WORKFLOW_NAME_PATTERN)
    description: str = ""
    project: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """The scope of the `project` memory layer (default: the workflow's name); workflows naming the same
    project share it."""
    nodes: list[NodeSpec]
    edges: list[EdgeSpec] = Field(default_factory=list)
    agents: dict[str, AgentSpec] = Field(default_factory=dict)
    tools: dict[str, ToolSpec] = Field(default_factory=dict)
    schemas: dict[str, dict[str, Any]] = Field(default_factory=dict)
    input_schema: str | None = Field(default=None, exclude_if=lambda v: v is None)
    """The name of a schema in `schemas/` every task input must match: guardrails checks it at ingress, on the
    input as sent (before redaction), and refuses a request naming the path and the rule broken. Left out of the
    dump when unset, so the router's replay of tasks stored before the field existed still agrees."""
    mock: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    """Scripted outputs per node for the mock provider: attempt N uses item N (the last repeats)."""
    policy: WorkflowPolicy | None = Field(default=None, exclude_if=lambda v: v is None)
    """Guardrails' checks this workflow asks for for its own tasks (docs/guardrails.md): `tools` (the tool gate,
    copied into every tool dispatch; it can only tighten the tenant's policy) and `output` (output checks). Left
    out of the manifest's JSON when absent, so manifests pinned before the field (and their tasks' replays) read
    the same."""
    budget: BudgetSpec | None = Field(default=None, exclude_if=lambda v: v is None)
    """What one task may spend on LLM calls (absent: no budget, and no reservations are recorded). Left out of the
    dump when unset, so manifests pinned before budgets existed dump (and replay) as they did."""
    approval_answers_gate: bool = Field(default=False, exclude_if=lambda v: not v)
    """Set by the router on the manifest every new task pins (a workflow need not say it): a person's approval of a
    tool node's own `approval: required` also answers the tool gate's hold of that node's calls, so the node is
    asked once (its dispatches carry `tool.approved`; the gate still checks every other rule); and a node a person
    approved that then waits for room in a day budget is not asked again when it is tried again. Tasks pinned
    before the field existed lack it and keep asking twice, so their replays decide as they did; left out of the
    dump when false."""

    def with_tool_interfaces(self, mcp: Mapping[str, McpToolEntry] | None = None) -> WorkflowManifest:
        """This manifest with the description and argument schema of every tool offered to an agent written
        out (from the built-ins' catalogue where tools.yaml gives none). The router pins this copy with the
        task, so what its models are offered and how their calls are checked never changes under it.

        `mcp`: the tool-runner's MCP catalogue by key (`<server>.<tool>`); MCP tools found there get their
        description, schema and side effects from it (offered or not: a tool node's side effects matter too).
        Without it MCP tools are left as they are."""
        offered = {name for agent in self.agents.values() for name in agent.tools}
        tools = {}
        for name, tool in self.tools.items():
            if tool.mcp is not None:
                entry = mcp.get(tool.mcp.key) if mcp is not None else None
                if entry is not None:
                    tool = tool.with_mcp_interface(entry)
            elif name in offered and (tool.args_schema is None or not tool.description):
                tool = tool.model_copy(update={"args_schema": tool.model_schema(),
                                               "description": tool.model_description()})
            tools[name] = tool
        return self.model_copy(update={"tools": tools}) if tools != self.tools else self

    def mcp_tools(self) -> list[McpRef]:
        """The MCP tools tools.yaml names, each once."""
        return list({t.mcp.key: t.mcp for t in self.tools.values() if t.mcp is not None}.values())

    def node(self, node_id: str) -> NodeSpec:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def start(self) -> NodeSpec:
        return next(n for n in self.nodes if n.role == "START")

    def successors(self, node_id: str) -> list[EdgeSpec]:
        return [e for e in self.edges if e.from_ == node_id]

    def predecessors(self, node_id: str) -> list[str]:
        return [e.from_ for e in self.edges if e.to == node_id]
