"""One node's lifecycle: its dispatch (with everything a runner needs), the runner's answer, what the
router made of it, retries and deadlines, and approvals.

`node.deadline_expired` and `node.retry_due` are INTERNAL: the router's own timers make them and the router
applies them at once; they are stored as the `input` of a `router.input` record and never published.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent_engine.contracts.artifacts import ArtifactRef
from agent_engine.contracts.events.base import EventData
from agent_engine.contracts.events.tool_use import ConversationSummary, ToolCallRef, ToolDef, ToolRefusal, ToolTurn
from agent_engine.contracts.events.usage import LlmCallNote, Usage
from agent_engine.contracts.manifest import AgentSpec, MemoryLayer
from agent_engine.contracts.policy import OutputPolicy, ToolPolicy


class DispatchedAgent(AgentSpec):
    """An agent as a runner needs it: config plus the resolved output schema, tools and mock script.
    Unlike the manifest model it ignores unknown fields, so an older runner reads a newer dispatch."""

    model_config = ConfigDict(extra="ignore")

    name: str
    output_schema_json: dict[str, Any] | None = None
    mock_responses: list[dict[str, Any]] = Field(default_factory=list)
    tool_defs: list[ToolDef] | None = None
    """The agent's `tools` as the model is offered them (absent when it has none)."""


class DispatchedTool(BaseModel):
    name: str
    builtin: str
    """The built-in's name, or `mcp:<server>/<tool>` for a tool of an MCP server the tool-runner declares."""
    args: dict[str, Any] = Field(default_factory=dict)
    side_effects: bool | None = None
    """True when tools.yaml declares `side_effects: true`: the tool-runner then runs it at most once per
    (task, node), whatever its built-in says. Absent means false; the router leaves it out rather than
    writing false, so dispatches of other tools stay identical to those recorded before the field."""
    project: str | None = None
    """For the memory built-ins: the workflow's project (its `project`, else its name), the scope of the
    project memory layer."""
    policy: ToolPolicy | None = None
    """The workflow's `policy.tools`, copied by the router (only the router may publish dispatches, so the
    tool gate trusts it); the gate checks the call against it as well as the tenant's policy."""
    resumed: int | None = None
    """Set when a person resumed the node after failures (the attempt it was resumed at): a side-effecting tool
    is then a new call for the tool-runner's call log (the person chose to run it again)."""
    approved: bool | None = None
    """True when a person approved this call (`agentctl approve`): the gate does not hold it for approval
    again, though every other rule still applies. Only the router sets it; absent means false."""


class MemoryView(BaseModel):
    """Which memory layers an agent node's prompt includes, and the project they are scoped to."""

    layers: list[MemoryLayer]
    project: str


class NodeContext(BaseModel):
    input: dict[str, Any] = Field(default_factory=dict)
    upstream: dict[str, Any] = Field(default_factory=dict)
    """Outputs of the nodes that already succeeded, by node id."""
    feedback: dict[str, Any] | None = None
    """For a node run again by a reviewer's `revise`: the reviewer's output."""
    revision: int = 0
    merged: dict[str, Any] | None = None
    """For an agent MERGE node: the combined outputs it is to merge."""
    conversation: list[ToolTurn] | None = None
    """For an agent node using tools: its earlier tool turns with their results, oldest first (those before
    `summary.turns` are replaced by the summary)."""
    summary: ConversationSummary | None = None
    summarise: int | None = None
    """Set when the earlier turns grew over the agent's `summarise_over`: the runner first has the model
    summarise the first `summarise` turns of `conversation` (after any `summary`), and reports the summary."""
    token_budget: int | None = None
    """The node's `sees.max_tokens`: the runner counts the prompt exactly where the provider can and refuses
    a call over it (the router's check is an estimate)."""
    memory: MemoryView | None = None
    """The node's `sees.memory`: the agent-runner reads these layers and puts them in the prompt."""


class ModelChoice(BaseModel):
    """Which model an agent dispatch uses and why (the agent's default, the node's, or a tier rule)."""

    provider: str
    model: str
    reason: str


class NodeDispatched(EventData):
    """The router asks a runner to do one node; the dispatch carries all the runner needs."""

    TYPE = "node.dispatched"
    dispatch_id: str
    node: str
    kind: Literal["agent", "tool"]
    attempt: int
    deadline: datetime
    reason: str = "next"
    agent: DispatchedAgent | None = None
    tool: DispatchedTool | None = None
    context: NodeContext = Field(default_factory=NodeContext)
    model_choice: ModelChoice | None = None
    turn: int | None = None
    """An agent dispatch: which model turn of the node this is (absent: the first, 0)."""
    call: ToolCallRef | None = None
    """A tool dispatch that runs a call an agent node's model asked for (`node` is the agent node)."""
    check_output: OutputPolicy | None = None
    """The workflow's `policy.output`, when it has one: the runner sends its output to guardrails' output gate
    (`node.output_produced`), and the router takes only the gate's `node.output_checked` as the answer."""
    budget_usd: str | None = None
    """An agent dispatch of a task with a budget: what the router reserved for it (USD). The agent-runner never
    starts a call whose worst case would exceed what is left of it. Absent: no budget."""


class NodeCompleted(EventData):
    """A runner finished a dispatch with an output (already validated against the node's schema)."""

    TYPE = "node.completed"
    dispatch_id: str
    node: str
    attempt: int
    output: dict[str, Any]
    provider: str | None = None
    model: str | None = None
    usage: Usage | None = None
    duration_ms: float = 0.0
    llm_calls: list[LlmCallNote] | None = None
    files: list[ArtifactRef] | None = Field(default=None, exclude_if=lambda v: v is None)
    """Workspace files the tool wrote, as they were after the run, stored as artifacts (by path as `name`); not
    part of the output, so no prompt downstream is given them (docs/observability.md, "Artifacts")."""


