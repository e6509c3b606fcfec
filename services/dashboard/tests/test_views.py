"""The dashboard's view models and pages, from the shapes the router and telemetry answer."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from agent_engine.dashboard import pages, views

MANIFEST = {"nodes": [{"id": "a", "role": "START", "kind": "agent"}, {"id": "b", "role": "LINEAR", "kind": "tool"},
                      {"id": "c", "role": "LINEAR", "kind": "agent"}, {"id": "end", "role": "EXIT"}],
            "edges": [{"from": "a", "to": "b"}, {"from": "a", "to": "c"}, {"from": "c", "to": "a"},
                      {"from": "b", "to": "end"}]}
SHOWN = {"task_id": "t1", "status": "waiting", "started_at": "2026-01-01T00:00:00+00:00", "nodes": [
    {"node": "a", "kind": "agent", "status": "succeeded", "started_at": "2026-01-01T00:00:01+00:00",
     "finished_at": "2026-01-01T00:00:03+00:00",
     "tool_calls": [{"tool": "search", "status": "ok", "error": None}]},
    {"node": "b", "kind": "tool", "status": "awaiting_approval", "started_at": None, "finished_at": None},
    {"node": "c", "kind": "agent", "status": "dispatched", "started_at": "2026-01-01T00:00:03+00:00",
     "finished_at": None}]}


def test_the_graph_puts_each_node_a_column_right_of_its_first_parent_and_survives_loops() -> None:
    graph = views.layout(MANIFEST)
    x = {n.id: n.x for n in graph.nodes}
    assert x["a"] < x["b"] == x["c"] < x["end"]
    assert ("c", "a") in graph.edges  # the loop back is drawn, it does not move `a`
    svg = pages.graph_svg(graph, views.node_statuses(SHOWN))
    assert 'data-node="b" data-status="awaiting_approval"' in svg and 'data-node="end" data-status="pending"' in svg
    assert "class=\"edge back\"" in svg


def test_the_live_state_names_each_node_and_who_waits() -> None:
    assert views.live_state(SHOWN) == {"task_id": "t1", "status": "waiting", "waiting": ["b"],
                                       "nodes": {"a": "succeeded", "b": "awaiting_approval", "c": "dispatched"}}


def test_the_timeline_counts_from_the_task_start() -> None:
    rows = views.timeline(SHOWN)
    assert [(r.node, r.start_s, r.end_s) for r in rows] == [("a", 1.0, 3.0), ("c", 3.0, None)]
    assert "so far" in pages.timeline_svg(rows, now_s=5.0)


def test_events_show_a_summary_never_inputs_or_outputs() -> None:
    history = [{"time": "2026-01-01T00:00:00", "type": "node.succeeded",
                "data": {"node": "a", "attempt": 1, "output": {"secret plan": "x"}}}]
    [row] = views.event_rows(history)
    assert (row.type, row.node, row.summary) == ("node.succeeded", "a", "attempt=1")


def test_tool_calls_of_tool_nodes_and_of_agents() -> None:
    calls = views.tool_calls(SHOWN, {"nodes": [{"id": "b", "tool": "list_files"}]})
    assert [(c.node, c.tool, c.status) for c in calls] == [("a", "search", "ok"),
                                                          ("b", "list_files", "awaiting_approval")]


def test_llm_calls_and_costs_from_the_ledger() -> None:
    line = {"call_log": [{"time": "2026-01-01T00:00:02+00:00", "node": "a", "provider": "anthropic",
                          "model": "claude-x", "usage": {"input_tokens": 10, "output_tokens": 5},
                          "cost_usd": "0.0012", "outcome": "valid"}]}
    [call] = views.llm_calls(line)
    assert (call.model, call.input_tokens, call.output_tokens, call.cost_usd) == ("anthropic/claude-x", 10, 5, "0.0012")
    table = views.cost_table({"tenants": {"acme": {"calls": 2, "cost_usd": "0.5"}},
                              "models": {"anthropic/claude-x": {"calls": 2, "cost_usd": "0.5"}},
                              "days": {"2026-01-02": {"calls": 1, "cost_usd": "0.4"},
                                       "2026-01-01": {"calls": 1, "cost_usd": "0.1"}}})
    assert table.tenants == [("acme", 2, Decimal("0.5"))]
    measure, bars = views.day_bars(table.days)
    assert measure == "USD" and [b.label for b in bars] == ["2026-01-01", "2026-01-02"]
    assert bars[1].height == views.CHART_H and bars[0].height == views.CHART_H // 4
    assert views.day_bars([("2026-01-01", 3, Decimal(0))])[0].startswith("calls")  # the mock: free calls


def test_pages_escape_what_others_wrote() -> None:
    html = pages.task_list([{"task_id": "t1", "workflow": "<script>x</script>", "status": "failed",
                             "error": "<img src=x onerror=alert(1)>"}], {}, "")
    assert "<script>x" not in html and "<img" not in html and "&lt;script&gt;" in html
    form = pages.approvals("t1", ["b"], "alice", True, "tok")
    assert 'name="csrf" value="tok"' in form and 'value="approve"' in form
    assert "Log in" in pages.approvals("t1", ["b"], None, False, "")


def test_since_takes_what_tail_takes_or_an_iso_time() -> None:
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert views.since_filter("2h", now) == "2026-01-02T10:00:00+00:00"
    assert views.since_filter(" 1d ", now) == "2026-01-01T12:00:00+00:00"
    assert views.since_filter("2026-01-01T00:00", now) == "2026-01-01T00:00"
    assert views.since_filter("yesterday", now) == "yesterday"  # telemetry's error names it


def test_a_since_too_far_back_or_in_odd_digits_is_passed_on_for_telemetry_to_name() -> None:
    """Review of issue #16: `/?since=99999999999d` (or `²d`) raised in the page handler: a 500, not a named error."""
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert views.since_filter("99999999999d", now) == "99999999999d"
    assert views.since_filter("\u00b2d", now) == "\u00b2d"
