"""Every event type's payload (`Envelope.data`), keyed by the envelope's `type`.

Past-tense names: each records something that happened. Adding an optional field keeps the
schema_version; consumers ignore fields they do not know.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent_engine.contracts.manifest import AgentSpec, WorkflowManifest

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


# --- task lifecycle ---------------------------------------------------------------------------

class TaskRequested(EventData):
    """Published by another system (or agentctl) on `ae.<tenant>.task.requested`."""

    TYPE = "task.requested"
    workflow: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    """A workflow name as manifests declare it: lower case, digits, '-' and '_'."""
    input: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, max_length=256)
    requested_by: str | None = None


class TaskAccepted(EventData):
    """Guardrails let the request through; `input` is the redacted input the router will use."""

    TYPE = "task.accepted"
    workflow: str
    input: dict[str, Any] = Field(default_factory=dict)
    redactions: dict[str, int] = Field(default_factory=dict)
    idempotency_key: str | None = None
    requested_by: str | None = None


class TaskRejected(EventData):
    TYPE = "task.rejected"
    reason: str
    stage: Literal["guardrails", "router"]
    workflow: str | None = None


class TaskStarted(EventData):
    """The router pinned a workflow revision; `workflow_manifest` is that revision, whole."""

    TYPE = "task.started"
    workflow: str
    revision: str
    engine_version: str
    contract_version: int
    input: dict[str, Any]
    workflow_manifest: WorkflowManifest


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
    """An agent as a runner needs it: config plus the resolved output schema and mock script.
    Unlike the manifest model it ignores unknown fields, so an older runner reads a newer dispatch."""

    model_config = ConfigDict(extra="ignore")

    name: str
    output_schema_json: dict[str, Any] | None = None
    mock_responses: list[dict[str, Any]] = Field(default_factory=list)


class DispatchedTool(BaseModel):
    name: str
    builtin: str
    args: dict[str, Any] = Field(default_factory=dict)
    side_effects: bool | None = None
    """True when tools.yaml declares `side_effects: true`: the tool-runner then runs it at most once per
    (task, node), whatever its built-in says. Absent means false; the router leaves it out rather than
    writing false, so dispatches of other tools stay identical to those recorded before the field."""


class NodeContext(BaseModel):
    input: dict[str, Any] = Field(default_factory=dict)
    upstream: dict[str, Any] = Field(default_factory=dict)
    """Outputs of the nodes that already succeeded, by node id."""


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


class NodeErrored(EventData):
    """A runner could not finish a dispatch; `retryable` says whether another attempt may help."""

    TYPE = "node.errored"
    dispatch_id: str
    node: str
    attempt: int
    error: str
    retryable: bool = False


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


class NodeResultIgnored(EventData):
    """A result that arrived for a node of a cancelled task: recorded once, never used."""

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


EVENT_TYPES: dict[str, type[EventData]] = {
    cls.TYPE: cls
    for cls in (
        TaskRequested, TaskAccepted, TaskRejected, TaskStarted, TaskSucceeded, TaskFailed,
        TaskCancelRequested, TaskCancelled, NodeResultIgnored,
        NodeApprovalRequested, NodeApprovalDecided, NodeApproved, NodeApprovalRefused,
        NodeRetryScheduled, NodeRetryDue,
        NodeDispatched, NodeCompleted, NodeErrored, NodeDeadlineExpired, NodeSucceeded, NodeFailed,
        LlmCalled,
    )
}


def data_model_for(event_type: str) -> type[EventData]:
    try:
        return EVENT_TYPES[event_type]
    except KeyError:
        raise ValueError(f"unknown event type '{event_type}'; known: {sorted(EVENT_TYPES)}") from None


def parse_data(event_type: str, data: dict[str, Any]) -> EventData:
    return data_model_for(event_type).model_validate(data)
