"""Every event type's payload (`Envelope.data`), keyed by the envelope's `type`.

Past-tense names: each records something that happened. Adding an optional field keeps the
schema_version; consumers ignore fields they do not know.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent_engine.contracts.manifest import WORKFLOW_NAME_PATTERN, AgentSpec, MemoryLayer, WorkflowManifest

TaskStatus = Literal["queued", "running", "waiting", "succeeded", "failed", "rejected", "cancelled"]


class EventData(BaseModel):
    model_config = ConfigDict(extra="ignore")
    TYPE: ClassVar[str]


class Usage(BaseModel):
    """Token usage of one LLM call. Following the OTel GenAI rule, input_tokens includes cache tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(input_tokens=self.input_tokens + other.input_tokens,
                     output_tokens=self.output_tokens + other.output_tokens,
                     cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
                     cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens)


# --- task lifecycle ---------------------------------------------------------------------------

class TaskRequested(EventData):
    """Published by another system (or agentctl) on `ae.<tenant>.task.requested`."""

    TYPE = "task.requested"
    workflow: str = Field(pattern=WORKFLOW_NAME_PATTERN)
    """A workflow name as manifests declare it: lower case, digits, '-' and '_'."""
    input: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, max_length=256)
    requested_by: str | None = None
    priority: int = Field(default=0, ge=-100, le=100)
    """Among a tenant's queued tasks, higher priorities start first (then first come, first served)."""


class TaskAccepted(EventData):
    """Guardrails let the request through; `input` is the redacted input the router will use."""

    TYPE = "task.accepted"
    workflow: str
    input: dict[str, Any] = Field(default_factory=dict)
    redactions: dict[str, int] = Field(default_factory=dict)
    idempotency_key: str | None = None
    requested_by: str | None = None
    priority: int = 0


class TaskRejected(EventData):
    TYPE = "task.rejected"
    reason: str
    stage: Literal["guardrails", "router"]
    workflow: str | None = None


class Lineage(BaseModel):
    """Where a task came from when another task made it: a SPLIT's subtask (or a fork's clone)."""

    kind: Literal["subtask", "fork"]
    parent_id: str
    root_id: str
    cause: str
    """Why it exists, in words: e.g. "item 3 of 50 of SPLIT node 'plan'"."""
    parent_node: str | None = None
    index: int | None = None


class TaskStarted(EventData):
    """The router pinned a workflow revision; `workflow_manifest` is that revision, whole.
    A subtask also records its lineage, the node it starts at and the MERGE node it stops before."""

    TYPE = "task.started"
    workflow: str
    revision: str
    engine_version: str
    contract_version: int
    input: dict[str, Any]
    workflow_manifest: WorkflowManifest
    lineage: Lineage | None = None
    entry: str | None = None
    stop_at: str | None = None
    upstream: dict[str, Any] = Field(default_factory=dict)
    """Outputs a subtask inherits from its parent (visible to its nodes as upstream outputs)."""


class TaskFinished(EventData):
    TYPE = "task.finished"
    status: Literal["succeeded", "failed"]
    exit_node: str | None = None
    reason: str = ""


class TaskCancelRequested(EventData):
    """An operator or another system asks to stop a task; published on `ae.<tenant>.task.cancel_requested`."""

    TYPE = "task.cancel_requested"
    reason: str = Field(default="", max_length=1000)
    requested_by: str | None = None
    parent_id: str | None = None
    """Set when a parent task stops its subtask; such a cancel also stops a subtask not yet started."""


class TaskQueued(EventData):
    """The tenant was at its limit of running tasks: the task waits (status queued) at `position`.
    It keeps what it will start with, so the workflow revision is pinned at acceptance."""

    TYPE = "task.queued"
    priority: int
    position: int
    reason: str
    workflow: str
    revision: str
    input: dict[str, Any]
    workflow_manifest: WorkflowManifest


class TaskAdmitted(EventData):
    """Router to router: a queued task may start (a running task of its tenant ended)."""

    TYPE = "task.admitted"
    reason: str


class TenantAdmitted(EventData):
    """Recorded in the tenant's admission log: the task (envelope task_id) counts as running."""

    TYPE = "tenant.admitted"
    priority: int = 0
    running: int
    max_running: int
    from_queue: bool = False


class TenantQueued(EventData):
    """Recorded in the tenant's admission log: the task waits at `position` of `queued`."""

    TYPE = "tenant.queued"
    priority: int = 0
    position: int
    queued: int
    max_queued: int


