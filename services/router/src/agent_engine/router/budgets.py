"""A task's LLM budget, pure: the ledger folded from its budget records, and the decisions made on it.

Before each agent dispatch the router reserves the dispatch's worst-case cost; the reservation is settled
(released, and the actual cost added) once, when the dispatch's result comes in or, unanswered, when the task
ends. A dispatch is only made when spent + reserved + its worst case stays within the limit, so whatever
the order of results, redeliveries and crashes, what is spent never exceeds the limit as long as no dispatch
costs more than its reservation (the agent-runner enforces that). No clock and no I/O: the prices are pinned
in the task's `budget.opened`. Page: docs/guardrails.md (Budgets); the shell is budgeting.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from agent_engine.contracts.artifacts import as_ref
from agent_engine.contracts.envelope import Envelope, derive_id
from agent_engine.contracts.events import LlmCallNote, NodeContext
from agent_engine.contracts.manifest import AgentSpec, WorkflowManifest
from agent_engine.contracts.policy import JudgeRule
from agent_engine.contracts.pricing import PriceTable, parse

MOCK_MODEL = "mock-1"
"""The model the mock provider reports: a runner with AE_PROVIDER=mock (or `auto` without keys) uses it
whatever the agent names, so it is priced too."""
RUNNER_TEXT_BYTES = 4096
"""An upper bound of what the agent-runner adds to a prompt around the agent's texts (instructions, headings)."""
REPAIR_NOTE_BYTES = 4096
"""An upper bound of the problem note a repair turn adds besides the model's previous reply."""
ZERO = Decimal(0)


@dataclass(frozen=True)
class Wait:
    """A node that waits for room in the budget: the attempt it will be dispatched as."""

    attempt: int


@dataclass(frozen=True)
class Ledger:
    limit: Decimal | None
    """The task's own limit (None: only day budgets apply)."""
    on_exceed: str
    alert_at: float | None
    prices: PriceTable
    open: Mapping[str, tuple[str, Decimal, str | None, str | None]] = field(default_factory=dict)
    """dispatch id -> (node, amount reserved, its day, its user), for every reservation not yet settled."""
    spent: Decimal = ZERO
    settled: frozenset[str] = frozenset()
    alerted: bool = False
    waiting: Mapping[str, Wait] = field(default_factory=dict)
    """node -> the dispatch it waits to make, in the order they began to wait."""
    shares: frozenset[str] = frozenset()
    """The open reservations that are subtasks' shares (by subtask id) rather than agent dispatches."""

    user: str | None = None

    @property
    def reserved(self) -> Decimal:
        return sum((entry[1] for entry in self.open.values()), ZERO)

    @property
    def available(self) -> Decimal | None:
        return None if self.limit is None else self.limit - self.spent - self.reserved

    def fits(self, amount: Decimal) -> bool:
        return self.limit is None or self.spent + self.reserved + amount <= self.limit


def manifest_models(manifest: WorkflowManifest) -> list[str]:
    """Every model a workflow's agents may use (their own, the nodes', the tiers', the fallbacks', the mock):
    the price rows a task pins when it starts."""
    out = [MOCK_MODEL, *(n.model for n in manifest.nodes if n.model)]
    judge = manifest.policy.output.judge if manifest.policy and manifest.policy.output else None
    if judge is not None:
        out.append(judge.model)
    for agent in manifest.agents.values():
        out += [agent.model, *(t.model for t in agent.tiers), *(f.model for f in agent.fallbacks)]
    return sorted(set(out))


def models_for(agent: AgentSpec, chosen: str) -> list[str]:
    """Every model a dispatch may be answered by: the one its tiers chose, the agent's fallbacks, the mock."""
    out = [chosen, *(f.model for f in agent.fallbacks), MOCK_MODEL]
    return list(dict.fromkeys(out))


ARTIFACT_FACTOR = 2
"""An artifact's content as the agent-runner writes it in place of its reference, counted at twice its size (JSON
escaping and indenting): an estimate, as the content is not read here; the runner checks the real prompt."""


