"""Builders for budget tests: a price table that prices the test models and the mock (labelled), budgeted
workflows, and results carrying what their LLM calls cost."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from router_testkit import Run, accepted, edge, exit_, json_round_trip, manifest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.manifest import BudgetSpec, MergeSpec, NodeSpec, WorkflowManifest
from agent_engine.contracts.pricing import PriceTable
from agent_engine.router import openwork
from agent_engine.router.budgets import (
    DayRoom,
    DayState,
    day_entries,
    day_key,
    day_of,
    evolve_day,
    fold_day,
    mirrored,
    room_of,
)
from agent_engine.router.core import RouterInput
from agent_engine.router.deadlines import DeadlineIndex

ROW = (Decimal(1), Decimal(2), Decimal("0.1"), Decimal("1.25"))
PRICES = PriceTable("test-1", {"m-": ROW, "mock": ROW})
"""USD per million tokens: input 1, output 2, cache read 0.1, cache write 1.25 (the mock priced like the rest)."""


def budgeted(wf: WorkflowManifest, task_usd: str, on_exceed: str = "fail", alert_at: float | None = None
             ) -> WorkflowManifest:
    return wf.model_copy(update={"budget": BudgetSpec(task_usd=task_usd, on_exceed=on_exceed,  # type: ignore[arg-type]
                                                      alert_at=alert_at)})


def start(wf: WorkflowManifest, **kw: Any) -> Run:
    """A run of the workflow, started with the price rows the shell would pass."""
    run = Run()
    run.feed(priced(accepted(wf, **kw)))
    return run


def priced(inp: RouterInput) -> RouterInput:
    return replace(inp, prices=PRICES)


def cost(usd: str | Decimal) -> dict[str, Any]:
    """The `llm_calls` of a result whose one call cost `usd`."""
    return {"llm_calls": [{"provider": "mock", "model": "mock-1", "outcome": "valid", "cost_usd": str(usd)}]}


def parallel_wf(n: int = 3, **agent_kw: Any) -> WorkflowManifest:
    """plan (START tool) -> fan (BRANCH tool) -> w0..w{n-1} (agents, in parallel) -> join (MERGE, all) -> done."""
    workers = [f"w{i}" for i in range(n)]
    nodes = [NodeSpec(id="plan", role="START", kind="tool", tool="echo", args={}),
             NodeSpec(id="fan", role="BRANCH", kind="tool", tool="echo", args={}),
             *(NodeSpec(id=w, role="LINEAR", kind="agent", agent="writer", **agent_kw) for w in workers),
             NodeSpec(id="join", role="MERGE", merge=MergeSpec()), exit_("done")]
    edges = [edge("plan", "fan"), *(edge("fan", w) for w in workers), *(edge(w, "join") for w in workers), edge("join", "done")]
    return manifest(nodes, edges)


def of_type(records: list[Any], type_: str) -> list[dict[str, Any]]:
    return [r.data for r in records if r.type == type_]


class Shell:
    """What the router's shell does around the core for day budgets, over plain lists: the rooms read before
    each input, the mirrored records appended after it (day_budgets.py does the same against the store), and the
    timers' index following both (service.py), which wakes a node waiting for room a settlement freed."""

    def __init__(self, tenant_day: Decimal, user_day: Decimal | None = None) -> None:
        self.limits = {"tenant-day": tenant_day, "user-day": user_day}
        self.logs: dict[str, list[Envelope]] = {}
        self.states: dict[str, DayState] = {}
        self.index = DeadlineIndex()

    def rooms(self, tenant: str, day: str, user: str) -> tuple[DayRoom, ...]:
        tenant_day, user_day = self.limits["tenant-day"], self.limits["user-day"]
        assert tenant_day is not None
        rooms = [room_of("tenant-day", day, tenant_day, self.states.get(day_key(tenant, day), DayState()))]
        if user_day is not None:
            rooms.append(room_of("user-day", day, user_day, self.states.get(day_key(tenant, day, user), DayState())))
        return tuple(rooms)

    def feed(self, run: Run, inp: RouterInput, user: str) -> list[Envelope]:
        inp = replace(inp, rooms=self.rooms(inp.event.tenant, day_of(inp.event), user))
        out = run.feed(inp)
        for record in out:
            self.index.observe(record)
            for scope, key in day_entries(record):
                after = evolve_day(self.states.get(key, DayState()), record)
                copy = mirrored(record, scope, after, self.limits[scope])
                self.logs.setdefault(key, []).append(copy)
                self.states[key] = after
                self.index.observe(copy)
        return out

    def wakes(self, now: datetime) -> list[RouterInput]:
        """What the timers fire at `now` for the nodes whose room freed (their polls are not due before `at`)."""
        due = self.index.expired(now, caught_up=False, read_through=None)
        for event in due:
            self.index.fired(event.task_id, event.data["node"])
        return [RouterInput(event.model_copy(update={"time": now})) for event in due]

    def crash(self) -> None:
        """The day logs as the store holds them, folded again; the timers' index from its checkpoint."""
        self.states = {key: fold_day(json_round_trip(log)) for key, log in self.logs.items()}
        rows = openwork.entries(self.index)
        self.index = DeadlineIndex()
        openwork.restore(self.index, rows)

    def check(self) -> None:
        for key, state in self.states.items():
            limit = self.limits["user-day" if "/user/" in key else "tenant-day"]
            assert limit is not None
            assert state.spent + state.reserved <= limit, (key, state.spent, state.reserved, limit)
