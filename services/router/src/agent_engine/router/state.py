"""Task state as the router folds it from recorded events. Immutable: evolve returns a new value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent_engine.contracts.events import Usage
from agent_engine.contracts.manifest import WorkflowManifest


@dataclass(frozen=True)
class NodeState:
    status: str = "pending"
    """pending | awaiting_approval | approved | dispatched | retry_scheduled | succeeded | failed |
    reached (an EXIT node) | cancelled (running at cancel)"""
    attempts: int = 0
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


@dataclass(frozen=True)
class TaskState:
    task_id: str = ""
    tenant: str = ""
    correlation_id: str = ""
    status: str = "new"
    """new (nothing recorded) | running | waiting (for an approval) | succeeded | failed | rejected | cancelled"""
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
    applied: frozenset[str] = frozenset()
    """Ids of the inputs already applied: a redelivered input is recognised and ignored."""
    version: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in ("succeeded", "failed", "rejected", "cancelled")

    def open_dispatches(self) -> list[tuple[str, NodeState]]:
        return [(n, s) for n, s in self.nodes.items() if s.status == "dispatched"]
