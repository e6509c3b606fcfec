"""Builders for budget tests: a price table that prices the test models and the mock (labelled), budgeted
workflows, and results carrying what their LLM calls cost."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from router_testkit import Run, accepted, edge, exit_, manifest

from agent_engine.contracts.manifest import BudgetSpec, MergeSpec, NodeSpec, WorkflowManifest
from agent_engine.contracts.pricing import PriceTable
from agent_engine.router.core import RouterInput

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
