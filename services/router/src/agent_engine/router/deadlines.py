"""The router's only timers, outside the pure core: dispatch deadlines and scheduled retries.

When a deadline passes, the shell feeds a `node.deadline_expired` input to the core; when a retry's
time comes, a `node.retry_due` input. Ids derive from the dispatch or the attempt, so a repeat is
absorbed. Timers fire only once the router has read every input stored before their time, so
results already waiting in the stream settle their nodes first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from agent_engine.contracts.envelope import Envelope, command, derive_id
from agent_engine.contracts.events import NodeDeadlineExpired, NodeRetryDue
from agent_engine.router.core import SOURCE
from agent_engine.router.state import TaskState


@dataclass(frozen=True)
class Open:
    dispatch_id: str
    attempt: int
    deadline: datetime
    tenant: str
    correlation_id: str
    retry: bool = False
    """A scheduled retry (attempt `attempt` at `deadline`) rather than an open dispatch."""
    window: timedelta = timedelta(0)
    """The node's timeout: a heartbeat moves the deadline to (heartbeat time + window)."""


class DeadlineIndex:
    def __init__(self) -> None:
        self.open: dict[tuple[str, str], Open] = {}

    def observe(self, record: Envelope) -> None:
        """Follow one committed record."""
        data = record.data
        if record.type == "node.dispatched":
            raw = data["deadline"]
            deadline = raw if isinstance(raw, datetime) else datetime.fromisoformat(raw)
            known = self.open.get((record.task_id, data["node"]))
            if known is not None and known.dispatch_id == data["dispatch_id"]:
                deadline = max(deadline, known.deadline)  # seen again (read back from the log): keep heartbeats
            self.open[(record.task_id, data["node"])] = Open(
                data["dispatch_id"], data["attempt"], deadline, record.tenant, record.correlation_id,
                window=deadline - record.time)
        elif record.type == "node.retry_scheduled":
            at = data["at"]
            self.open[(record.task_id, data["node"])] = Open(
                "", data["attempt"], at if isinstance(at, datetime) else datetime.fromisoformat(at),
                record.tenant, record.correlation_id, retry=True)
        elif record.type in ("node.succeeded", "node.failed"):
            self.open.pop((record.task_id, data["node"]), None)
        elif record.type in ("task.succeeded", "task.failed", "task.rejected", "task.cancelled"):
            self.drop(record.task_id)

    def sync(self, state: TaskState) -> None:
        """Make the task's entries match its state as loaded from the store (the truth)."""
        self.drop(state.task_id)
        if state.terminal:
            return
        for node_id, node in state.nodes.items():
            if node.status == "dispatched" and node.dispatch_id and node.deadline:
                window = node.deadline - node.dispatched_at if node.dispatched_at else timedelta(0)
                self.open[(state.task_id, node_id)] = Open(node.dispatch_id, node.attempts, node.deadline,
                                                           state.tenant, state.correlation_id, window=window)
            elif node.status == "retry_scheduled" and node.deadline:
                self.open[(state.task_id, node_id)] = Open("", node.attempts + 1, node.deadline, state.tenant,
                                                           state.correlation_id, retry=True)

    def heartbeat(self, tenant: str, task_id: str, node: str, dispatch_id: str, now: datetime) -> bool:
        """A runner is still working on the dispatch: its deadline moves to now + the node's timeout.
        Only the shell's timer moves; the recorded deadline stays as decided. A beat on another tenant's
        subject than the task's moves nothing."""
        entry = self.open.get((task_id, node))
        if (entry is None or entry.retry or entry.tenant != tenant or entry.dispatch_id != dispatch_id
                or entry.deadline >= now + entry.window):
            return False
        self.open[(task_id, node)] = replace(entry, deadline=now + entry.window)
        return True

    def drop(self, task_id: str) -> None:
        for key in [k for k in self.open if k[0] == task_id]:
            del self.open[key]

    def expired(self, now: datetime, *, caught_up: bool, read_through: datetime | None,
                mine: Callable[[str], bool] = lambda _: True) -> list[Envelope]:
        """Inputs for the dispatches whose deadline passed and whose results cannot still be queued:
        the router has caught up with its stream, or has read a message stored after the deadline. Only
        tasks `mine` says are this router's (with partitions, their owner fires them)."""
        due = []
        for (task_id, node), entry in self.open.items():
            if entry.deadline > now or not mine(task_id):
                continue
            if not caught_up and (read_through is None or read_through < entry.deadline):
                continue
            data: NodeRetryDue | NodeDeadlineExpired
            if entry.retry:
                event_id = derive_id(task_id, node, entry.attempt, "retry-due", entry.deadline.isoformat())
                data = NodeRetryDue(node=node, attempt=entry.attempt, at=entry.deadline)
            else:
                event_id = derive_id(entry.dispatch_id, "deadline")
                data = NodeDeadlineExpired(dispatch_id=entry.dispatch_id, node=node, attempt=entry.attempt)
            due.append(command(data, id=event_id, source=SOURCE, tenant=entry.tenant, task_id=task_id,
                               correlation_id=entry.correlation_id, causation_id=entry.dispatch_id or None))
        return due
