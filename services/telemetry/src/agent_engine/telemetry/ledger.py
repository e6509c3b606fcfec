"""The token and cost ledger, folded from llm.called events. Exact decimals; duplicates counted once."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import EVENT_TYPES, LlmCalled
from agent_engine.telemetry import taskindex, tenantcost
from agent_engine.telemetry.budgets import BudgetLine, row_of
from agent_engine.telemetry.scores import ONLY_SCORES, Filter, ScoreStore
from agent_engine.telemetry.taskindex import TaskFilter, TaskRow


@dataclass
class Line:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced_calls: int = 0
    mock_calls: int = 0

    def add(self, call: LlmCalled) -> None:
        self.calls += 1
        self.input_tokens += call.usage.input_tokens
        self.output_tokens += call.usage.output_tokens
        self.cache_read_tokens += call.usage.cache_read_tokens
        self.cache_write_tokens += call.usage.cache_write_tokens
        if call.cost_usd == "unpriced":
            self.unpriced_calls += 1
        else:
            self.cost_usd += Decimal(call.cost_usd)
        if call.provider == "mock":
            self.mock_calls += 1

    def add_entry(self, entry: dict[str, Any]) -> None:
        """Add a call as the call log keeps it (Ledger.entry): what a tenant's sums are recounted from."""
        self.add(LlmCalled.model_validate({**{k: entry[k] for k in ("node", "provider", "model", "usage",
                                                                    "cost_usd")}, "dispatch_id": ""}))

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "cost_usd": str(self.cost_usd)}


@dataclass(frozen=True)
class Message:
    """One stream message as a ledger needs it: its stream sequence, its subject, and the llm.called it carries
    (None for any other message, which is only counted by subject)."""

    sequence: int
    subject: str
    event: Envelope | None = None
    call: LlmCalled | None = None


def subject_kind(subject: str) -> str:
    """A message's subject type (`ae.<tenant>.<type>`); a subject no event type has is `other`, so what any
    client publishes cannot grow the table without bound."""
    kind = subject.split(".", 2)[-1]
    known = kind in EVENT_TYPES or kind.removeprefix("node.dispatched.") in ("agent", "tool")
    return kind if known else "other"


MAX_TOKENS = 2**40
"""Tokens of one call, at most (of each kind): more is a forgery, which would overflow the sums of everyone."""


def call_of(event: Envelope) -> LlmCalled | None:
    """The llm.called an event carries (None for another type); one that is not valid (say, a cost that is no
    decimal, or tokens out of range) raises ValueError."""
    if event.type != LlmCalled.TYPE:
        return None
    call = LlmCalled.model_validate(event.data)
    for kind, tokens in call.usage.model_dump().items():
        if not 0 <= tokens <= MAX_TOKENS:
            raise ValueError(f"{kind} {tokens} is out of range (0 to {MAX_TOKENS})")
    if call.cost_usd != "unpriced":
        try:
            Decimal(call.cost_usd)
        except InvalidOperation:
            raise ValueError(f"cost_usd {call.cost_usd[:40]!r} is not a decimal") from None
    return call


TaskKey = tuple[str, str]
"""(tenant, task id): a task's lines are its tenant's, so another tenant's event naming the same task id
(a forgery) is counted apart and never shows in the owner's line."""


