"""A task's budget at work while an input is decided: pinned at its start, a reservation before each agent
dispatch (or the node waits or fails), settled once per dispatch on its result or at the task's end, and the
alert. The decisions themselves are pure, in budgets.py; this records them through the emitter. A task
without a budget records nothing here. Page: docs/guardrails.md (Budgets).
"""

from __future__ import annotations

from decimal import Decimal

from agent_engine.contracts.events import (
    BudgetAlert,
    BudgetExceeded,
    BudgetOpened,
    BudgetReserved,
    BudgetSettled,
    LlmCallNote,
    NodeDispatched,
    PinnedPrices,
)
from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.contracts.pricing import PriceTable
from agent_engine.router.budgets import (
    actual_cost,
    alert_due,
    exceeded_reason,
    manifest_models,
    models_for,
    prompt_bytes,
    usd,
    worst_case,
)
from agent_engine.router.emitter import Emitter

RESULTS = frozenset({"node.completed", "node.errored", "node.tools_requested"})
"""The inputs that answer a dispatch, and so settle its reservation."""


def open_budget(out: Emitter, manifest: WorkflowManifest, prices: PriceTable | None) -> None:
    """A task starts: record its budget and the prices it reserves with (none: the workflow has no budget)."""
    budget = manifest.budget
    if budget is None or prices is None:
        return
    pinned = prices.subset(manifest_models(manifest)).to_json()
    out.add(BudgetOpened(limit_usd=budget.task_usd, on_exceed=budget.on_exceed, alert_at=budget.alert_at,
                         prices=PinnedPrices.model_validate(pinned)))


def reserve(out: Emitter, built: NodeDispatched, resuming: bool = False) -> NodeDispatched | str | None:
    """Reserve an agent dispatch's worst case. Returns the dispatch to record (carrying its reservation), the
    reason the node fails, or None: it waits (a node already waiting that still does not fit records nothing)."""
    ledger = out.state.budget
    agent = built.agent
    if ledger is None or agent is None or built.kind != "agent":
        return built
    models = models_for(agent, built.model_choice.model if built.model_choice else agent.model)
    size = prompt_bytes(agent, built.context, agent.output_schema_json, agent.tool_defs)
    needed = worst_case(ledger.prices, agent, models, size, bool(built.context.summarise))
    if isinstance(needed, Decimal) and ledger.fits(needed):
        out.add(BudgetReserved(dispatch_id=built.dispatch_id, node=built.node, amount_usd=usd(needed), models=models,
                               reserved_usd=usd(ledger.reserved + needed), spent_usd=usd(ledger.spent),
                               limit_usd=usd(ledger.limit)))
        return built.model_copy(update={"budget_usd": usd(needed)})
    # waiting helps only while a reservation is open that, settled, could leave room
    may_fit = isinstance(needed, Decimal) and bool(ledger.open) and needed <= ledger.limit - ledger.spent
    if resuming and may_fit:
        return None
    wait = ledger.on_exceed == "wait" and may_fit
    reason = exceeded_reason(built.node, needed, ledger)
    if ledger.on_exceed == "wait" and not wait:
        reason += "; nothing the task runs holds a reservation that could free room, so it cannot wait"
    out.add(BudgetExceeded(node=built.node, attempt=built.attempt, needed_usd=usd(needed) if isinstance(
        needed, Decimal) else "", available_usd=usd(ledger.available), limit_usd=usd(ledger.limit),
        then="wait" if wait else "fail", reason=reason))
    return None if wait else f"over budget: {reason}"


def settle_result(out: Emitter, dispatch_id: str, calls: list[LlmCallNote] | None) -> None:
    """A dispatch's result is in: settle its reservation with what its calls cost (once: a settled or unknown
    dispatch id records nothing)."""
    ledger = out.state.budget
    entry = ledger.open.get(dispatch_id) if ledger is not None else None
    if ledger is None or entry is None:
        return
    node, amount = entry
    _settle(out, dispatch_id, node, amount, actual_cost(calls, amount), "result")


def settle_unanswered(out: Emitter) -> None:
    """The task ends: every reservation still open is settled at its full amount (its runner may yet spend)."""
    ledger = out.state.budget
    if ledger is None:
        return
    for dispatch_id, (node, amount) in sorted(ledger.open.items()):
        _settle(out, dispatch_id, node, amount, amount, "unanswered")


def _settle(out: Emitter, dispatch_id: str, node: str, amount: Decimal, cost: Decimal, outcome: str) -> None:
    ledger = out.state.budget
    assert ledger is not None
    out.add(BudgetSettled(dispatch_id=dispatch_id, node=node, released_usd=usd(amount), cost_usd=usd(cost),
                          outcome=outcome, reserved_usd=usd(ledger.reserved - amount),  # type: ignore[arg-type]
                          spent_usd=usd(ledger.spent + cost), limit_usd=usd(ledger.limit)))
    ledger = out.state.budget
    if ledger is not None and alert_due(ledger) and ledger.alert_at is not None:
        out.add(BudgetAlert(spent_usd=usd(ledger.spent), limit_usd=usd(ledger.limit), alert_at=ledger.alert_at))
