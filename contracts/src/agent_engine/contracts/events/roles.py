"""BRANCH, SPLIT and MERGE (skipped paths, merges, subtasks) and a reviewer's revisions.

`subtask.requested` (a parent has a subtask started) and `subtask.finished` (a subtask tells its parent it
ended) are router to router: INTERNAL. `subtask.settled`, the parent's record of that end, is an
ordinary fact for anyone to read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from agent_engine.contracts.events.base import EventData
from agent_engine.contracts.events.budgets import SubtaskBudget
from agent_engine.contracts.events.tasks import Lineage
from agent_engine.contracts.manifest import WorkflowManifest


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
    INTERNAL = True  # router to router, through the bus
    lineage: Lineage
    merge: str
    item: Any = None
    count: int
    workflow: str
    revision: str
    workflow_manifest: WorkflowManifest
    input: dict[str, Any]
    upstream: dict[str, Any] = Field(default_factory=dict)
    budget: SubtaskBudget | None = Field(default=None, exclude_if=lambda v: v is None)
    """The subtask's budget, when its parent has one (docs/guardrails.md, Budgets)."""


class SubtaskFinished(EventData):
    """Router to router: a subtask ended; the envelope's task_id is the parent's."""

    TYPE = "subtask.finished"
    INTERNAL = True  # router to router, through the bus
    subtask_id: str
    parent_node: str
    index: int
    status: Literal["succeeded", "failed", "cancelled"]
    output: dict[str, Any] | None = None
    reason: str = ""
    continued: bool | None = None
    """True when the subtask's last node failed but declares continue_on_failure: a failed input, not a
    reason to fail the parent."""
    spent_usd: str | None = Field(default=None, pattern=r"^[0-9]{1,12}(\.[0-9]{1,12})?$",
                                  exclude_if=lambda v: v is None)
    """What the subtask spent on LLM calls, when it had a budget: the parent settles the subtask's share with it."""


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


EVENTS: tuple[type[EventData], ...] = (
    NodeSkipped,
    NodeMerged,
    NodeFannedOut,
    SubtaskRequested,
    SubtaskFinished,
    SubtaskSettled,
    NodeRevisionRequested,
)
"""The event types of this topic."""
