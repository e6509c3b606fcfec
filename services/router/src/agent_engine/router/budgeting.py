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
    NodeRetryScheduled,
    PinnedPrices,
    SubtaskBudget,
)
from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.contracts.pricing import PriceTable
from agent_engine.router.budgets import (
    ZERO,
    actual_cost,
    alert_due,
    exceeded_reason,
    judge_worst_case,
    manifest_models,
    models_for,
    prompt_bytes,
    recheck_at,
    share_of,
    usd,
    worst_case,
)
from agent_engine.router.emitter import Emitter

RESULTS = frozenset({"node.completed", "node.errored", "node.tools_requested", "node.output_checked"})
"""The inputs that answer a dispatch, and so settle its reservation (with output checks, the gate's answer)."""


def open_budget(out: Emitter, manifest: WorkflowManifest, prices: PriceTable | None, user: str | None,
                requested_usd: str | None = None) -> None:
    """A task starts: record its budget and the prices it reserves with. The shell gives prices only when the
    workflow or the request has a budget, or day budgets apply to the tenant; otherwise nothing is recorded.
    The task's limit is the lower of the workflow's and the request's."""
    if prices is None:
        return
    budget = manifest.budget
    limits = [Decimal(v) for v in (budget.task_usd if budget else None, requested_usd) if v is not None]
    pinned = prices.subset(manifest_models(manifest)).to_json()
    out.add(BudgetOpened(limit_usd=usd(min(limits)) if limits else None,
                         on_exceed=budget.on_exceed if budget else "fail", alert_at=budget.alert_at if budget else None,
                         prices=PinnedPrices.model_validate(pinned), user=user))


def open_subtask_budget(out: Emitter, budget: SubtaskBudget | None) -> None:
    """A subtask starts with the budget its SPLIT gave it (nothing without one)."""
    if budget is not None:
        out.add(BudgetOpened(limit_usd=budget.limit_usd, on_exceed=budget.on_exceed, prices=budget.prices,
                             user=budget.user))


def share_out(out: Emitter, split: str, subtasks: list[str]) -> SubtaskBudget | None:
    """A SPLIT fans out in a task with a budget: each subtask gets an even share of what is left, reserved here
    (by the subtask's id) until the subtask says what it spent, so the task's spent + reserved stays within its
    limit whatever the subtasks do. A task with only day budgets reserves nothing: each subtask counts its own
    calls against the same day budgets."""
    ledger = out.state.budget
    if ledger is None or not subtasks:
        return None
    share = share_of(ledger, len(subtasks))
    for subtask_id in subtasks if share is not None else ():
        ledger = out.state.budget
        assert ledger is not None and ledger.limit is not None and share is not None
        out.add(BudgetReserved(dispatch_id=subtask_id, node=split, amount_usd=usd(share),
                               reserved_usd=usd(ledger.reserved + share), spent_usd=usd(ledger.spent),
                               limit_usd=usd(ledger.limit), subtask=True))
    return SubtaskBudget(limit_usd=_usd(share), on_exceed=ledger.on_exceed,  # type: ignore[arg-type]
                         prices=PinnedPrices.model_validate(ledger.prices.to_json()), user=ledger.user)


def settle_subtask(out: Emitter, subtask_id: str, spent_usd: str | None) -> None:
    """A subtask ended: its share is settled with what it spent (the whole share when it does not say)."""
    ledger = out.state.budget
    entry = ledger.open.get(subtask_id) if ledger is not None else None
    if ledger is None or entry is None or subtask_id not in ledger.shares:
        return
    _settle(out, subtask_id, entry, Decimal(spent_usd) if spent_usd is not None else entry[1], "result")


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
    judge = built.check_output.judge if built.check_output is not None else None
    if judge is not None and isinstance(needed, Decimal):  # the output gate's judge is paid from this reservation
        extra = judge_worst_case(ledger.prices, judge, agent, size)
        needed = extra if isinstance(extra, str) else needed + extra
    if isinstance(needed, Decimal) and ledger.fits(needed):
        short = _day_short(out, built, needed)
        if short != "":
            return short
        rooms = out.rooms
        user = ledger.user if any(r.scope == "user-day" for r in rooms) else None
        out.add(BudgetReserved(dispatch_id=built.dispatch_id, node=built.node, amount_usd=usd(needed), models=models,
                               reserved_usd=usd(ledger.reserved + needed), spent_usd=usd(ledger.spent),
                               limit_usd=_usd(ledger.limit), day=rooms[0].day if rooms else None, user=user))
        return built.model_copy(update={"budget_usd": usd(needed)})
    # waiting helps only while a reservation is open that, settled, could leave room
    may_fit = (isinstance(needed, Decimal) and bool(ledger.open) and ledger.limit is not None
               and needed <= ledger.limit - ledger.spent)
    if resuming and may_fit:
        return None
    wait = ledger.on_exceed == "wait" and may_fit
    reason = exceeded_reason(built.node, needed, ledger)
    if ledger.on_exceed == "wait" and not wait:
        reason += "; nothing the task runs holds a reservation that could free room, so it cannot wait"
    out.add(BudgetExceeded(node=built.node, attempt=built.attempt, needed_usd=usd(needed) if isinstance(
        needed, Decimal) else "", available_usd=_usd(ledger.available) or "", limit_usd=_usd(ledger.limit) or "",
        then="wait" if wait else "fail", reason=reason))
    return None if wait else f"over budget: {reason}"