class TenantReleased(EventData):
    """Recorded in the tenant's admission log: the task ended (or was cancelled while queued)."""

    TYPE = "tenant.released"
    status: str
    was_queued: bool = False


class TaskForkRequested(EventData):
    """An operator asks for a new task (the envelope's task_id) that starts from another task's history
    up to its record number `at` (1-based, as `agentctl task history` numbers them)."""

    TYPE = "task.fork_requested"
    source_task_id: str
    at: int = Field(ge=1)
    live: bool = False
    """False: agent steps whose output the source recorded reuse it instead of calling the model."""
    requested_by: str | None = None


class TaskForked(EventData):
    """A fork began: `history` (the source's records up to `at`, rounded to the end of a decision) is
    the new task's state; `recorded` holds agent outputs to reuse, keyed "<node>@<revision>"."""

    TYPE = "task.forked"
    source_task_id: str
    at: int
    live: bool
    history: list[dict[str, Any]]
    recorded: dict[str, dict[str, Any]] = Field(default_factory=dict)


class TaskCancelled(EventData):
    """The router stopped the task; `open_nodes` were still running and their results will be ignored."""

    TYPE = "task.cancelled"
    reason: str = ""
    requested_by: str | None = None
    open_nodes: list[str] = Field(default_factory=list)


class TaskSucceeded(TaskFinished):
    TYPE = "task.succeeded"


class TaskFailed(TaskFinished):
    TYPE = "task.failed"


# --- node lifecycle ---------------------------------------------------------------------------

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
    args: dict[str, Any] = Field(default_factory=dict)
    side_effects: bool | None = None
    """True when tools.yaml declares `side_effects: true`: the tool-runner then runs it at most once per
    (task, node), whatever its built-in says. Absent means false; the router leaves it out rather than
    writing false, so dispatches of other tools stay identical to those recorded before the field."""
    project: str | None = None
    """For the memory built-ins: the workflow's project (its `project`, else its name), the scope of the
    project memory layer."""


class MemoryView(BaseModel):
    """Which memory layers an agent node's prompt includes, and the project they are scoped to."""

    layers: list[MemoryLayer]
    project: str


class ToolDef(BaseModel):
    """A tool as a model is offered it: the name in tools.yaml, what it does, the arguments it takes."""

    name: str
    description: str = ""
    input_schema: dict[str, Any]


class ToolStep(BaseModel):
    """One action of an agent's tool turn (a call the model asked for) and, once back, its observation."""

    call_id: str
    """Derived by the router ("t<turn>-c<index>", "r<revision>-" first after a revision); the model is shown it."""
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    output: dict[str, Any] | None = None
    error: str | None = None
    refused: bool | None = None
    """True when the router refused the call before it ran (unknown tool, arguments that break its schema);
    `error` says why, and the model sees it as the call's result."""


class ToolTurn(BaseModel):
    """A model turn that asked for tools: its text (the thought), and the calls with their results."""

    turn: int
    thought: str = ""
    calls: list[ToolStep]


class ConversationSummary(BaseModel):
    """What the model wrote to stand for a node's first `turns` tool turns, once they grew too long."""

    turns: int = Field(ge=1)
    text: str


class ToolCallRef(BaseModel):
    """Which call of which turn a tool dispatch runs for an agent node."""

    call_id: str
    turn: int
    index: int


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


class LlmCallNote(BaseModel):
    """One LLM call attempt of a dispatch, carried in the runner's result so the task's history shows every
    call, repair and retry (the same facts as the `llm.called` / `llm.call_failed` events)."""

    provider: str
    model: str
    outcome: Literal["valid", "invalid", "tool_use", "summary", "failed"]
    repair: int = 0
    fallback: int = 0
    usage: Usage | None = None
    cost_usd: str | None = None
    problem: str | None = None
    """Why a reply was invalid, or what a failed call's error was."""
    error_class: str | None = None
    status: int | None = None
    then: Literal["retry", "fallback", "give_up"] | None = None
    delay_s: float | None = None


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


class NodeErrored(EventData):
    """A runner could not finish a dispatch; `retryable` says whether another attempt may help."""

    TYPE = "node.errored"
    dispatch_id: str
    node: str
    attempt: int
    error: str
    retryable: bool = False
    llm_calls: list[LlmCallNote] | None = None


