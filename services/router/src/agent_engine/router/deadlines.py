"""The router's only timers, outside the pure core: dispatch deadlines and scheduled retries.

When a deadline passes, the shell feeds a `node.deadline_expired` input to the core; when a retry's
time comes, a `node.retry_due` input. Ids derive from the dispatch or the attempt, so a repeat is
absorbed. Timers fire only once the router has read every input stored before their time, so
results already waiting in the stream settle their nodes first.

A node that waits for room in a day budget (a retry scheduled after `budget.exceeded` with a day scope) is
also woken early: when the index sees a day log's copy of a settlement that leaves the day room for what the
node needs, its retry fires at once, as a `node.retry_due` for the time it was scheduled for (so the core takes
it as that retry) with an id of its own. The poll at the scheduled time stays the backstop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from agent_engine.contracts.envelope import Envelope, command, derive_id
from agent_engine.contracts.events import NodeDeadlineExpired, NodeRetryDue
from agent_engine.router.budgets import DAY_SCOPES, day_of
from agent_engine.router.core import SOURCE
from agent_engine.router.state import TaskState


@dataclass(frozen=True)
class Room:
    """What a node waiting for a day budget waits for: room for `needed` USD in its `scope` budget of `day`."""

    scope: str
    day: str
    needed: Decimal


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
    room: Room | None = None
    """A retry that waits for room in a day budget: a settlement that frees enough wakes it before `deadline`."""
    woken: bool = False
    """Such a retry whose room freed: it fires now rather than at `deadline`."""
    woken_by: str = ""
    """The id of the day log's copy of the settlement that freed that room: in the id of the input the wake fires,
    so a node woken, still short and waiting again for the same `deadline`, is woken again by a later settlement
    (with the same id the core would take the second wake for the first, repeated, and absorb it)."""


class DeadlineIndex:
    def __init__(self) -> None:
        self.open: dict[tuple[str, str], Open] = {}
        self.waits: dict[tuple[str, str], Room] = {}
        """Nodes just found short of a day budget: the retry scheduled next (same commit) waits for this room."""
        self.freed: dict[tuple[str, str, str, str], tuple[Decimal, str]] = {}
        """(tenant, scope, day, user) -> what the day budget has left, for each day a settlement freed room in since
        the timers last looked (kept current by the copies after it: a reservation the same input made takes its
        share). The retries it wakes are found then, once every record of the commit has been observed (a wait
        decided in the same batch included)."""

    def observe(self, record: Envelope) -> None:
        """Follow one committed record (a task's, or a day log's copy of a reservation or settlement)."""
        data = record.data
        if record.type == "budget.exceeded" and data.get("then") == "wait" and data.get("scope") in DAY_SCOPES:
            room = Room(data["scope"], day_of(record), Decimal(data["needed_usd"]))
            self.waits[(record.task_id, data["node"])] = room
        elif record.type in ("budget.settled", "budget.reserved") and data.get("scope") in DAY_SCOPES:
            self._day_copy(record)
        elif record.type == "node.dispatched":
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
                record.tenant, record.correlation_id, retry=True, room=self.waits.pop((record.task_id, data["node"]),
                                                                                      None))
        elif record.type in ("node.succeeded", "node.failed"):
            self.open.pop((record.task_id, data["node"]), None)
        elif record.type in ("task.succeeded", "task.failed", "task.rejected", "task.cancelled"):
            self.drop(record.task_id)

    def sync(self, state: TaskState) -> None:
        """Make the task's entries match its state as loaded from the store (the truth). A retry's wait for room
        in a day budget is not in the state: it is kept from the entry for the same retry."""
        known = {node: entry for (task_id, node), entry in self.open.items() if task_id == state.task_id}
        self.drop(state.task_id)
        if state.terminal:
            return
        for node_id, node in state.nodes.items():
            if node.status == "dispatched" and node.dispatch_id and node.deadline:
                window = node.deadline - node.dispatched_at if node.dispatched_at else timedelta(0)
                self.open[(state.task_id, node_id)] = Open(node.dispatch_id, node.attempts, node.deadline,
                                                           state.tenant, state.correlation_id, window=window)
            elif node.status == "retry_scheduled" and node.deadline:
                same = known.get(node_id)
                room = same.room if same is not None and same.retry and same.deadline == node.deadline else None
                self.open[(state.task_id, node_id)] = Open("", node.attempts + 1, node.deadline, state.tenant,
                                                           state.correlation_id, retry=True, room=room)

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
        for key in [k for k in self.waits if k[0] == task_id]:
            del self.waits[key]

    def _day_copy(self, record: Envelope) -> None:
        """A day log's copy of a reservation or settlement: a settlement that cost less than it released freed room
        in that day; its totals, and those of the copies after it, say how much is left."""
        data = record.data
        key = (record.tenant, data["scope"], data.get("day") or day_of(record),
               (data.get("user") or "") if data["scope"] == "user-day" else "")
        frees = record.type == "budget.settled" and Decimal(data["cost_usd"]) < Decimal(data["released_usd"])
        limit = data.get("limit_usd")
        if limit is not None and (frees or key in self.freed):
            by = record.id if frees else self.freed[key][1]
            self.freed[key] = (Decimal(limit) - Decimal(data["spent_usd"]) - Decimal(data["reserved_usd"]), by)

    def wake(self) -> None:
        """Mark the retries waiting for room that the settlements seen since the last call leave room for. Whose
        user-day budget a node waits for is not in its records: a user-day wait is woken by room in any user's of
        its tenant and day (one woken for another user's room tries, and waits again)."""
        if not self.freed:
            return
        most: dict[tuple[str, str, str], tuple[Decimal, str]] = {}
        for (tenant, scope, day, _), (left, by) in self.freed.items():
            most[(tenant, scope, day)] = max((left, by), most.get((tenant, scope, day), (left, by)))
        self.freed = {}
        for key, entry in self.open.items():
            room = entry.room
            free = most.get((entry.tenant, room.scope, room.day)) if room is not None else None
            if room is not None and free is not None and room.needed <= free[0] and not entry.woken:
                self.open[key] = replace(entry, woken=True, woken_by=free[1])

    def fired(self, task_id: str, node: str) -> None:
        """A woken retry was given to the core: it is not woken again (what it recorded, if anything, replaced it)."""
        entry = self.open.get((task_id, node))
        if entry is not None and entry.woken:
            self.open[(task_id, node)] = replace(entry, woken=False)

    def expired(self, now: datetime, *, caught_up: bool, read_through: datetime | None,
                mine: Callable[[str], bool] = lambda _: True) -> list[Envelope]:
        """Inputs for the dispatches whose deadline passed and whose results cannot still be queued:
        the router has caught up with its stream, or has read a message stored after the deadline. Only
        tasks `mine` says are this router's (with partitions, their owner fires them). A retry woken by a
        settlement that freed room in its day budget fires at once (no result of it can be queued: it has no
        open dispatch)."""
        self.wake()
        due = []
        for (task_id, node), entry in self.open.items():
            if (entry.deadline > now and not entry.woken) or not mine(task_id):
                continue
            if not entry.woken and not caught_up and (read_through is None or read_through < entry.deadline):
                continue
            data: NodeRetryDue | NodeDeadlineExpired
            if entry.woken:  # the same retry (its `at`), early: an id of its own, so the poll is not taken for it
                event_id = derive_id(task_id, node, entry.attempt, "room-freed", entry.deadline.isoformat(),
                                     entry.woken_by)
                data = NodeRetryDue(node=node, attempt=entry.attempt, at=entry.deadline)
            elif entry.retry:
                event_id = derive_id(task_id, node, entry.attempt, "retry-due", entry.deadline.isoformat())
                data = NodeRetryDue(node=node, attempt=entry.attempt, at=entry.deadline)
            else:
                event_id = derive_id(entry.dispatch_id, "deadline")
                data = NodeDeadlineExpired(dispatch_id=entry.dispatch_id, node=node, attempt=entry.attempt)
            due.append(command(data, id=event_id, source=SOURCE, tenant=entry.tenant, task_id=task_id,
                               correlation_id=entry.correlation_id, causation_id=entry.dispatch_id or None))
        return due
