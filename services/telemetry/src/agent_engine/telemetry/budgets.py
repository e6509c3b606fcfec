"""Budgets in the ledger: what the router reserved and what was spent against tasks' budgets, folded from its
`budget.*` records (docs/guardrails.md, Budgets). Pure: one event becomes one row of deltas, and rows sum to a
task's line (limit, reserved now, spent, counts) or a tenant-day's (the reservations made and the spend settled
that UTC day, over the tenant's budgeted tasks)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import parse_data

TYPES = frozenset({"budget.opened", "budget.reserved", "budget.settled", "budget.exceeded", "budget.alert"})
SUBJECT_SUFFIXES = tuple(f".{t}" for t in TYPES)
ZERO = Decimal(0)


@dataclass(frozen=True)
class Row:
    """One budget record as sums: the reservation it adds (a settlement's is negative), the spend it adds."""

    type: str
    day: str
    reserved: Decimal = ZERO
    spent: Decimal = ZERO
    limit: Decimal | None = None
    entry: dict[str, Any] | None = None
    """What the task's budget log shows of it."""

    @property
    def share(self) -> bool:
        """A SPLIT's reservation (or settlement) of a subtask's share: counted in its task, not in a tenant's day,
        where the subtask's own records count what it spent."""
        return bool(self.entry and self.entry.get("subtask"))


def row_of(event: Envelope) -> Row | None:
    """The row of a budget record (None for another type, or a day log's copy); one that is not valid raises
    ValueError (or ArithmeticError for an amount that is no decimal)."""
    if event.type not in TYPES:
        return None
    data = parse_data(event.type, event.data).model_dump(mode="json", exclude_none=True)
    if event.type in ("budget.reserved", "budget.settled") and data.get("scope", "task") != "task":
        return None  # a day log's copy of a task's record: the task's own record is counted
    day = event.time.date().isoformat()
    entry = {"type": event.type, "time": event.time.isoformat(),
             **{k: v for k, v in data.items() if k not in ("prices", "scope")}}
    if event.type == "budget.opened":
        limit = data.get("limit_usd")  # absent: only day budgets apply to the task
        return Row(event.type, day, limit=Decimal(limit) if limit is not None else None, entry=entry)
    if event.type == "budget.reserved":
        return Row(event.type, day, reserved=Decimal(data["amount_usd"]), entry=entry)
    if event.type == "budget.settled":
        return Row(event.type, day, reserved=-Decimal(data["released_usd"]), spent=Decimal(data["cost_usd"]),
                   entry=entry)
    return Row(event.type, day, entry=entry)


@dataclass
class BudgetLine:
    limit: Decimal | None = None
    reserved: Decimal = ZERO
    spent: Decimal = ZERO
    reservations: int = 0
    settlements: int = 0
    exceeded: int = 0
    alerts: int = 0

    def add(self, row: Row) -> None:
        if row.limit is not None:
            self.limit = row.limit
        self.reserved += row.reserved
        self.spent += row.spent
        self.reservations += row.type == "budget.reserved"
        self.settlements += row.type == "budget.settled"
        self.exceeded += row.type == "budget.exceeded"
        self.alerts += row.type == "budget.alert"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reserved_usd": usd(self.reserved), "spent_usd": usd(self.spent),
                               "reservations": self.reservations, "settlements": self.settlements,
                               "exceeded": self.exceeded, "alerts": self.alerts}
        if self.limit is not None:
            out["limit_usd"] = usd(self.limit)
        return out


def usd(amount: Decimal) -> str:
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "") else text