@dataclass
class Ledger:
    by_task: dict[TaskKey, Line] = field(default_factory=lambda: defaultdict(Line))
    by_tenant: dict[str, Line] = field(default_factory=lambda: defaultdict(Line))
    by_model: dict[str, Line] = field(default_factory=lambda: defaultdict(Line))
    by_day: dict[str, Line] = field(default_factory=lambda: defaultdict(Line))
    by_node: dict[tuple[TaskKey, str], Line] = field(default_factory=lambda: defaultdict(Line))
    calls: dict[TaskKey, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    """Per task, every call in the order seen: node, provider, model, usage, cost, repair."""
    seen: set[str] = field(default_factory=set)
    tenants_of: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    """The tenants with calls under each task id (one, unless someone forged events)."""
    events_by_type: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    messages_by_subject: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Every message seen per subject type (`ae.<tenant>.<type>`), redeliveries included; no parsing."""
    erased: set[TaskKey] = field(default_factory=set)
    """Tasks whose tenant or data subject was forgotten while this process ran: their lines are gone."""
    position: int = 0
    """The last stream sequence folded (apply); in memory, so every start reads the stream from the first."""
    budgets: dict[TaskKey, BudgetLine] = field(default_factory=lambda: defaultdict(BudgetLine))
    """Per budgeted task: its limit, what is reserved now and what was spent (budgets.py)."""
    budget_days: dict[tuple[str, str], BudgetLine] = field(default_factory=lambda: defaultdict(BudgetLine))
    """Per (tenant, UTC day): the reservations made and the spend settled that day."""
    budget_log: dict[TaskKey, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    scores: ScoreStore = field(default_factory=ScoreStore)
    """Every LLM call attempt, for agent scores (scores.py)."""
    tasks: dict[TaskKey, TaskRow] = field(default_factory=dict)
    """The task index (taskindex.py): one row per task seen, for `tasks.list`."""
    tenant_sums: dict[tuple[str, str, str], Line] = field(default_factory=lambda: defaultdict(Line))
    """Per (tenant, "model" or "day", key): the sums of the tenant's calls that are not erased (tenantcost.py)."""

    def forget(self, tenant: str, task_ids: list[str] | None) -> int:
        """Drop the per-task lines of the tenant (or of `task_ids` of it); totals by tenant, model and day
        keep their sums, which name no task. Tasks named in `task_ids` not seen yet are remembered as erased
        too, so their events read later are not noted. Returns how many tasks were dropped."""
        gone = {k for k in self.tenants_of_keys() if k[0] == tenant and (task_ids is None or k[1] in task_ids)}
        for key in gone:
            self.by_task.pop(key, None)
            self.calls.pop(key, None)
            self.tenants_of.get(key[1], set()).discard(tenant)
        for node_key in [k for k in self.by_node if k[0] in gone]:
            del self.by_node[node_key]
        gone |= {k for k in self.tasks if k[0] == tenant and (task_ids is None or k[1] in task_ids)}
        for key in gone:
            self.budgets.pop(key, None)
            self.budget_log.pop(key, None)
            self.tasks.pop(key, None)
        self.scores.forget(tenant, task_ids)
        self.erased |= gone | {(tenant, t) for t in task_ids or ()}  # named ones not seen yet stay out too
        self.recount(tenant)
        return len(gone)

    def recount(self, tenant: str) -> None:
        """Sum the tenant's calls by model and by day afresh from its call log (after a forget dropped some)."""
        for key in [k for k in self.tenant_sums if k[0] == tenant]:
            del self.tenant_sums[key]
        for (owner, _), entries in self.calls.items():
            if owner == tenant:
                for entry in entries:
                    for kind in tenantcost.KINDS:
                        self.tenant_sums[(tenant, kind, tenantcost.key_of(entry, kind))].add_entry(entry)

    def tenants_of_keys(self) -> set[TaskKey]:
        return set(self.by_task) | set(self.calls) | set(self.budgets)

    def count(self, subject: str) -> None:
        """Count a message by its subject's type (subject_kind)."""
        self.messages_by_subject[subject_kind(subject)] += 1

    def resume(self, stream: str, last_sequence: int) -> int:
        return self.position

    def apply(self, batch: list[Message]) -> int:
        """Fold a batch of stream messages (those after `position`); how many were folded."""
        fresh = [m for m in batch if m.sequence > self.position]
        for m in fresh:
            self.count(m.subject)
            if m.event is not None:
                if (m.event.tenant, m.event.task_id) not in self.erased:  # not again after a forget (a rebuild)
                    self.scores.observe(m.event)
                if m.event.type not in ONLY_SCORES or m.event.type in taskindex.LIFECYCLE:  # task.started is both
                    self.observe(m.event)
        if fresh:
            self.position = max(m.sequence for m in fresh)
        return len(fresh)

    def close(self) -> None:
        pass

    def agents(self, f: Filter) -> list[dict[str, Any]]:
        """Agent scores (scores.py)."""
        return self.scores.query(f)

    def task_counts(self) -> dict[str, int]:
        """Tasks by status in the index (the `ae_tasks` gauge), as PostgreSQL's counts table gives them."""
        return taskindex.by_status(Counter(row.status for row in self.tasks.values()).items())

    def reset(self) -> None:
        """Forget everything folded (for a rebuild from the stream's first message) but the erased tasks."""
        erased = self.erased
        self.__dict__.update(Ledger().__dict__)
        self.erased = erased

    def observe(self, event: Envelope) -> None:
        """Fold one event; an llm.called that is not valid (say, a cost that is no decimal) raises and
        changes nothing."""
        if event.id in self.seen:
            return
        call = call_of(event)
        budget = row_of(event)
        self.seen.add(event.id)
        owner = (event.tenant, event.task_id)
        if event.type in taskindex.LIFECYCLE and owner not in self.erased:
            row = taskindex.fold(self.tasks.get(owner), event)
            if row is not None:
                self.tasks[owner] = row
        if call is not None or (budget is not None and owner not in self.erased):  # as PostgreSQL counts them
            self.events_by_type[event.type] += 1
        if budget is not None and owner not in self.erased:  # as in PostgreSQL: an erased task gets no lines again
            self.budgets[(event.tenant, event.task_id)].add(budget)
            if not budget.share:  # a subtask's share: the subtask's own records count its spend in the day
                self.budget_days[(event.tenant, budget.day)].add(replace(budget, limit=None))  # limits are per task
            self.budget_log[(event.tenant, event.task_id)].append(budget.entry or {})
            self.tenants_of[event.task_id].add(event.tenant)
        if call is None:
            return
        task = (event.tenant, event.task_id)
        for table, key in ((self.by_tenant, event.tenant), (self.by_model, f"{call.provider}/{call.model}"),
                           (self.by_day, event.time.date().isoformat())):
            table[key].add(call)
        if task in self.erased:  # its totals count, as they did before the erasure; no task line again
            return
        self.tenants_of[event.task_id].add(event.tenant)
        self.by_task[task].add(call)
        self.by_node[(task, call.node)].add(call)
        self.calls[task].append(entry := self.entry(event, call))
        for kind in tenantcost.KINDS:
            self.tenant_sums[(event.tenant, kind, tenantcost.key_of(entry, kind))].add(call)

    @staticmethod
    def entry(event: Envelope, call: LlmCalled) -> dict[str, Any]:
        """A call as the task line's call log shows it."""
        return {"event_id": event.id, "time": event.time.isoformat(), "node": call.node, "provider": call.provider,
                "model": call.model, "usage": call.usage.model_dump(), "cost_usd": call.cost_usd,
                "price_table": call.price_table, "repair": call.repair, "turn": call.turn, "outcome": call.outcome}

    def query(self, task_id: str | None = None, tenant: str | None = None) -> dict[str, Any]:
        if task_id:
            return self.task_line(task_id, tenant)
        if tenant:
            days = {day: line.as_json() for (t, day), line in sorted(self.budget_days.items()) if t == tenant}
            return {"tenant": tenant, **self.by_tenant.get(tenant, Line()).as_json(),
                    **({"budget_days": days} if days else {}), **tenantcost.breakdown(self.tenants_summary([tenant]))}
        return {
            "tenants": {k: v.as_json() for k, v in self.by_tenant.items()},
            "models": {k: v.as_json() for k, v in self.by_model.items()},
            "days": {k: v.as_json() for k, v in self.by_day.items()},
            "events_by_type": dict(self.events_by_type),
            "messages_by_subject": dict(self.messages_by_subject),
        }

    def tenants_summary(self, tenants: list[str]) -> dict[str, Any]:
        """Those tenants' lines, and their calls summed by model and by day (tenantcost.py)."""
        sums: dict[str, dict[str, Any]] = {kind: {} for kind in tenantcost.KINDS}
        for (tenant, kind, key), line in self.tenant_sums.items():
            if tenant in tenants:
                total = sums[kind].setdefault(key, Line())
                for name, value in line.__dict__.items():
                    setattr(total, name, getattr(total, name) + value)
        return tenantcost.summary(tenants, {t: self.by_tenant.get(t, Line()).as_json() for t in tenants},
                                  {k: v.as_json() for k, v in sums["model"].items()},
                                  {k: v.as_json() for k, v in sums["day"].items()})

    def list_tasks(self, wanted: TaskFilter) -> dict[str, Any]:
        """`tasks.list`: the tasks that match, newest first, each with its cost so far."""
        rows = taskindex.newest_first([r for r in self.tasks.values() if wanted.matches(r)])[:wanted.limit]
        return {"tasks": [r.as_json(str(self.by_task.get((r.tenant, r.task_id), Line()).cost_usd)) for r in rows]}

    def task_line(self, task_id: str, tenant: str | None) -> dict[str, Any]:
        """One task's line; of the tenant asking, else of the one tenant with calls under that id (a task
        without calls, or another tenant's, reads as a line of zeros)."""
        if tenant is None:
            claimed = sorted(self.tenants_of.get(task_id, ()))
            if len(claimed) > 1:
                return {"error": f"task '{task_id}' has calls under several tenants ({', '.join(claimed)}); "
                                 "ask with the task's tenant"}
            tenant = claimed[0] if claimed else ""
            if not tenant:
                tenant = next((t for t, i in self.erased if i == task_id), "")
        task = (tenant, task_id)
        if task in self.erased and task not in self.by_task:
            return {"error": f"task '{task_id}' was erased: its tenant or data subject was forgotten",
                    "erased": True, "task_id": task_id}
        nodes = {node: line.as_json() for (key, node), line in self.by_node.items() if key == task}
        answer = {"task_id": task_id, **self.by_task.get(task, Line()).as_json(), "nodes": nodes,
                  "call_log": self.calls.get(task, [])}
        if task in self.budgets:
            answer["budget"] = {**self.budgets[task].as_json(), "log": self.budget_log.get(task, [])}
        return answer