def _day_short(out: Emitter, built: NodeDispatched, needed: Decimal) -> str | None:
    """When a day budget has no room for `needed` beside what this input reserved already: the failure, or None
    when the node waits (on_exceed: wait) for the next try, scheduled on the router's timers ("": it fits)."""
    used = sum((Decimal(e.data["amount_usd"]) for e in out.events if e.type == "budget.reserved"), ZERO)
    for room in out.rooms:
        if used + needed <= room.available:
            continue
        user = out.state.budget.user if out.state.budget else None
        whose = f"tenant '{out.tenant}'" if room.scope == "tenant-day" else f"user '{user}' of tenant '{out.tenant}'"
        left = max(room.available - used, ZERO)
        reason = (f"node '{built.node}' needs up to ${usd(needed)} (worst case) but only ${usd(left)} of the "
                  f"{room.scope} budget of ${usd(room.limit)} of {whose} for {room.day} (UTC) is left")
        wait = out.state.budget is not None and out.state.budget.on_exceed == "wait" and needed <= room.limit
        at = recheck_at(out.now)
        if wait:
            reason += f"; it waits, and tries again at {at.isoformat()}"
        out.add(BudgetExceeded(scope=room.scope, node=built.node, attempt=built.attempt,  # type: ignore[arg-type]
                               needed_usd=usd(needed), available_usd=usd(left), limit_usd=usd(room.limit),
                               then="wait" if wait else "fail", reason=reason))
        if not wait:
            return f"over budget: {reason}"
        # the router's timers wake it (node.retry_due): room may have freed by then, or the day changed
        out.add(NodeRetryScheduled(node=built.node, attempt=built.attempt, at=at,
                                   delay_s=(at - out.now).total_seconds(), reason=f"room in the {room.scope} budget"))
        return None
    return ""


def _usd(amount: Decimal | None) -> str | None:
    return None if amount is None else usd(amount)


def settle_result(out: Emitter, dispatch_id: str, calls: list[LlmCallNote] | None) -> None:
    """A dispatch's result is in: settle its reservation with what its calls cost (once: a settled or unknown
    dispatch id records nothing)."""
    ledger = out.state.budget
    entry = ledger.open.get(dispatch_id) if ledger is not None else None
    if ledger is None or entry is None:
        return
    _settle(out, dispatch_id, entry, actual_cost(calls, entry[1]), "result")


def settle_unanswered(out: Emitter) -> None:
    """The task ends: every reservation still open is settled at its full amount (its runner may yet spend)."""
    ledger = out.state.budget
    if ledger is None:
        return
    for dispatch_id, entry in sorted(ledger.open.items()):
        _settle(out, dispatch_id, entry, entry[1], "unanswered")


def _settle(out: Emitter, dispatch_id: str, entry: tuple[str, Decimal, str | None, str | None], cost: Decimal,
            outcome: str) -> None:
    ledger = out.state.budget
    assert ledger is not None
    node, amount, day, user = entry
    out.add(BudgetSettled(dispatch_id=dispatch_id, node=node, released_usd=usd(amount), cost_usd=usd(cost),
                          outcome=outcome, reserved_usd=usd(ledger.reserved - amount),  # type: ignore[arg-type]
                          spent_usd=usd(ledger.spent + cost), limit_usd=_usd(ledger.limit), day=day, user=user,
                          subtask=True if dispatch_id in ledger.shares else None))
    ledger = out.state.budget
    if ledger is not None and alert_due(ledger) and ledger.alert_at is not None and ledger.limit is not None:
        out.add(BudgetAlert(spent_usd=usd(ledger.spent), limit_usd=usd(ledger.limit), alert_at=ledger.alert_at))
