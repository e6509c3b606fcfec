"""Open dispatches and their deadlines: the router's only timer, outside the pure core.

When a deadline passes, the shell feeds a `node.deadline_expired` input to the core (its id derives
from the dispatch, so a repeat is absorbed). It fires only once the router has read every input
stored before the deadline, so results already waiting in the stream settle their nodes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from agent_engine.contracts.envelope import Envelope, derive_id
from agent_engine.contracts.events import NodeDeadlineExpired
from agent_engine.router.core import SOURCE
from agent_engine.router.state import TaskState


@dataclass(frozen=True)
class Open:
    dispatch_id: str
    attempt: int
    deadline: datetime
    tenant: str
    correlation_id: str


class DeadlineIndex:
    def __init__(self) -> None:
        self.open: dict[tuple[str, str], Open] = {}

    def observe(self, record: Envelope) -> None:
        """Follow one committed record."""
        data = record.data
        if record.type == "node.dispatched":
            deadline = data["deadline"]
            self.open[(record.task_id, data["node"])] = Open(
                data["dispatch_id"], data["attempt"],
                deadline if isinstance(deadline, datetime) else datetime.fromisoformat(deadline),
                record.tenant, record.correlation_id)
        elif record.type in ("node.succeeded", "node.failed"):
            self.open.pop((record.task_id, data["node"]), None)
        elif record.type in ("task.succeeded", "task.failed", "task.rejected", "task.cancelled"):
            self.drop(record.task_id)

    def sync(self, state: TaskState) -> None:
        """Make the task's entries match its state as loaded from the store (the truth)."""
        self.drop(state.task_id)
        if state.terminal:
            return
        for node_id, node in state.open_dispatches():
            if node.dispatch_id and node.deadline:
                self.open[(state.task_id, node_id)] = Open(node.dispatch_id, node.attempts, node.deadline,
                                                           state.tenant, state.correlation_id)

    def drop(self, task_id: str) -> None:
        for key in [k for k in self.open if k[0] == task_id]:
            del self.open[key]

    def forget(self, task_id: str, node: str, dispatch_id: str) -> None:
        entry = self.open.get((task_id, node))
        if entry is not None and entry.dispatch_id == dispatch_id:
            del self.open[(task_id, node)]

    def expired(self, now: datetime, *, caught_up: bool, read_through: datetime | None) -> list[Envelope]:
        """Inputs for the dispatches whose deadline passed and whose results cannot still be queued:
        the router has caught up with its stream, or has read a message stored after the deadline."""
        due = []
        for (task_id, node), entry in self.open.items():
            if entry.deadline > now:
                continue
            if not caught_up and (read_through is None or read_through < entry.deadline):
                continue
            due.append(Envelope(
                id=derive_id(entry.dispatch_id, "deadline"), source=SOURCE, type=NodeDeadlineExpired.TYPE,
                time=now, tenant=entry.tenant, task_id=task_id, correlation_id=entry.correlation_id,
                causation_id=entry.dispatch_id,
                data=NodeDeadlineExpired(dispatch_id=entry.dispatch_id, node=node, attempt=entry.attempt).model_dump(),
            ))
        return due
