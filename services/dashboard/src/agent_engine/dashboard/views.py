"""View models: what each page shows, made from the answers of the engine's queries. Pure: no I/O, no HTML.

The inputs are the shapes agentctl reads too: `task.show` and `task.history` (router), `ledger` and
`tasks.list` (telemetry). Everything here is plain data so the pages and the live updates share it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from agent_engine.runtime.tracing import parse_traceparent

COL_W, ROW_H, BOX_W, BOX_H, PAD = 180, 70, 150, 40, 20
"""Graph layout in SVG units: one column per step from the start node, one row per node in a column."""


@dataclass(frozen=True)
class GraphNode:
    id: str
    kind: str
    role: str
    x: int
    y: int


@dataclass(frozen=True)
class Graph:
    nodes: list[GraphNode]
    edges: list[tuple[str, str]]
    width: int
    height: int


def manifest_of(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The workflow revision a task runs (its task.started record), or None before it started."""
    for event in history:
        if event.get("type") == "task.started":
            manifest = event.get("data", {}).get("workflow_manifest")
            return manifest if isinstance(manifest, dict) else None
    return None


def trace_id(history: list[dict[str, Any]]) -> str | None:
    """The task's trace id (32 hex digits): the one its task.started record's traceparent names, which the
    task's own records carry too (router/traces.py), or for a fork (which has no task.started) its task.forked
    record's: the fork's own trace, under the router's span for the fork request. None before it started, or
    when it started untraced. Only those two: an input the router records for a client's request (an approval,
    a cancel) carries the router's span for that request, the root of a trace of its own."""
    for event in history:
        if event.get("type") in ("task.started", "task.forked"):
            value = event.get("traceparent")
            context = parse_traceparent(value if isinstance(value, str) else None)
            return f"{context.trace_id:032x}" if context is not None else None
    return None


def layout(manifest: dict[str, Any]) -> Graph:
    """Columns by distance from the START node (breadth first, so a loop's back edge cannot push a node right
    for ever); nodes it cannot reach go in column 0 after the others."""
    ids = [str(n["id"]) for n in manifest.get("nodes", [])]
    edges = [(str(e["from"]), str(e["to"])) for e in manifest.get("edges", []) if e.get("from") in ids
             and e.get("to") in ids]
    start = next((str(n["id"]) for n in manifest.get("nodes", []) if n.get("role") == "START"), ids[0] if ids else "")
    column: dict[str, int] = {start: 0} if start else {}
    queue = deque([start] if start else [])
    while queue:
        here = queue.popleft()
        for a, b in edges:
            if a == here and b not in column:
                column[b] = column[here] + 1
                queue.append(b)
    rows: dict[int, int] = {}
    placed = []
    for spec in manifest.get("nodes", []):
        node_id = str(spec["id"])
        col = column.get(node_id, 0)
        row = rows.get(col, 0)
        rows[col] = row + 1
        placed.append(GraphNode(node_id, str(spec.get("kind") or ""), str(spec.get("role") or ""),
                                PAD + col * COL_W, PAD + row * ROW_H))
    width = PAD * 2 + (max(rows) + 1) * COL_W - (COL_W - BOX_W) if rows else PAD * 2
    height = PAD * 2 + max(rows.values(), default=0) * ROW_H - (ROW_H - BOX_H)
    return Graph(placed, edges, width, max(height, PAD * 2))


def node_statuses(shown: dict[str, Any]) -> dict[str, str]:
    """Each node's status as task.show reports it (what colours the graph)."""
    return {str(n["node"]): str(n["status"]) for n in shown.get("nodes", [])}


def live_state(shown: dict[str, Any]) -> dict[str, Any]:
    """What the task page's live feed sends on every change: the task's status and each node's."""
    waiting = [str(n["node"]) for n in shown.get("nodes", []) if n.get("status") == "awaiting_approval"]
    return {"task_id": shown.get("task_id"), "status": shown.get("status"), "nodes": node_statuses(shown),
            "waiting": waiting}


@dataclass(frozen=True)
class TimelineRow:
    node: str
    status: str
    start_s: float
    end_s: float | None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def timeline(shown: dict[str, Any]) -> list[TimelineRow]:
    """One bar per node that started: seconds from the task's start to the node's dispatch and end."""
    began = _time(shown.get("started_at"))
    rows = []
    for node in shown.get("nodes", []):
        start, end = _time(node.get("started_at")), _time(node.get("finished_at"))
        if began is None or start is None:
            continue
        rows.append(TimelineRow(str(node["node"]), str(node["status"]), (start - began).total_seconds(),
                                (end - began).total_seconds() if end else None))
    return sorted(rows, key=lambda r: r.start_s)


@dataclass(frozen=True)
class EventRow:
    time: str
    type: str
    node: str
    summary: str


