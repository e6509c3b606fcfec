"""The base of every event payload, and what marks a type as router-internal."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class EventData(BaseModel):
    """The payload (`Envelope.data`) of one event type, named by `TYPE` (the envelope's `type`).

    `INTERNAL` marks a type the router makes for itself: only the router writes it and only the router
    acts on it. Such an event is an input the router sends itself, through the bus (router to router, so
    that whichever router consumes it applies it: `task.admitted`, `subtask.requested`,
    `subtask.finished`) or straight from its own timers and never published (`node.deadline_expired`,
    `node.retry_due`), or a record of its own bookkeeping (a tenant's admission log: `tenant.admitted`,
    `tenant.queued`, `tenant.released`). Another system may see the published ones on the stream
    (telemetry counts every type) but must never send one: the router takes such an input as its own
    decision (a `task.admitted` from elsewhere would start a queued task past its tenant's limit).
    Records the router writes for anyone to read (`node.succeeded`, `subtask.settled`, `task.queued`, ...)
    are not internal, even though the router folds them into its own state too.
    """

    model_config = ConfigDict(extra="ignore")
    TYPE: ClassVar[str]
    INTERNAL: ClassVar[bool] = False
    """True for a router-internal type (see above); `INTERNAL_TYPES` lists them."""