class RequestedCall(BaseModel):
    """A tool call as the model asked for it."""

    id: str = ""
    """The provider's id for the call (Anthropic `toolu_...`, OpenAI `call_...`), kept for the record."""
    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class NodeToolsRequested(EventData):
    """Agent-runner to router: instead of answering, the model asked for tools in turn `turn` of the node.
    The router records the turn, runs the calls through the tool-runner and dispatches the next turn."""

    TYPE = "node.tools_requested"
    dispatch_id: str
    node: str
    attempt: int
    turn: int = 0
    thought: str = ""
    """The text the model wrote alongside its calls."""
    calls: list[RequestedCall] = Field(min_length=1, max_length=64)
    provider: str | None = None
    model: str | None = None
    usage: Usage | None = None
    duration_ms: float = 0.0
    llm_calls: list[LlmCallNote] | None = None
    summary: ConversationSummary | None = None
    """Made in this dispatch when the context asked for one (`summarise`): later turns carry it instead."""


class NodeToolTurnRecorded(EventData):
    """The router accepted a model's tool turn (once per turn): thought, calls, and the calls it refused
    before they ran (`refused`, with the reason as `error`)."""

    TYPE = "node.tool_turn_recorded"
    dispatch_id: str
    node: str
    attempt: int
    turn: int
    thought: str = ""
    calls: list[ToolStep]
    provider: str | None = None
    model: str | None = None
    usage: Usage | None = None
    summary: ConversationSummary | None = None


class NodeToolReturned(EventData):
    """The observation of one call of a tool turn: its output, or the error the model will see."""

    TYPE = "node.tool_returned"
    node: str
    turn: int
    index: int
    call_id: str
    tool: str
    dispatch_id: str | None = None
    attempt: int = 0
    output: dict[str, Any] | None = None
    error: str | None = None


class NodeDeadlineExpired(EventData):
    """Router-internal input: a dispatch's deadline passed with no result."""

    TYPE = "node.deadline_expired"
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


class NodeApprovalRequested(EventData):
    """A node that requires approval is ready; the task waits for `node.approval_decided`."""

    TYPE = "node.approval_requested"
    node: str
    kind: Literal["agent", "tool"]
    args: dict[str, Any] | None = None
    """For a tool node, the arguments it would run with; an approver may edit them."""


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


class NodeApprovalRefused(EventData):
    """A decision the router could not accept (e.g. edited arguments that break the tool's schema);
    the node keeps waiting."""

    TYPE = "node.approval_refused"
    node: str
    decided_by: str
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
    node: str
    attempt: int
    at: datetime | None = None
    """The time the retry was scheduled for: tells this retry from one scheduled later for the same attempt
    number (an agent node's tool calls each count their own attempts)."""


class NodeResultIgnored(EventData):
    """A result that arrived for a node of a task that had already ended (cancelled, or an EXIT reached
    while other branches ran): recorded once, never used."""

    TYPE = "node.result_ignored"
    dispatch_id: str
    node: str
    attempt: int
    reason: str


class NodeFailed(EventData):
    TYPE = "node.failed"
    node: str
    attempt: int
    reason: str
    continued: bool | None = None
    """True when the node declares continue_on_failure: the task goes on without its output."""


class NodeSkipped(EventData):
    """A node that will not run: every path into it was not taken (a DECISION chose another edge)."""

    TYPE = "node.skipped"
    node: str
    reason: str


class NodeMerged(EventData):
    """A MERGE node's policy was met (once per node): which inputs arrived, failed or were skipped.
    `output` is the combined value; an agent MERGE node is dispatched with it instead."""

    TYPE = "node.merged"
    node: str
    policy: str
    arrived: list[str]
    failed: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    output: dict[str, Any] | None = None


class NodeFannedOut(EventData):
    """A SPLIT node started one subtask per item; `subtasks[i]` is the task id of item i."""

    TYPE = "node.fanned_out"
    node: str
    merge: str
    subtasks: list[str]


class SubtaskRequested(EventData):
    """Router to router: start a subtask (the envelope's task_id) for one item of a SPLIT.
    It runs the nodes after the SPLIT node up to, not including, the MERGE node `merge`."""

    TYPE = "subtask.requested"
    lineage: Lineage
    merge: str
    item: Any = None
    count: int
    workflow: str
    revision: str
    workflow_manifest: WorkflowManifest
    input: dict[str, Any]
    upstream: dict[str, Any] = Field(default_factory=dict)


class SubtaskFinished(EventData):
    """Router to router: a subtask ended; the envelope's task_id is the parent's."""

    TYPE = "subtask.finished"
    subtask_id: str
    parent_node: str
    index: int
    status: Literal["succeeded", "failed", "cancelled"]
    output: dict[str, Any] | None = None
    reason: str = ""
    continued: bool | None = None
    """True when the subtask's last node failed but declares continue_on_failure: a failed input, not a
    reason to fail the parent."""


