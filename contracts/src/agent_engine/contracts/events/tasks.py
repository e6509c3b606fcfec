"""A task's requests and its lifecycle: requested, accepted or rejected (or deduplicated), started, ended,
cancelled, forked; and the index of a tenant's idempotency keys.

The requests (`task.requested`, `task.cancel_requested`, `task.fork_requested`) are what another system
(or agentctl) publishes; the rest are the answers guardrails and the router record.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from agent_engine.contracts.events.base import EventData
from agent_engine.contracts.manifest import USD_PATTERN, WORKFLOW_NAME_PATTERN, WorkflowManifest

TaskStatus = Literal["queued", "running", "waiting", "succeeded", "failed", "rejected", "cancelled"]


class TaskRequested(EventData):
    """Published by another system (or agentctl) on `ae.<tenant>.task.requested`."""

    TYPE = "task.requested"
    workflow: str = Field(pattern=WORKFLOW_NAME_PATTERN)
    """A workflow name as manifests declare it: lower case, digits, '-' and '_'."""
    input: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, max_length=256)
    """A second request of the tenant with the same key within the router's window (AE_IDEMPOTENCY_WINDOW_S)
    starts nothing: it is answered with `task.deduplicated`, naming the task the first one started."""
    requested_by: str | None = None
    priority: int = Field(default=0, ge=-100, le=100)
    """Among a tenant's queued tasks, higher priorities start first (then first come, first served)."""
    data_subject: str | None = Field(default=None, min_length=1, max_length=256)
    """The person the task's data is about, in the sender's own terms (a customer id): the router seals the
    task's records under that person's key, so `agentctl tenant forget T --person ID` erases them alone."""
    session: str | None = Field(default=None, min_length=1, max_length=256)
    """The sender's session (a chat, a conversation) the request belongs to: guardrails' per-session rate limit
    counts requests by it (docs/guardrails.md)."""
    budget_usd: str | None = Field(default=None, pattern=USD_PATTERN)
    """The most this task may spend on LLM calls (USD, an exact decimal), e.g. "0.25"; with a workflow budget
    the lower of the two applies (docs/guardrails.md, Budgets)."""


class TaskAccepted(EventData):
    """Guardrails let the request through; `input` is the redacted input the router will use."""

    TYPE = "task.accepted"
    workflow: str
    input: dict[str, Any] = Field(default_factory=dict)
    redactions: dict[str, int] = Field(default_factory=dict)
    idempotency_key: str | None = None
    requested_by: str | None = None
    priority: int = 0
    data_subject: str | None = None
    """As requested: whose personal data the task holds (its records are sealed under that person's key)."""
    budget_usd: str | None = None
    """As requested: the task's own budget in USD."""


class TaskRejected(EventData):
    TYPE = "task.rejected"
    reason: str
    stage: Literal["guardrails", "router"]
    workflow: str | None = None
    retry_after_s: float | None = Field(default=None, ge=0)
    """Set when a rate limit refused the request: the seconds after which the same request would be let
    through (`agentctl submit` prints it)."""


class TaskDeduplicated(EventData):
    """The router's answer to a request whose idempotency key its tenant used for another task within the
    window: this request (the envelope's task_id) starts nothing; `original_task_id` is the task to follow."""

    TYPE = "task.deduplicated"
    original_task_id: str
    idempotency_key: str
    reason: str = ""


class TenantKeyClaimed(EventData):
    """Recorded in the index of the tenant's idempotency keys (one aggregate per key): from this record's time
    the key names the task of the envelope's task_id, for the router's window."""

    TYPE = "tenant.key_claimed"
    INTERNAL = True  # the router's own bookkeeping
    idempotency_key: str


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
    """The fields of `task.succeeded` and `task.failed`; "task.finished" is not an event type of its own."""

    TYPE = "task.finished"
    status: Literal["succeeded", "failed"]
    exit_node: str | None = None
    reason: str = ""


class TaskSucceeded(TaskFinished):
    TYPE = "task.succeeded"


class TaskFailed(TaskFinished):
    TYPE = "task.failed"


class TaskCancelRequested(EventData):
    """An operator or another system asks to stop a task; published on `ae.<tenant>.task.cancel_requested`."""

    TYPE = "task.cancel_requested"
    reason: str = Field(default="", max_length=1000)
    requested_by: str | None = None
    parent_id: str | None = None
    """Set when a parent task stops its subtask; such a cancel also stops a subtask not yet started."""


class TaskCancelled(EventData):
    """The router stopped the task; `open_nodes` were still running and their results will be ignored."""

    TYPE = "task.cancelled"
    reason: str = ""
    requested_by: str | None = None
    open_nodes: list[str] = Field(default_factory=list)


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


EVENTS: tuple[type[EventData], ...] = (
    TaskRequested,
    TaskAccepted,
    TaskRejected,
    TaskDeduplicated,
    TenantKeyClaimed,
    TaskStarted,
    TaskSucceeded,
    TaskFailed,
    TaskCancelRequested,
    TaskCancelled,
    TaskForkRequested,
    TaskForked,
)
"""The event types of this topic."""
