"""Records: what the router is given, and the stored form of an input it applied.

An input is an event from the bus (or from the router's own timers) plus whatever the shell looked up
for it: the workflow revision a new task runs, a fork's source records, the tenant's admission
decision, the task an idempotency key names, the prices a task with a budget
reserves with. When an input changes anything, the store records it
first, as a `router.input` record, followed by the decisions it produced; replaying those records
(core.replay feeds the inputs read back by input_from_record through `decide` again) reproduces the
decisions exactly. Pages:
docs/workflows/fork.md (replay), docs/architecture.md (what is stored).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from agent_engine.contracts.envelope import Envelope, caused_by, derive_id
from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.contracts.pricing import PriceTable, parse
from agent_engine.router.admission import Admission
from agent_engine.router.budgets import DayRoom
from agent_engine.router.idempotency import Duplicate

SOURCE = "agent-engine/router"
INPUT_RECORD = "router.input"


@dataclass(frozen=True)
class Resolved:
    """The workflow revision the shell looked up for a task.accepted input (None: not found)."""

    revision: str
    manifest: WorkflowManifest


@dataclass(frozen=True)
class RouterInput:
    event: Envelope
    workflow: Resolved | None = None
    source: tuple[Envelope, ...] | None = None
    """For task.fork_requested: the source task's stored records, as the shell found them."""
    admission: Admission | None = None
    """For task.accepted under tenant limits: what the tenant's admission log decided (None: no limits)."""
    duplicate: Duplicate | None = None
    """For task.accepted with an idempotency key: the task the key names within the window (None: none)."""
    prices: PriceTable | None = None
    """For an input that starts a task with a budget (its workflow's, or its tenant's day budgets): the price
    rows its models are priced by."""
    rooms: tuple[DayRoom, ...] | None = None
    """For an input to a task its tenant's day budgets apply to: what each has left (budgets.py)."""
    withheld: tuple[str, ...] | None = None
    """For task.accepted: the tools (by tools.yaml name) of MCP servers the deployment keeps from this tenant, as
    the catalogue said when the task was accepted; the task does not start (None: none)."""


class InvalidInput(ValueError):
    """An input the router can never apply: its payload is not valid for its type, or it contradicts
    itself (a subtask request naming a node its manifest does not have). The shell dead-letters it."""


def input_record(inp: RouterInput) -> Envelope:
    """The stored form of an applied input: the input itself plus what the shell resolved for it."""
    resolved = None
    if inp.workflow is not None:
        resolved = {"revision": inp.workflow.revision,
                    "manifest": inp.workflow.manifest.model_dump(mode="json", by_alias=True)}
    event = inp.event
    data: dict[str, Any] = {"input": event.to_wire(), "workflow": resolved}
    if inp.source is not None:  # another tenant's records are never stored, whatever the shell passed
        own = all(r.tenant == event.tenant for r in inp.source)
        data["source"] = [r.to_wire() for r in inp.source] if own else []
    if inp.admission is not None:
        data["admission"] = asdict(inp.admission)
    if inp.duplicate is not None:
        data["duplicate"] = asdict(inp.duplicate)
    if inp.prices is not None:
        data["prices"] = inp.prices.to_json()
    if inp.rooms is not None:
        data["rooms"] = [{"scope": r.scope, "day": r.day, "limit": str(r.limit), "available": str(r.available)}
                         for r in inp.rooms]
    if inp.withheld is not None:
        data["withheld"] = list(inp.withheld)
    # trusted: the input was validated, and what is added to it was built here from validated values
    return caused_by(event, data, type=INPUT_RECORD, id=derive_id(event.id, "input"), source=SOURCE, time=event.time,
                     trusted=True)


def input_from_record(record: Envelope) -> RouterInput:
    resolved = record.data.get("workflow")
    workflow = None
    if resolved:
        workflow = Resolved(resolved["revision"], WorkflowManifest.model_validate(resolved["manifest"]))
    source = record.data.get("source")
    admission = record.data.get("admission")
    duplicate = record.data.get("duplicate")
    prices = record.data.get("prices")
    rooms = record.data.get("rooms")
    withheld = record.data.get("withheld")
    return RouterInput(Envelope.model_validate(record.data["input"]), workflow,
                       tuple(Envelope.model_validate(r) for r in source) if source is not None else None,
                       Admission(**admission) if admission else None,
                       Duplicate(**duplicate) if duplicate else None,
                       parse(prices) if prices else None,
                       tuple(DayRoom(r["scope"], r["day"], Decimal(r["limit"]), Decimal(r["available"])) for r in rooms)
                       if rooms is not None else None,
                       tuple(withheld) if withheld is not None else None)