def _text_bytes(value: Any) -> int:
    """UTF-8 bytes of a value as the agent-runner writes it into a prompt (json.dumps, indent 1), each artifact
    reference in it counted as the content the runner puts in its place."""
    if value is None:
        return 0
    return len(json.dumps(value, indent=1).encode()) + _artifact_bytes(value)


def _artifact_bytes(value: Any) -> int:
    if isinstance(value, dict):
        ref = as_ref(value)
        if ref is not None:
            return ARTIFACT_FACTOR * ref.size
        return sum(_artifact_bytes(v) for v in value.values())
    if isinstance(value, list):
        return sum(_artifact_bytes(v) for v in value)
    return 0


def prompt_bytes(agent: AgentSpec, context: NodeContext, schema: dict[str, Any] | None,
                 tool_defs: Iterable[Any] | None) -> int:
    """An upper bound of the UTF-8 bytes of the prompt the agent-runner builds for this dispatch (its first
    call): the agent's texts, the schema, the tools, the context it shows, and the runner's own text. No
    tokenizer makes more tokens than bytes, so it bounds the input tokens too. The memory section is not
    known here; the runner checks the real prompt against the reservation."""
    conversation = [t.model_dump(exclude_none=True) for t in context.conversation or []]
    summary = context.summary.text if context.summary else ""
    tools = [t.model_dump() if hasattr(t, "model_dump") else t for t in tool_defs or []]
    return (len(agent.system.encode()) + len(agent.prompt.encode()) + _text_bytes(schema) + _text_bytes(tools)
            + _text_bytes(context.input) + _text_bytes(context.upstream) + _text_bytes(context.merged)
            + _text_bytes(context.feedback) + _text_bytes(conversation) + len(summary.encode()) + RUNNER_TEXT_BYTES)


def worst_case(prices: PriceTable, agent: AgentSpec, models: list[str], first_prompt: int,
               summarise: bool = False) -> Decimal | str:
    """The most one agent dispatch can cost: its first call and each repair turn (the prompt grows by the
    previous reply, at most max_tokens, and a note), plus a summary call when asked for one, each with every
    input byte a token at the dearest input price and max_tokens at the dearest output price, over the
    models it may use. A model without a price has no bound: its name is returned instead."""
    total = ZERO
    calls = [first_prompt + k * (agent.max_tokens + REPAIR_NOTE_BYTES) for k in range(agent.max_repairs + 1)]
    if summarise:
        calls.append(first_prompt)
    for input_bytes in calls:
        one = prices.worst_case(models, input_bytes, agent.max_tokens)
        if isinstance(one, str):
            return one
        total += one
    return total


JUDGE_TEXT_BYTES = 4096
"""An upper bound of the grounding judge's fixed instruction, reply schema and framing."""
JUDGE_BYTES_PER_TOKEN = 8
"""What the judge reads of a node's output: at most max_tokens tokens, counted at 8 bytes each. An estimate, not
a bound (a reply has no byte limit): the agent-runner checks the judge's real prompt against what is left."""


def judge_worst_case(prices: PriceTable, judge: JudgeRule, agent: AgentSpec, first_prompt: int) -> Decimal | str:
    """The most the workflow's grounding judge costs after an agent dispatch: one call reading the node's inputs
    (inside its prompt) and its output, with max_tokens out, at the dearest of the judge's model and the mock."""
    size = first_prompt + agent.max_tokens * JUDGE_BYTES_PER_TOKEN + JUDGE_TEXT_BYTES + len(judge.prompt.encode())
    return prices.worst_case([judge.model, MOCK_MODEL], size, judge.max_tokens)


def actual_cost(calls: list[LlmCallNote] | None, reserved: Decimal) -> Decimal:
    """What a dispatch's result says it cost: the sum of its LLM calls. A call the runner could not price
    (`unpriced`) counts as the whole reservation, so what is spent is never under-counted."""
    total = ZERO
    for call in calls or []:
        if call.cost_usd is None:
            continue
        if call.cost_usd == "unpriced":
            return max(total, reserved)
        total += Decimal(call.cost_usd)
    return total