class NodeErrored(EventData):
    """A runner could not finish a dispatch; `retryable` says whether another attempt may help."""

    TYPE = "node.errored"
    dispatch_id: str
    node: str
    attempt: int
    error: str
    retryable: bool = False
    llm_calls: list[LlmCallNote] | None = None
    refusal: ToolRefusal | None = None
    """Set by guardrails' tool gate when policy refused the call (or holds it for approval); `error` then
    reads "refused by policy (rule <rule>): <reason>"."""


class NodeDeadlineExpired(EventData):
    """Router-internal input: a dispatch's deadline passed with no result."""

    TYPE = "node.deadline_expired"
    INTERNAL = True  # made by the router's timers, never published
    dispatch_id: str
    node: str
    attempt: int


class NodeSucceeded(EventData):
    """The router accepted a node's result; recorded once per node however often it arrives."""

    TYPE = "node.succeeded"
    dispatch_id: str
    node: str
    attempt: int
    output: dict[str, Any]
    provider: str | None = None
    model: str | None = None
    usage: Usage | None = None
    chosen: str | None = None
    """For a DECISION node: the successor its output chose."""


class NodeFailed(EventData):
    TYPE = "node.failed"
    node: str
    attempt: int
    reason: str
    continued: bool | None = None
    """True when the node declares continue_on_failure: the task goes on without its output."""


class NodeResultIgnored(EventData):
    """A result that arrived for a node of a task that had already ended (cancelled, or an EXIT reached
    while other branches ran): recorded once, never used."""

    TYPE = "node.result_ignored"
    dispatch_id: str
    node: str
    attempt: int
    reason: str


class NodeRetryScheduled(EventData):
    """A node will be dispatched again (attempt `attempt`) at `at`, after an exponential backoff."""

    TYPE = "node.retry_scheduled"
    node: str
    attempt: int
    at: datetime
    delay_s: float
    reason: str


class NodeRetryDue(EventData):
    """Router-internal input: the time of a scheduled retry came."""

    TYPE = "node.retry_due"
    INTERNAL = True  # made by the router's timers, never published
    node: str
    attempt: int
    at: datetime | None = None
    """The time the retry was scheduled for: tells this retry from one scheduled later for the same attempt
    number (an agent node's tool calls each count their own attempts)."""


class HeldResult(BaseModel):
    """A node's result held while a person decides on it (a pause for low confidence)."""

    dispatch_id: str
    attempt: int
    output: dict[str, Any]
    provider: str | None = None
    model: str | None = None
    usage: Usage | None = None


class NodeApprovalRequested(EventData):
    """The task waits for `node.approval_decided` on this node: it requires approval before it runs, or it
    paused for a person (`pause`: after failures in a row, or on an output of low confidence)."""

    TYPE = "node.approval_requested"
    node: str
    kind: Literal["agent", "tool"]
    args: dict[str, Any] | None = None
    """For a tool node, the arguments it would run with; an approver may edit them."""
    pause: Literal["failures", "confidence", "guardrail"] | None = None
    """Absent: the node's `approval: required`, asked before its first dispatch."""
    reason: str | None = None
    """Why it paused, for the person who decides."""
    held: HeldResult | None = None
    """A pause for confidence or for a guardrail's verdict: the result approving accepts."""
    call_id: str | None = None
    """For a call an agent's model asked for that the tool gate holds for approval: which call."""
    tool: str | None = None
    """The tool held (a held call's, or a tool node's held by the gate)."""
    rule: str | None = None
    """The policy rule that asked for the approval (`tool.approval`); absent for a node's `approval: required`."""


class NodeApprovalDecided(EventData):
    """An operator's decision, published on `ae.<tenant>.node.approval_decided` (by `agentctl approve/reject`)."""

    TYPE = "node.approval_decided"
    node: str
    decision: Literal["approve", "reject"]
    decided_by: str = Field(min_length=1, max_length=256)
    reason: str = Field(default="", max_length=1000)
    args: dict[str, Any] | None = None
    """Edited tool arguments (approve only); omitted to keep the requested ones."""


class NodeApproved(EventData):
    TYPE = "node.approved"
    node: str
    decided_by: str
    args: dict[str, Any] | None = None
    edited: bool = False
    call_id: str | None = None
    """The held call approved, for a call an agent's model asked for."""
    rule: str | None = None
    """Set when the approval answers a hold of guardrails' tool gate (`tool.approval`): the call's (or tool node's)
    dispatches from now on carry `tool.approved`. Also set for a tool node's own `approval: required` in a task
    whose manifest has `approval_answers_gate` (the person is asked once); absent for an agent node's."""


class NodeApprovalRefused(EventData):
    """A decision the router could not accept (e.g. edited arguments that break the tool's schema);
    the node keeps waiting."""

    TYPE = "node.approval_refused"
    node: str
    decided_by: str
    reason: str


EVENTS: tuple[type[EventData], ...] = (
    NodeDispatched,
    NodeCompleted,
    NodeErrored,
    NodeDeadlineExpired,
    NodeSucceeded,
    NodeFailed,
    NodeResultIgnored,
    NodeRetryScheduled,
    NodeRetryDue,
    NodeApprovalRequested,
    NodeApprovalDecided,
    NodeApproved,
    NodeApprovalRefused,
)
"""The event types of this topic."""
