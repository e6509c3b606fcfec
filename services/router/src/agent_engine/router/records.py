"""Records: what the router is given, and the stored form of an input it applied.

An input is an event from the bus (or from the router's own timers) plus whatever the shell looked up
for it: the workflow revision a new task runs, a fork's source records, the tenant's admission
decision, the task an idempotency key names, the prices a task with a budget
reserves with. When an input changes anything, the store records it
first, as a `router.input` record, followed by the decisions it produced; replaying those records
(core.replay feeds the inputs read back by input_from_record through `decide` again) reproduces the
decisions exactly. Pages:
docs/workflows/fork.md (replay), docs/architecture.md (what is stored).

A runner's output is stored once: when a decision of the same input (`node.succeeded`, or `node.tool_returned`
for a tool call an agent's model asked for) holds exactly the output the input brought, the input record leaves
it out of its `input` and says beside it which record after it holds it (`output_in`); `restore` puts it back
for everything that reads the input (replay, `task history`). A record without `output_in` (every record
stored before, any whose output a decision changed, and an output no longer than the marker, `{}`) holds its
input whole.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
OUTPUT_IN = "output_in"
"""In a `router.input` record's data, beside `input`: n, where the input's output, left out of the stored `input`,
is the `output` of the n-th record after this one (a decision of the same input). Absent: `input` is whole."""
CARRY_OUTPUT = ("node.completed", "node.output_checked")
"""The inputs that bring a runner's output."""
HOLD_OUTPUT = ("node.succeeded", "node.tool_returned")
"""The decisions that record such an output as the node's (or its tool call's) result."""


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


def input_record(inp: RouterInput, decisions: Sequence[Envelope] = ()) -> Envelope:
    """The stored form of an applied input: the input itself plus what the shell resolved for it. When one of
    `decisions` (what the input caused) holds the input's output unchanged, the output is left to it."""
    resolved = None
    if inp.workflow is not None:
        resolved = {"revision": inp.workflow.revision,
                    "manifest": inp.workflow.manifest.model_dump(mode="json", by_alias=True)}
    event = inp.event
    wire = event.to_wire()
    holder = output_holder(event.task_id, wire, decisions)
    data: dict[str, Any] = {"input": wire, "workflow": resolved}
    if holder is not None:
        wire["data"] = {k: v for k, v in wire["data"].items() if k != "output"}
        data[OUTPUT_IN] = holder + 1
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


def output_holder(task_id: str, wire: dict[str, Any], decisions: Sequence[Envelope]) -> int | None:
    """Where in `decisions` the first one is that records the output of the input `wire` (as stored) of task
    `task_id` as it came: the same task, node and dispatch, and the same JSON (key order and number types
    included, so the input read back from it is the input that was decided). None: the input keeps its output,
    also when the output takes no more room than the marker would (`{}`)."""
    data = wire.get("data")
    if wire.get("type") not in CARRY_OUTPUT or not isinstance(data, dict) or not isinstance(data.get("output"), dict):
        return None
    output = data["output"]
    text: str | None = None
    for index, decision in enumerate(decisions):
        held = decision.data.get("output")
        if decision.task_id != task_id or not _holds(decision, data) or held != output:
            continue  # `!=` first: cheap, and where it holds the JSON below decides
        text = text if text is not None else _json(output)
        if _json(held) == text:
            return index if len(_OUTPUT_KEY) + len(text) > len(_MARKER.format(index + 1)) else None
    return None


def _holds(decision: Envelope, data: dict[str, Any]) -> bool:
    """Whether `decision` records an output as the result of the node and dispatch the input `data` answers."""
    held = decision.data
    return (decision.type in HOLD_OUTPUT and isinstance(held.get("output"), dict)
            and held.get("dispatch_id") is not None
            and (held.get("node"), held.get("dispatch_id")) == (data.get("node"), data.get("dispatch_id")))


_OUTPUT_KEY = ',"output":'
_MARKER = ',"' + OUTPUT_IN + '":{}'


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Unrestorable(ValueError):
    """A `router.input` record leaves its output to a record that is not among the records given."""


def restore(records: Sequence[Envelope], *, strict: bool = True) -> list[Envelope]:
    """`records` with each input record that left its output to a decision (`output_in`) whole again, exactly
    as it would have been stored without that: what replay feeds back, and what `task history` shows. The
    decision is one of the records after the input record and before the next one (a fork's cut never splits
    them). Raises Unrestorable when it is not there, unless not `strict` (the record then stays as stored)."""
    out = list(records)
    for index, record in enumerate(records):
        if record.type != INPUT_RECORD or OUTPUT_IN not in record.data:
            continue
        inner, offset = record.data.get("input"), record.data[OUTPUT_IN]
        holder = _holder(records, index, offset, inner)
        if holder is None or not isinstance(inner, dict):
            if strict:
                raise Unrestorable(f"{INPUT_RECORD} record {record.id} of task {record.task_id} leaves its input's "
                                   f"output to the record {offset} after it, which is not among the records given "
                                   "(or not that input's decision holding an output)")
            continue
        data = {k: v for k, v in record.data.items() if k != OUTPUT_IN}
        data["input"] = {**inner, "data": {**(inner.get("data") or {}), "output": holder.data["output"]}}
        out[index] = record.model_copy(update={"data": data})
    return out


def _holder(records: Sequence[Envelope], index: int, offset: Any, inner: Any) -> Envelope | None:
    """The decision `offset` records after records[index] holding the output of its input `inner`, if it is."""
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 < offset < len(records) - index:
        return None
    if any(r.type == INPUT_RECORD for r in records[index + 1:index + offset + 1]):
        return None  # another input's decisions
    holder = records[index + offset]
    own = inner.get("data") if isinstance(inner, dict) else None
    return holder if isinstance(own, dict) and _holds(holder, own) else None


def input_from_record(record: Envelope) -> RouterInput:
    """The input a (whole: see `restore`) input record holds."""
    if OUTPUT_IN in record.data:
        raise Unrestorable(f"{INPUT_RECORD} record {record.id} left its input's output to the record "
                           f"{record.data[OUTPUT_IN]} after it: read it through records.restore with the records "
                           "after it")
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
