"""The emitter: how a decision is written down while an input is decided.

Each decision becomes an envelope with an id derived from the input's (uuid5 of the input id and
the decision's position) and the input's time, so deciding the same input again produces the same
records. The emitter folds each one at once, so every later decision sees the state the earlier ones
led to. Determinism and what is stored: docs/architecture.md (the router).
"""

from __future__ import annotations

from typing import Any

from agent_engine.contracts.envelope import Envelope, caused_by, derive_id
from agent_engine.router.budgets import DayRoom
from agent_engine.router.folds import evolve
from agent_engine.router.records import SOURCE
from agent_engine.router.state import TaskState
from agent_engine.runtime import tracing


class Emitter:
    """Builds output envelopes with ids derived from the input and time taken from it, and keeps the
    state they lead to, so each decision sees the ones before it."""

    def __init__(self, state: TaskState, cause: Envelope) -> None:
        self.cause = cause
        self.state = state
        self.task_id = state.task_id or cause.task_id
        self.tenant = state.tenant or cause.tenant
        self.correlation_id = state.correlation_id or cause.correlation_id
        self.now = cause.time
        self.events: list[Envelope] = []
        self.rooms: tuple[DayRoom, ...] = ()
        """What the day budgets that apply to the input's task have left (budgets.py); () when none apply."""

    def traceparent(self) -> str | None:
        """The trace context a record carries: its task's `invoke_workflow` span once the task has one (traces.py);
        before that (the task.started record itself) the input's, which the started task takes as its parent."""
        trace = self.state.trace
        if trace is not None:
            return trace.traceparent
        if self.state.started_at is not None:  # started without trace context: its records carry none (traces.py)
            return None
        given = self.cause.traceparent  # only a well-formed one is passed on: a sender's junk stays with its input
        return given if given is not None and tracing.parse_traceparent(given) is not None else None

    def add(self, data: Any, *, task_id: str | None = None) -> None:
        """Record `data`; `task_id` addresses another task (a subtask or the parent), stored here."""
        # trusted: every field is built here from validated values, so skip re-validation
        envelope = caused_by(self.cause, data, id=derive_id(self.cause.id, len(self.events)), source=SOURCE,
                             time=self.now, tenant=self.tenant, task_id=task_id or self.task_id,
                             correlation_id=self.correlation_id, trusted=True, traceparent=self.traceparent())
        self.events.append(envelope)
        self.state = evolve(self.state, envelope)