def exceeded_reason(node: str, needed: Decimal | str, ledger: Ledger) -> str:
    if isinstance(needed, str):
        return (f"node '{node}' may use model '{needed}', which has no price in price table "
                f"{ledger.prices.version}, so its cost has no bound; add it to the table (AE_PRICE_TABLE)")
    left = max(ledger.available or ZERO, ZERO)
    return (f"node '{node}' needs up to ${usd(needed)} (worst case) but only ${usd(left)} of the task's budget "
            f"of ${usd(ledger.limit or ZERO)} is left (spent ${usd(ledger.spent)}, reserved ${usd(ledger.reserved)})")


SHARE_QUANTUM = Decimal("0.000001")
"""Subtasks' shares are rounded down to a millionth of a dollar, so together they never exceed what was left."""


def share_of(ledger: Ledger, count: int) -> Decimal | None:
    """Each of `count` subtasks' even share of what the task has left (None: the task has no limit of its own)."""
    if ledger.available is None:
        return None
    return (max(ledger.available, ZERO) / count).quantize(SHARE_QUANTUM, rounding=ROUND_DOWN)


def alert_due(ledger: Ledger) -> bool:
    return (ledger.limit is not None and ledger.alert_at is not None and not ledger.alerted
            and ledger.spent >= ledger.limit * Decimal(str(ledger.alert_at)))


def usd(amount: Decimal) -> str:
    """Money as written in events: an exact decimal, without exponent or trailing zeros."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "") else text


# --- the fold -----------------------------------------------------------------------------------

def evolve_ledger(ledger: Ledger | None, record: Envelope) -> Ledger | None:
    data = record.data
    if record.type == "budget.opened":
        limit = data.get("limit_usd")
        return Ledger(Decimal(limit) if limit is not None else None, data.get("on_exceed", "fail"),
                      data.get("alert_at"), parse(data["prices"]), user=data.get("user"))
    if ledger is None:
        return None
    if record.type == "budget.reserved":
        waiting = {n: w for n, w in ledger.waiting.items() if n != data["node"]}
        entry = (data["node"], Decimal(data["amount_usd"]), data.get("day"), data.get("user"))
        shares = ledger.shares | {data["dispatch_id"]} if data.get("subtask") else ledger.shares
        return replace(ledger, open={**ledger.open, data["dispatch_id"]: entry}, waiting=waiting, shares=shares)
    if record.type == "budget.settled":
        return replace(ledger, open={d: v for d, v in ledger.open.items() if d != data["dispatch_id"]},
                       spent=ledger.spent + Decimal(data["cost_usd"]),
                       settled=ledger.settled | {data["dispatch_id"]}, shares=ledger.shares - {data["dispatch_id"]})
    if record.type == "budget.exceeded":
        waiting = {n: w for n, w in ledger.waiting.items() if n != data["node"]}
        if data["then"] == "wait":
            waiting[data["node"]] = Wait(data["attempt"])
        return replace(ledger, waiting=waiting)
    if record.type == "budget.alert":
        return replace(ledger, alerted=True)
    return ledger


# --- day budgets: a tenant's and a user's, per UTC day ---------------------------------------------

DAY_SCOPES = ("tenant-day", "user-day")


@dataclass(frozen=True)
class DayLimits:
    """A tenant's day budgets (router configuration, AE_BUDGET_LIMITS); None: no limit of that kind."""

    tenant_day: Decimal | None = None
    user_day: Decimal | None = None

    @classmethod
    def parse(cls, raw: str) -> dict[str, DayLimits]:
        """Day limits by tenant ("*": every other tenant) from "acme=5.00:0.50,beta=1,*=20" (tenant-day USD, then
        optionally user-day USD; an empty part is no limit, e.g. "acme=:0.50")."""
        limits: dict[str, DayLimits] = {}
        try:
            for part in filter(None, (p.strip() for p in raw.split(","))):
                tenant, eq, pair = part.partition("=")
                if not eq or not tenant.strip():
                    raise ValueError(part)
                tenant_day, _, user_day = pair.partition(":")
                values = [Decimal(v.strip()) if v.strip() else None for v in (tenant_day, user_day)]
                if any(v is not None and (v < 0 or not v.is_finite()) for v in values):
                    raise ValueError(part)
                limits[tenant.strip()] = cls(values[0], values[1])
        except (ValueError, ArithmeticError):
            raise SystemExit(f"AE_BUDGET_LIMITS={raw!r} is not valid: write tenant=tenant_day_usd[:user_day_usd] "
                             "pairs, e.g. acme=5.00:0.50,beta=1,*=20 (USD, not negative)") from None
        return limits

    @property
    def any(self) -> bool:
        return self.tenant_day is not None or self.user_day is not None


