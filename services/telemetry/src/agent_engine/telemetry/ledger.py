"""The token and cost ledger, folded from llm.called events. Exact decimals; duplicates counted once."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import LlmCalled


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

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "cost_usd": str(self.cost_usd)}


@dataclass
class Ledger:
    by_task: dict[str, Line] = field(default_factory=lambda: defaultdict(Line))
    by_tenant: dict[str, Line] = field(default_factory=lambda: defaultdict(Line))
    by_model: dict[str, Line] = field(default_factory=lambda: defaultdict(Line))
    by_day: dict[str, Line] = field(default_factory=lambda: defaultdict(Line))
    by_node: dict[tuple[str, str], Line] = field(default_factory=lambda: defaultdict(Line))
    calls: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    """Per task, every call in the order seen: node, provider, model, usage, cost, repair."""
    seen: set[str] = field(default_factory=set)
    tenant_of: dict[str, str] = field(default_factory=dict)
    """Each task's tenant, so a query scoped to a tenant learns nothing of another's tasks."""
    events_by_type: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    messages_by_subject: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Every message seen per subject type (`ae.<tenant>.<type>`), redeliveries included; no parsing."""

    def count(self, subject: str) -> None:
        self.messages_by_subject[subject.split(".", 2)[-1]] += 1

    def observe(self, event: Envelope) -> None:
        """Fold one event; an llm.called that is not valid (say, a cost that is no decimal) raises and
        changes nothing."""
        if event.id in self.seen:
            return
        call = LlmCalled.model_validate(event.data) if event.type == LlmCalled.TYPE else None
        if call is not None and call.cost_usd != "unpriced":
            try:
                Decimal(call.cost_usd)
            except InvalidOperation:
                raise ValueError(f"cost_usd {call.cost_usd[:40]!r} is not a decimal") from None
        self.seen.add(event.id)
        self.events_by_type[event.type] += 1
        if call is None:
            return
        self.tenant_of[event.task_id] = event.tenant
        for table, key in ((self.by_task, event.task_id), (self.by_tenant, event.tenant),
                           (self.by_model, f"{call.provider}/{call.model}"),
                           (self.by_day, event.time.date().isoformat())):
            table[key].add(call)
        self.by_node[(event.task_id, call.node)].add(call)
        self.calls[event.task_id].append({
            "event_id": event.id, "time": event.time.isoformat(), "node": call.node, "provider": call.provider,
            "model": call.model, "usage": call.usage.model_dump(), "cost_usd": call.cost_usd,
            "price_table": call.price_table, "repair": call.repair, "turn": call.turn, "outcome": call.outcome})

    def query(self, task_id: str | None = None, tenant: str | None = None) -> dict[str, Any]:
        if task_id and tenant and self.tenant_of.get(task_id, tenant) != tenant:
            # another tenant's task reads as a task with no calls, the answer for no task at all
            return {"task_id": task_id, **Line().as_json(), "nodes": {}, "call_log": []}
        if task_id:
            nodes = {node: line.as_json() for (task, node), line in self.by_node.items() if task == task_id}
            return {"task_id": task_id, **self.by_task.get(task_id, Line()).as_json(), "nodes": nodes,
                    "call_log": self.calls.get(task_id, [])}
        if tenant:
            return {"tenant": tenant, **self.by_tenant.get(tenant, Line()).as_json()}
        return {
            "tenants": {k: v.as_json() for k, v in self.by_tenant.items()},
            "models": {k: v.as_json() for k, v in self.by_model.items()},
            "days": {k: v.as_json() for k, v in self.by_day.items()},
            "events_by_type": dict(self.events_by_type),
            "messages_by_subject": dict(self.messages_by_subject),
        }