SUMMARY_FIELDS = ("status", "reason", "decided_by", "requested_by", "error", "attempt", "model", "tool")
"""The fields an event row shows; the rest (inputs, outputs) stay out of the list, in `task history` only."""


def event_rows(history: list[dict[str, Any]]) -> list[EventRow]:
    rows = []
    for event in history:
        data = event.get("data") or {}
        summary = ", ".join(f"{k}={str(data[k])[:80]}" for k in SUMMARY_FIELDS if data.get(k) not in (None, ""))
        rows.append(EventRow(str(event.get("time", ""))[:23], str(event.get("type", "")), str(data.get("node", "")),
                             summary))
    return rows


@dataclass(frozen=True)
class ToolCall:
    node: str
    tool: str
    status: str
    detail: str


def tool_calls(shown: dict[str, Any], manifest: dict[str, Any] | None) -> list[ToolCall]:
    """Tool nodes, and the tool calls agent nodes made (task.show's `tool_calls`)."""
    tools = {str(n["id"]): str(n.get("tool") or "") for n in (manifest or {}).get("nodes", [])}
    calls = []
    for node in shown.get("nodes", []):
        node_id = str(node["node"])
        if node.get("kind") == "tool":
            calls.append(ToolCall(node_id, tools.get(node_id, ""), str(node["status"]),
                                  str(node.get("error") or "")[:200]))
        for call in node.get("tool_calls") or []:
            if isinstance(call, dict):
                calls.append(ToolCall(node_id, str(call.get("tool") or call.get("name") or ""),
                                      str(call.get("status") or call.get("outcome") or ""),
                                      str(call.get("error") or "")[:200]))
    return calls


@dataclass(frozen=True)
class LlmCall:
    time: str
    node: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: str
    outcome: str


def llm_calls(line: dict[str, Any]) -> list[LlmCall]:
    """The task's calls from its ledger line (telemetry `ledger` with a task id)."""
    calls = []
    for call in line.get("call_log") or []:
        usage = call.get("usage") or {}
        calls.append(LlmCall(str(call.get("time", ""))[:19], str(call.get("node", "")),
                             f"{call.get('provider', '')}/{call.get('model', '')}", int(usage.get("input_tokens", 0)),
                             int(usage.get("output_tokens", 0)), str(call.get("cost_usd", "")),
                             str(call.get("outcome") or "")))
    return calls


def usd(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


@dataclass
class CostTable:
    """Cost by tenant, by model and by day, from the telemetry ledger's summary (of some tenants: `tenants`)."""

    tenants: list[tuple[str, int, Decimal]] = field(default_factory=list)
    models: list[tuple[str, int, Decimal]] = field(default_factory=list)
    days: list[tuple[str, int, Decimal]] = field(default_factory=list)


def cost_table(summary: dict[str, Any]) -> CostTable:
    def rows(lines: dict[str, Any]) -> list[tuple[str, int, Decimal]]:
        return sorted((k, int(v.get("calls", 0)), usd(v.get("cost_usd"))) for k, v in (lines or {}).items())

    return CostTable(rows(summary.get("tenants", {})), rows(summary.get("models", {})), rows(summary.get("days", {})))


@dataclass(frozen=True)
class Bar:
    label: str
    value: Decimal
    x: int
    y: int
    height: int


CHART_H, BAR_W, BAR_GAP = 160, 36, 12


def day_bars(days: list[tuple[str, int, Decimal]], last: int = 30) -> tuple[str, list[Bar]]:
    """What the chart measures and its bars: cost in USD of the last `last` days with calls, in date order,
    scaled so the largest fills the chart; the number of calls when every call was free (the mock provider),
    so an offline stack's chart still shows its days."""
    shown = sorted(days)[-last:]
    free = all(cost == 0 for _, _, cost in shown)
    values = [(day, Decimal(calls) if free else cost) for day, calls, cost in shown]
    top = max((v for _, v in values), default=Decimal(0))
    bars = []
    for index, (day, value) in enumerate(values):
        height = int(CHART_H * value / top) if top > 0 else 0
        bars.append(Bar(day, value, PAD + index * (BAR_W + BAR_GAP), PAD + CHART_H - height, height))
    return ("calls (every call was free)" if free and shown else "USD"), bars


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_filter(value: str, now: datetime) -> str:
    """The task list's `since` as tasks.list takes it (an ISO time): `30s`, `10m`, `2h`, `1d` back from `now`
    (as `agentctl tail --since`), or an ISO time as given (telemetry names what is wrong with a bad one)."""
    text = value.strip()
    if len(text) >= 2 and text[:-1].isdigit() and text[-1] in UNITS:
        try:
            return (now - timedelta(seconds=int(text[:-1]) * UNITS[text[-1]])).isoformat()
        except (ValueError, OverflowError):  # '²d', or before year 1: passed on, and telemetry names it
            return text
    return text