def limits_for(limits: Mapping[str, DayLimits], tenant: str) -> DayLimits:
    return limits.get(tenant) or limits.get("*") or DayLimits()


def day_of(event: Envelope) -> str:
    return event.time.date().isoformat()


def day_key(tenant: str, day: str, user: str | None = None) -> str:
    """The aggregate of a tenant's (or one user's) day budget: `tenant:<tenant>/budget/<day>[/user/<user>]`."""
    return f"tenant:{tenant}/budget/{day}" + (f"/user/{user}" if user is not None else "")


def is_day_key(key: str) -> bool:
    return key.startswith("tenant:") and "/budget/" in key


@dataclass(frozen=True)
class DayState:
    """One day budget's log, folded: what is reserved now (by dispatch id) and what was spent."""

    open: Mapping[str, Decimal] = field(default_factory=dict)
    spent: Decimal = ZERO
    version: int = 0

    @property
    def reserved(self) -> Decimal:
        return sum(self.open.values(), ZERO)


def evolve_day(state: DayState, record: Envelope) -> DayState:
    state = replace(state, version=state.version + 1)
    data = record.data
    if record.type == "budget.reserved":
        return replace(state, open={**state.open, data["dispatch_id"]: Decimal(data["amount_usd"])})
    if record.type == "budget.settled" and data["dispatch_id"] in state.open:
        return replace(state, open={d: a for d, a in state.open.items() if d != data["dispatch_id"]},
                       spent=state.spent + Decimal(data["cost_usd"]))
    return state


def fold_day(records: Iterable[Envelope]) -> DayState:
    state = DayState()
    for record in records:
        state = evolve_day(state, record)
    return state


@dataclass(frozen=True)
class DayRoom:
    """What one day budget has left when an input is decided (the shell reads it; it is recorded with the
    input, so a replay decides the same)."""

    scope: str
    day: str
    limit: Decimal
    available: Decimal


def room_of(scope: str, day: str, limit: Decimal, state: DayState) -> DayRoom:
    return DayRoom(scope, day, limit, limit - state.spent - state.reserved)


def day_entries(record: Envelope) -> list[tuple[str, str]]:
    """(scope, aggregate) of each day log a task's budget record must also be written to."""
    if record.type not in ("budget.reserved", "budget.settled") or not record.data.get("day"):
        return []
    day, user = record.data["day"], record.data.get("user")
    out = [("tenant-day", day_key(record.tenant, day))]
    if user is not None:
        out.append(("user-day", day_key(record.tenant, day, user)))
    return out


def mirrored(record: Envelope, scope: str, after: DayState, limit: Decimal | None) -> Envelope:
    """A task's budget record as the day log `scope` keeps it: its id derived from the task's record, the
    day's totals after it."""
    data = {**record.data, "scope": scope, "reserved_usd": usd(after.reserved), "spent_usd": usd(after.spent),
            "limit_usd": usd(limit) if limit is not None else None}
    return record.model_copy(update={"id": derive_id(record.id, scope),
                                     "data": {k: v for k, v in data.items() if v is not None}})


DAY_RECHECK_S = 60
"""How often a node that waits for room in a day budget tries again (and at the next UTC day at the latest)."""


def recheck_at(now: datetime) -> datetime:
    """When a node waiting for a day budget tries again: in DAY_RECHECK_S, or at the next UTC midnight if sooner."""
    midnight = datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), time(), tzinfo=UTC)
    return min(now + timedelta(seconds=DAY_RECHECK_S), midnight)
