"""Budgets: what a task may spend on LLM calls, reserved before each agent dispatch and settled on its result.

The router records these in the task's own history, in the same transaction as the dispatch or result they
concern, so a redelivered result settles nothing twice and a replay decides the same. Money is an exact
decimal in a string (USD). Page: docs/guardrails.md (Budgets).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from agent_engine.contracts.events.base import EventData

Scope = Literal["task", "tenant-day", "user-day"]
"""Which budget a record is about: the task's, or the tenant's or user's for one UTC day (router configuration).
A task's history holds `task` records; each reservation and settlement that counts against a day budget is also
recorded, with that scope, in the day's own log (aggregate `tenant:<tenant>/budget/<day>[/user/<user>]`)."""


class PinnedPrices(BaseModel):
    """The price table rows a task's reservations use, pinned when it starts (replays price the same)."""

    version: str
    models: dict[str, dict[str, str]] = Field(default_factory=dict)
    """model prefix -> {input, output, cache_read, cache_write} USD per million tokens"""


class BudgetOpened(EventData):
    """A task with a budget started: its limit, what happens over it, and the prices it reserves with."""

    TYPE = "budget.opened"
    scope: Scope = "task"
    limit_usd: str | None = None
    """The task's own limit (absent: only day budgets apply to it)."""
    on_exceed: Literal["wait", "fail"] = "fail"
    alert_at: float | None = None
    prices: PinnedPrices
    user: str | None = None
    """The task's `requested_by`, whose user-day budget it counts against."""


class BudgetReserved(EventData):
    """Before an agent dispatch: its worst-case cost is set aside (the dispatch carries it as `budget_usd`)."""

    TYPE = "budget.reserved"
    scope: Scope = "task"
    dispatch_id: str
    node: str
    amount_usd: str
    """The worst case: (1 + max_repairs) calls, each max_tokens at the dearest output price plus an upper
    bound of its input tokens at the dearest input price, over every model the dispatch may use."""
    models: list[str] = Field(default_factory=list)
    reserved_usd: str
    """Everything the task (or, for a day scope, the day) holds reserved after this one."""
    spent_usd: str
    limit_usd: str | None = None
    day: str | None = None
    """The UTC day (of the input that made the dispatch) whose budgets it also counts against."""
    user: str | None = None
    """The user whose user-day budget it also counts against."""
    subtask: bool | None = Field(default=None, exclude_if=lambda v: v is None)
    """True: the share of the task's budget given to one subtask of a SPLIT (`dispatch_id` is the subtask's
    task id). The subtask reserves and settles its own calls in its own history, so a tenant's day sums leave
    this record out (its spend would count twice)."""


class BudgetSettled(EventData):
    """A reservation is released and its actual cost added to what was spent: once per dispatch."""

    TYPE = "budget.settled"
    scope: Scope = "task"
    dispatch_id: str
    node: str
    released_usd: str
    """The reservation given back."""
    cost_usd: str
    """The dispatch's actual cost (the sum of its LLM calls), or the whole reservation when no result came."""
    outcome: Literal["result", "unanswered"]
    """`result`: its result came back. `unanswered`: the task ended first; the runner may still have spent,
    so the whole reservation counts as spent (a result that comes later settles nothing)."""
    reserved_usd: str
    spent_usd: str
    limit_usd: str | None = None
    day: str | None = None
    """The reservation's day: the day budgets it is released from."""
    user: str | None = None
    subtask: bool | None = Field(default=None, exclude_if=lambda v: v is None)
    """True: a subtask's share settled with what the subtask spent (see BudgetReserved.subtask)."""


class SubtaskBudget(BaseModel):
    """The budget a SPLIT gives each of its subtasks: an even share of what its task had left, the task's
    policy over it, its prices and its sender (whose day budgets the subtask's calls count against)."""

    limit_usd: str | None = None
    """The share (absent: the task has only day budgets, which the subtask counts against too)."""
    on_exceed: Literal["wait", "fail"] = "fail"
    prices: PinnedPrices
    user: str | None = None


class BudgetExceeded(EventData):
    """An agent dispatch's worst case does not fit what is left of the budget: the node waits or fails."""

    TYPE = "budget.exceeded"
    scope: Scope = "task"
    node: str
    attempt: int
    needed_usd: str
    """The dispatch's worst-case cost ("" when a model it may use has no price, so it has no bound)."""
    available_usd: str
    """The limit less what is spent and reserved."""
    limit_usd: str
    then: Literal["wait", "fail"]
    """A day budget always fails the node: nothing wakes a task when another one frees room in the day."""
    reason: str


class BudgetAlert(EventData):
    """The task has spent `alert_at` of its budget (recorded once per budget)."""

    TYPE = "budget.alert"
    scope: Scope = "task"
    spent_usd: str
    limit_usd: str
    alert_at: float


EVENTS: tuple[type[EventData], ...] = (BudgetOpened, BudgetReserved, BudgetSettled, BudgetExceeded, BudgetAlert)
"""The event types of this topic."""