class SubtaskSettled(EventData):
    """The parent recorded a subtask's end (once per subtask)."""

    TYPE = "subtask.settled"
    node: str
    index: int
    subtask_id: str
    status: Literal["succeeded", "failed", "cancelled"]
    output: dict[str, Any] | None = None
    reason: str = ""
    continued: bool | None = None
    """True when the subtask's last node failed but declares continue_on_failure: a failed input, not a
    reason to fail the parent."""


class NodeRevisionRequested(EventData):
    """A reviewer's output matched its `revise` rule: `reset` nodes run again as revision `revision`,
    starting at `target`, with the reviewer's output as feedback."""

    TYPE = "node.revision_requested"
    node: str
    target: str
    revision: int
    max_revisions: int
    feedback: dict[str, Any]
    reset: list[str]


# --- usage ------------------------------------------------------------------------------------

class LlmCalled(EventData):
    """One LLM call with its usage and price. `provider == "mock"` marks synthetic output."""

    TYPE = "llm.called"
    dispatch_id: str
    node: str
    provider: str
    model: str
    usage: Usage
    cost_usd: str = "0"
    """Exact decimal as a string."""
    price_table: str = ""
    repair: int = 0
    """0 for the first reply to a dispatch; n for the reply to the n-th repair turn."""
    fallback: int = 0
    """Position of the model in the agent's chain: 0 the agent's own model, n its n-th fallback."""
    outcome: Literal["valid", "invalid", "tool_use", "summary"] | None = None
    """valid / invalid: whether the reply was a JSON object valid against the node's schema; tool_use: the model
    asked for tools; summary: the model summarised earlier tool turns (absent in older events)."""
    turn: int = 0
    """Which model turn of the node (0 until the model has used tools)."""
    problem: str | None = None
    """Why the reply was invalid; it went back to the model as the next repair turn, if any were left."""


class LlmCallFailed(EventData):
    """One LLM call attempt that failed, or a model skipped because its circuit breaker is open
    (`error_class == "CircuitOpen"`, no request sent). No usage, no cost."""

    TYPE = "llm.call_failed"
    dispatch_id: str
    node: str
    provider: str
    model: str
    error_class: str
    """E.g. RateLimitError, OverloadedError, InternalServerError, APIConnectionError, HTTPStatusError,
    ConnectError, CircuitOpen, NotConfigured."""
    message: str = ""
    status: int | None = None
    """HTTP status, when there was a response."""
    retry_after_s: float | None = None
    """What the provider asked for (retry-after / retry-after-ms headers)."""
    call: int = Field(ge=1)
    """Attempt number on this model for this turn, from 1."""
    repair: int = 0
    fallback: int = 0
    turn: int = 0
    then: Literal["retry", "fallback", "give_up"]
    """What the gateway did next: the same model again, the next model in the chain, or stop."""
    delay_s: float | None = None
    """Wait before the retry (`then == "retry"`)."""


EVENT_TYPES: dict[str, type[EventData]] = {
    cls.TYPE: cls
    for cls in (
        TaskRequested, TaskAccepted, TaskRejected, TaskStarted, TaskSucceeded, TaskFailed,
        TaskCancelRequested, TaskCancelled, TaskForkRequested, TaskForked, NodeResultIgnored,
        TaskQueued, TaskAdmitted, TenantAdmitted, TenantQueued, TenantReleased,
        NodeApprovalRequested, NodeApprovalDecided, NodeApproved, NodeApprovalRefused,
        NodeRetryScheduled, NodeRetryDue,
        NodeDispatched, NodeCompleted, NodeErrored, NodeDeadlineExpired, NodeSucceeded, NodeFailed,
        NodeToolsRequested, NodeToolTurnRecorded, NodeToolReturned,
        NodeSkipped, NodeMerged, NodeFannedOut, SubtaskRequested, SubtaskFinished, SubtaskSettled,
        NodeRevisionRequested, LlmCalled, LlmCallFailed,
    )
}


def data_model_for(event_type: str) -> type[EventData]:
    try:
        return EVENT_TYPES[event_type]
    except KeyError:
        raise ValueError(f"unknown event type '{event_type}'; known: {sorted(EVENT_TYPES)}") from None


def parse_data(event_type: str, data: dict[str, Any]) -> EventData:
    return data_model_for(event_type).model_validate(data)
