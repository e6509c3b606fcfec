"""Task state as the router folds it from recorded events. Immutable: evolve returns a new value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent_engine.contracts.events import Lineage, Usage
from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.router.budgets import Ledger
from agent_engine.router.traces import TaskTrace

OPEN_NODE = frozenset({"dispatched", "retry_scheduled", "awaiting_approval", "approved", "budget_wait"})
"""Node statuses that mean work is still to come for the node."""


@dataclass(frozen=True)
class NodeState:
    status: str = "pending"
    """pending | awaiting_approval | approved | budget_wait (waits for room in the task's budget) | dispatched |
    retry_scheduled | succeeded | failed |
    skipped (no path into it was taken) | merged (an agent MERGE whose inputs are in) |
    reached (an EXIT node) | cancelled (running at cancel) | abandoned (running when the task ended)"""
    attempts: int = 0
    revision: int = 0
    """How many times a reviewer's `revise` sent the node back (0: the first run)."""
    runs_before: int = 0
    """Attempts made in earlier revisions (a mock script continues where they left off)."""
    dispatch_id: str | None = None
    deadline: datetime | None = None
    """When the open dispatch times out, or (retry_scheduled) when the next attempt is due."""
    dispatched_at: datetime | None = None
    finished_at: datetime | None = None
    output: dict[str, Any] | None = None
    provider: str | None = None
    model: str | None = None
    usage: Usage | None = None
    error: str | None = None
    continued: bool = False
    """Failed, but the node declares continue_on_failure."""
    chosen: str | None = None
    """A DECISION node's chosen successor."""
    merged: dict[str, Any] | None = None
    """An agent MERGE node's combined inputs."""
    steps: tuple[dict[str, Any], ...] = ()
    """An agent node's recorded tool turns (ToolTurn as JSON), each call's result filled in once back.
    The model's next turn is number len(steps)."""
    call: int | None = None
    """While an agent node runs its model's tool calls: the index (in steps[-1]) of the call dispatched now;
    None while the model itself is dispatched."""
    turn_usage: Usage | None = None
    """Usage of the tool turns so far; the node's usage is this plus its final reply's."""
    summary: dict[str, Any] | None = None
    """The model's summary of the first `turns` tool turns (ConversationSummary as JSON), once made."""
    began_at: datetime | None = None
    """When the node's first dispatch of its current attempt went out (tool turns keep it)."""
    paused: str | None = None
    """While awaiting_approval because the node paused for a person: `failures` or `confidence`."""
    held: dict[str, Any] | None = None
    """A pause for confidence: the result (HeldResult as JSON) that approving accepts."""
    resumed_at: int = 0
    """`attempts` when a person last resumed the node after failures: failures and attempts count from here."""
    approved_args: dict[str, Any] | None = None
    """A tool node's arguments as a person edited them when approving: every later dispatch of the node runs
    these (a retry must not go back to the arguments the person replaced)."""
    approved: frozenset[str] = frozenset()
    """What a person approved for this node: "" for the node itself (its dispatches), a call id for a tool call
    the tool gate held. Their dispatches carry `tool.approved`, so the gate does not hold them again."""


@dataclass(frozen=True)
class Fanout:
    """A SPLIT node's subtasks and what is known of their ends, by item index."""

    merge: str
    subtasks: tuple[str, ...]
    results: Mapping[int, tuple[str, dict[str, Any] | None, str]] = field(default_factory=dict)
    """index -> (status, output, reason) once the subtask has ended."""

    def open_subtasks(self) -> list[str]:
        return [t for i, t in enumerate(self.subtasks) if i not in self.results]


@dataclass(frozen=True)
class TaskState:
    task_id: str = ""
    tenant: str = ""
    correlation_id: str = ""
    status: str = "new"
    """new (nothing recorded) | queued (over its tenant's limit) | running | waiting (for an approval, or for
    room in its budget) |
    succeeded | failed | rejected | cancelled | deduplicated (the request's idempotency key names another task:
    this id names no task that runs) | reserved (the id of a tenant's admission log, not a task)"""
    workflow: str | None = None
    revision: str | None = None
    engine_version: str | None = None
    contract_version: int | None = None
    manifest: WorkflowManifest | None = None
    input: Mapping[str, Any] = field(default_factory=dict)
    nodes: Mapping[str, NodeState] = field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_node: str | None = None
    reason: str = ""
    lineage: Lineage | None = None
    """Set for a subtask: its parent, root and cause."""
    entry: str | None = None
    """A subtask's first node (a task starts at the START node)."""
    stop_at: str | None = None
    """A subtask ends when its path reaches this MERGE node (which runs in the parent)."""
    inherited: Mapping[str, Any] = field(default_factory=dict)
    """Upstream outputs a subtask inherited from its parent."""
    fanouts: Mapping[str, Fanout] = field(default_factory=dict)
    """SPLIT node -> its subtasks."""
    cancelling: frozenset[str] = frozenset()
    """Subtasks this task asked to stop; it neither waits for them nor asks again."""
    revisions: Mapping[str, int] = field(default_factory=dict)
    """Reviewer node -> revisions it has asked for."""
    feedback: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """Revised node -> the reviewer's output it runs again with."""
    recorded: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """A fork's reusable agent outputs, "<node>@<revision>" -> {output, provider, model}."""
    queued_by: str | None = None
    queued_budget_usd: str | None = None
    """A queued task's sender and the budget its request asked for: it starts with them once admitted."""
    duplicate_of: str | None = None
    """For a deduplicated request: the task its idempotency key names."""
    budget: Ledger | None = None
    """The task's LLM budget, when its workflow has one (budgets.py)."""
    trace: TaskTrace | None = None
    """The task's trace context (traces.py); None when it started without one."""
    applied: frozenset[str] = frozenset()
    """Ids of the inputs already applied: a redelivered input is recognised and ignored."""
    version: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in ("succeeded", "failed", "rejected", "cancelled", "deduplicated")

    def open_dispatches(self) -> list[tuple[str, NodeState]]:
        return [(n, s) for n, s in self.nodes.items() if s.status == "dispatched"]

    def open_subtasks(self) -> list[str]:
        return [t for f in self.fanouts.values() for t in f.open_subtasks() if t not in self.cancelling]

    def has_open_work(self) -> bool:
        """Anything still to come: a node running or due, an approval, a subtask."""
        return any(s.status in OPEN_NODE for s in self.nodes.values()) or bool(self.open_subtasks())
