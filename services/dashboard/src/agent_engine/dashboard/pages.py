"""The dashboard's HTML: plain server-rendered pages (no build step, no template engine). Every value from the
engine goes through `e()` (HTML escaping): task input and errors are other people's text."""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from agent_engine.dashboard.artifacts import ArtifactRow, is_text
from agent_engine.dashboard.views import (
    BAR_W,
    BOX_H,
    BOX_W,
    CHART_H,
    PAD,
    Bar,
    CostTable,
    EventRow,
    Graph,
    LlmCall,
    TimelineRow,
    ToolCall,
)


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def page(title: str, body: str, user: str | None, csrf: str = "") -> str:
    who = (f'<form method="post" action="/logout" class="who">{e(user)} '
           f'<input type="hidden" name="csrf" value="{e(csrf)}"><button>Log out</button></form>'
           if user else '<a class="who" href="/login">Log in</a>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)} · Agent Engine</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/dashboard.css"><script src="/static/dashboard.js" defer></script></head>
<body><nav><a href="/" class="brand">Agent Engine</a><a href="/">Tasks</a><a href="/cost">Cost</a>{who}</nav>
<main>{body}</main></body></html>"""


def notice(text: str, kind: str = "info") -> str:
    return f'<p class="notice {e(kind)}" role="status">{e(text)}</p>' if text else ""


FILTERS = ("tenant", "status", "workflow", "since", "search")
STATUSES = ("", "requested", "accepted", "queued", "running", "waiting", "succeeded", "failed", "cancelled",
            "rejected", "deduplicated")


def task_list(tasks: list[dict[str, Any]], filters: dict[str, str], problem: str) -> str:
    inputs = []
    for name in FILTERS:
        if name == "status":
            options = "".join(f'<option value="{s}"{" selected" if filters.get(name) == s else ""}>{s or "any"}'
                              "</option>" for s in STATUSES)
            inputs.append(f'<label>status <select name="status">{options}</select></label>')
        else:
            hint = ' placeholder="2h, 1d or an ISO time"' if name == "since" else ""
            inputs.append(f'<label>{name} <input name="{name}" value="{e(filters.get(name, ""))}"{hint}></label>')
    rows = "".join(
        f'<tr><td><a href="/tasks/{quote(str(t.get("task_id", "")))}">{e(str(t.get("task_id", ""))[:13])}</a></td>'
        f'<td>{e(t.get("tenant"))}</td><td>{e(t.get("workflow"))}</td>'
        f'<td><span class="status s-{e(t.get("status"))}">{e(t.get("status"))}</span></td>'
        f'<td>{e(str(t.get("started_at") or "")[:19])}</td><td>{e(str(t.get("finished_at") or "")[:19])}</td>'
        f'<td class="num">{e(t.get("cost_usd"))}</td><td>{e(str(t.get("error") or "")[:80])}</td></tr>'
        for t in tasks)
    table = (f'<table id="tasks"><tr><th>task</th><th>tenant</th><th>workflow</th><th>status</th><th>started</th>'
             f'<th>finished</th><th>cost USD</th><th>error</th></tr>{rows}</table>' if tasks
             else "<p>No tasks match.</p>" if not problem else "")
    return (f'<h1>Tasks</h1><form class="filters" method="get" action="/">{"".join(inputs)}<button>Filter</button>'
            f'</form>{notice(problem, "error")}{table}')


STATUS_CLASS = {"succeeded": "done", "completed": "done", "failed": "failed", "dispatched": "running",
                "running": "running", "awaiting_approval": "waiting", "skipped": "skipped"}


def graph_svg(graph: Graph, statuses: dict[str, str]) -> str:
    """The workflow graph as inline SVG; each node's `data-status` is what the live feed changes."""
    at = {n.id: n for n in graph.nodes}
    lines = []
    for a, b in graph.edges:
        if a in at and b in at:
            x1, y1 = at[a].x + BOX_W, at[a].y + BOX_H // 2
            x2, y2 = at[b].x, at[b].y + BOX_H // 2
            if x2 <= x1:  # a loop back: curve under the boxes
                lines.append(f'<path class="edge back" d="M{x1 - BOX_W // 2},{y1 + BOX_H // 2} C{x1 - BOX_W // 2},'
                             f'{y1 + BOX_H + 10} {x2 + BOX_W // 2},{y2 + BOX_H + 10} {x2 + BOX_W // 2},'
                             f'{y2 + BOX_H // 2}" marker-end="url(#arrow)"/>')
            else:
                lines.append(f'<line class="edge" x1="{x1}" y1="{y1}" x2="{x2 - 4}" y2="{y2}" '
                             'marker-end="url(#arrow)"/>')
    boxes = "".join(
        f'<g class="node" data-node="{e(n.id)}" data-status="{e(statuses.get(n.id, "pending"))}">'
        f'<rect x="{n.x}" y="{n.y}" width="{BOX_W}" height="{BOX_H}" rx="6"/>'
        f'<text x="{n.x + BOX_W // 2}" y="{n.y + 17}">{e(n.id)}</text>'
        f'<text class="sub" x="{n.x + BOX_W // 2}" y="{n.y + 32}">{e(n.kind or n.role)} · '
        f'<tspan class="st">{e(statuses.get(n.id, "pending"))}</tspan></text></g>'
        for n in graph.nodes)
    return (f'<svg id="graph" viewBox="0 0 {graph.width} {graph.height + PAD}" width="{graph.width}" '
            f'height="{graph.height + PAD}" role="img" aria-label="workflow graph"><defs><marker id="arrow" '
            'viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
            f'<path d="M0,0 L10,5 L0,10 z"/></marker></defs>{"".join(lines)}{boxes}</svg>')


def timeline_svg(rows: list[TimelineRow], now_s: float) -> str:
    if not rows:
        return "<p>No node has started yet.</p>"
    span = max([now_s, *(r.end_s or r.start_s for r in rows)]) or 1.0
    width, label_w, row_h = 640, 140, 22
    bars = []
    for index, row in enumerate(rows):
        x = label_w + int((width - label_w) * row.start_s / span)
        end = row.end_s if row.end_s is not None else now_s
        w = max(3, int((width - label_w) * (end - row.start_s) / span))
        y = index * row_h
        took = f"{end - row.start_s:.2f}s" + ("" if row.end_s is not None else " so far")
        bars.append(f'<text x="0" y="{y + 15}">{e(row.node)}</text><rect class="bar b-{e(row.status)}" x="{x}" '
                    f'y="{y + 4}" width="{w}" height="{row_h - 8}"><title>{e(row.node)}: {e(row.status)}, '
                    f'{e(took)}</title></rect>')
    return (f'<svg class="timeline" viewBox="0 0 {width} {len(rows) * row_h}" width="{width}" '
            f'height="{len(rows) * row_h}">{"".join(bars)}</svg><p class="hint">0 to {span:.2f}s after the task '
            'started</p>')


def approvals(task_id: str, waiting: list[str], user: str | None, can_decide: bool, csrf: str) -> str:
    """The approvals section's content; `data-waiting` names the nodes it was drawn for (the live page redraws
    it when the task's waiting nodes are no longer those)."""
    return f'<div data-waiting="{e(",".join(waiting))}">{_approvals(task_id, waiting, user, can_decide, csrf)}</div>'


def _approvals(task_id: str, waiting: list[str], user: str | None, can_decide: bool, csrf: str) -> str:
    if not waiting:
        return '<p id="no-approvals">No node waits for approval.</p>'
    if not user:
        return (f'<p>Waiting for approval: {e(", ".join(waiting))}. <a href="/login?next=/tasks/{quote(task_id)}">'
                'Log in</a> as an operator to decide.</p>')
    if not can_decide:
        return f'<p>Waiting for approval: {e(", ".join(waiting))}. Your role may not decide.</p>'
    forms = []
    for node in waiting:
        action = f"/tasks/{quote(task_id)}/decide"
        forms.append(
            f'<form class="decide" method="post" action="{action}" data-node="{e(node)}"><strong>{e(node)}</strong>'
            f'<input type="hidden" name="csrf" value="{e(csrf)}"><input type="hidden" name="node" value="{e(node)}">'
            f'<button name="decision" value="approve" class="approve">Approve</button>'
            f'<input name="reason" placeholder="reason (needed to reject)" maxlength="500">'
            f'<button name="decision" value="reject" class="reject">Reject</button></form>')
    return "".join(forms)


def task_page(shown: dict[str, Any], graph: Graph | None, timeline: str, events: list[EventRow],
              calls: list[LlmCall], tools: list[ToolCall], approvals_html: str, message: str,
              ledger_problem: str, artifacts_html: str = "", trace_html: str = "") -> str:
    task_id = str(shown.get("task_id", ""))
    statuses = {str(n["node"]): str(n["status"]) for n in shown.get("nodes", [])}
    usage = shown.get("usage") or {}
    head = (f'<h1>Task <code>{e(task_id)}</code></h1><p class="meta">{e(shown.get("workflow"))} '
            f'rev {e(str(shown.get("revision") or "")[:12])} · tenant {e(shown.get("tenant"))} · '
            f'<span id="task-status" class="status s-{e(shown.get("status"))}">{e(shown.get("status"))}</span>'
            f' · started {e(str(shown.get("started_at") or "")[:19])}'
            f'{" · " + e(shown.get("reason")) if shown.get("reason") else ""}</p>{trace_html}{notice(message)}')
    graph_html = graph_svg(graph, statuses) if graph else "<p>The task has not started: no graph yet.</p>"
    event_rows = "".join(f"<tr><td>{e(r.time)}</td><td>{e(r.type)}</td><td>{e(r.node)}</td><td>{e(r.summary)}</td>"
                         "</tr>" for r in events)
    call_rows = "".join(f"<tr><td>{e(c.time)}</td><td>{e(c.node)}</td><td>{e(c.model)}</td>"
                        f'<td class="num">{c.input_tokens}</td><td class="num">{c.output_tokens}</td>'
                        f'<td class="num">{e(c.cost_usd)}</td><td>{e(c.outcome)}</td></tr>' for c in calls)
    tool_rows = "".join(f"<tr><td>{e(t.node)}</td><td>{e(t.tool)}</td><td>{e(t.status)}</td><td>{e(t.detail)}</td>"
                        "</tr>" for t in tools)
    return (f'{head}<section><h2>Graph</h2><div class="graph" data-task="{e(task_id)}">{graph_html}</div></section>'
            f'<section id="approvals"><h2>Approvals</h2><div class="forms">{approvals_html}</div></section>'
            f'<div id="details"><section><h2>Timeline</h2>{timeline}</section>'
            f'<section id="llm"><h2>LLM calls</h2><p>{e(usage.get("input_tokens", 0))} input and '
            f'{e(usage.get("output_tokens", 0))} output tokens in all.</p>{notice(ledger_problem, "error")}'
            f'<table><tr><th>time</th><th>node</th><th>model</th><th>input</th><th>output</th><th>cost USD</th>'
            f'<th>outcome</th></tr>{call_rows}</table></section>'
            f'<section id="tools"><h2>Tool calls</h2><table><tr><th>node</th><th>tool</th><th>status</th>'
            f'<th>error</th></tr>{tool_rows}</table></section>'
            f'{artifacts_html}'
            f'<section id="events"><h2>Events</h2><table><tr><th>time</th><th>type</th><th>node</th><th>details</th>'
            f'</tr>{event_rows}</table></section></div>')


TRACE_ID = "{trace_id}"
"""Where the trace id goes in AE_DASHBOARD_TRACE_URL."""


def trace(trace_id: str | None, url_template: str | None) -> str:
    """The task's trace id, and a link to it in the trace viewer AE_DASHBOARD_TRACE_URL names (its `{trace_id}`
    replaced; nothing else of the template is interpreted)."""
    if trace_id is None:
        return '<p class="meta" id="trace">trace: none (not started yet, or tracing was off when it started)</p>'
    link = ""
    if url_template:
        href = url_template.replace(TRACE_ID, trace_id)
        link = f' · <a id="trace-link" href="{e(href)}" target="_blank" rel="noopener noreferrer">open the trace</a>'
    return f'<p class="meta" id="trace">trace <code id="trace-id">{e(trace_id)}</code>{link}</p>'


def artifact_link(task_id: str, artifact: str, download: bool = False) -> str:
    return f"/tasks/{quote(task_id)}/artifacts/{quote(artifact)}" + ("/download" if download else "")


def artifacts(task_id: str, rows: list[ArtifactRow]) -> str:
    """The task page's artifacts: content its events carry by reference. A text one opens on a page of its own,
    any one downloads."""
    if not rows:
        return '<section id="artifacts"><h2>Artifacts</h2><p>No event of this task refers to an artifact.</p></section>'
    lines = "".join(
        f'<tr data-artifact="{e(r.artifact)}"><td>{e(r.node)}</td><td>{e(r.name)}</td><td class="num">{r.size}</td>'
        f'<td>{e(r.media_type)}</td><td><code title="{e(r.artifact)}">{e(r.artifact[:19])}…</code></td><td>'
        + (f'<a class="view" href="{e(artifact_link(task_id, r.artifact))}">view</a> ' if is_text(r.media_type) else "")
        + f'<a class="download" href="{e(artifact_link(task_id, r.artifact, True))}" download>download</a></td></tr>'
        for r in rows)
    return (f'<section id="artifacts"><h2>Artifacts</h2><table><tr><th>node</th><th>name</th><th>bytes</th>'
            f'<th>media type</th><th>id</th><th></th></tr>{lines}</table></section>')


def artifact_page(task_id: str, row: ArtifactRow, text: str, cut_at: int | None) -> str:
    """A text artifact shown on a page: escaped, and only its first `cut_at` bytes when it is longer."""
    more = (f'<p class="notice info" role="status">Showing the first {cut_at:,} of {row.size:,} bytes; '
            f'the download has all of it.</p>' if cut_at is not None else "")
    download = e(artifact_link(task_id, row.artifact, True))
    return (f'<h1>Artifact <code>{e(row.name)}</code></h1><p class="meta">task <a href="/tasks/{quote(task_id)}">'
            f'<code>{e(task_id)}</code></a> · node {e(row.node or "-")} · {row.size:,} bytes · {e(row.media_type)} · '
            f'<code>{e(row.artifact)}</code> · <a class="download" href="{download}" download>download</a></p>'
            f'{more}<pre id="artifact-text">{e(text)}</pre>')


def bars_svg(measure: str, bars: list[Bar]) -> str:
    if not bars:
        return "<p>No LLM calls yet.</p>"
    width = PAD * 2 + len(bars) * (BAR_W + 12)
    parts = []
    for bar in bars:
        parts.append(f'<rect class="bar" x="{bar.x}" y="{bar.y}" width="{BAR_W}" height="{max(bar.height, 1)}">'
                     f'<title>{e(bar.label)}: ${e(bar.value)}</title></rect>'
                     f'<text class="val" x="{bar.x + BAR_W // 2}" y="{bar.y - 4}">{e(_figure(bar.value))}</text>'
                     f'<text x="{bar.x + BAR_W // 2}" y="{PAD + CHART_H + 14}">{e(bar.label[5:])}</text>')
    return (f'<p class="hint">{e(measure)} by day</p><svg id="cost-chart" viewBox="0 0 {width} '
            f'{CHART_H + PAD * 2 + 10}" width="{width}" height="{CHART_H + PAD * 2 + 10}" role="img" '
            f'aria-label="{e(measure)} by day">{"".join(parts)}</svg>')


def _figure(value: Any) -> str:
    return f"{value:.4f}" if value != int(value) else str(int(value))


def cost_page(table: CostTable, chart: str, problem: str, every_tenant: bool = True) -> str:
    def block(title: str, lines: list[tuple[str, int, Any]], ident: str) -> str:
        rows = "".join(f'<tr><td>{e(k)}</td><td class="num">{calls}</td><td class="num">{e(cost)}</td></tr>'
                       for k, calls, cost in lines)
        return (f'<section id="by-{ident}"><h2>{title}</h2><table><tr><th>{ident}</th><th>calls</th>'
                f'<th>cost USD</th></tr>{rows}</table></section>')

    scope = ('' if every_tenant else '<p class="hint" id="cost-scope">Only the tenants you may see: by model '
             'and by day, their calls alone (a call of a task erased since is not in them).</p>')
    return (f'<h1>Cost</h1>{notice(problem, "error")}{scope}<section><h2>By day</h2>{chart}</section>'
            f'<div class="cols">{block("By tenant", table.tenants, "tenant")}{block("By model", table.models, "model")}'
            f'{block("By day", sorted(table.days, reverse=True), "day")}</div>')


def login_page(message: str, next_url: str) -> str:
    return (f'<h1>Log in</h1>{notice(message, "error")}<form method="post" action="/login" class="login">'
            f'<input type="hidden" name="next" value="{e(next_url)}"><label>Operator token '
            '<input type="password" name="token" autocomplete="current-password" autofocus></label>'
            '<button>Log in</button></form><p class="hint">Tokens are listed in the file AE_DASHBOARD_OPERATORS '
            'names (docs/observability.md).</p>')
