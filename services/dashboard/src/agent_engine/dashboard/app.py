"""The dashboard's web application (Starlette): pages, the live feed of a task (server-sent events), login and
the approve / reject POSTs. Reads go through `Link` (queries over the bus); nothing here touches a store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agent_engine.dashboard import artifacts, pages, scope, views
from agent_engine.dashboard.auth import SESSION_S, Operator, Sessions, login
from agent_engine.dashboard.link import Link, QueryError

COOKIE = "ae_dashboard"
REFRESH_S = 5.0
"""A watched task is asked again at least this often, whatever the live feed says (a dropped wake-up)."""
STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'; "
                                               "img-src 'self' data:; frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
"""Only our own files run (no inline script), and no other site may frame the approve buttons."""


@dataclass
class Config:
    operators: dict[str, Operator]
    sessions: Sessions
    open_read: bool = False
    """Pages that only read may be seen without logging in (AE_DASHBOARD_OPEN_READ=1)."""
    secure_cookie: bool = False
    trace_url: str | None = None
    """AE_DASHBOARD_TRACE_URL: a trace viewer's page of one trace, `{trace_id}` where the id goes."""


def build(link: Link, config: Config) -> Starlette:
    def user_of(request: Request) -> Operator | None:
        name = config.sessions.name_of(request.cookies.get(COOKIE), time.time())
        return config.operators.get(name) if name else None  # a person removed from the file is out at once

    def html(request: Request, title: str, body: str, status: int = 200) -> Response:
        user = user_of(request)
        csrf = config.sessions.csrf(request.cookies.get(COOKIE, "")) if user else ""
        return HTMLResponse(pages.page(title, body, user.name if user else None, csrf), status,
                            headers=SECURITY_HEADERS)

    def scope_of(request: Request) -> scope.Scope:
        return scope.scope_of(user_of(request), config.open_read)

    async def visible_show(request: Request, task_id: str) -> dict[str, Any]:
        """task.show, when the task is of a tenant this user may see; else QueryError worded as the router
        words an unknown task, so another tenant's task ids cannot be told from ids that do not exist."""
        shown = await link.show(task_id)
        if not scope_of(request).sees(shown.get("tenant")):
            raise QueryError(scope.not_found(task_id))
        return shown

    def must_log_in(request: Request) -> Response | None:
        if config.open_read or user_of(request):
            return None
        return RedirectResponse(f"/login?next={request.url.path}", 303)

    def same_origin(request: Request) -> bool:
        """A POST must come from a page of ours: the browser's Origin (when it sends one) names this host."""
        origin = request.headers.get("origin")
        return origin is None or origin.split("://", 1)[-1] == request.headers.get("host")

    async def task_list(request: Request) -> Response:
        if (redirect := must_log_in(request)) is not None:
            return redirect
        filters = {k: request.query_params.get(k, "").strip() for k in pages.FILTERS}
        body: dict[str, Any] = {k: v for k, v in filters.items() if v}
        if "since" in body:
            body["since"] = views.since_filter(body["since"], datetime.now(UTC))
        tasks, problem = [], ""
        asks = scope.list_tenants(scope_of(request), filters["tenant"])
        try:
            if asks is None:
                tasks = await link.tasks(body)
            elif asks:  # one ask per tenant this user may see, merged as one list would be
                lists = await asyncio.gather(*(link.tasks({**body, "tenant": t, "limit": LIST_LIMIT}) for t in asks))
                tasks = scope.merge_tasks(lists, LIST_LIMIT)
        except QueryError as exc:
            problem = f"cannot list tasks: {exc}"
        return html(request, "Tasks", pages.task_list(tasks, filters, problem))

    async def task_page(request: Request) -> Response:
        if (redirect := must_log_in(request)) is not None:
            return redirect
        task_id = request.path_params["task_id"]
        try:
            shown, history = await asyncio.gather(visible_show(request, task_id), link.history(task_id))
        except QueryError as exc:
            return html(request, "Task", pages.notice(str(exc), "error"), 404)
        ledger_problem, calls = "", []
        try:
            calls = views.llm_calls(await link.ledger(task_id, str(shown.get("tenant") or "") or None))
        except QueryError as exc:
            ledger_problem = f"the cost ledger cannot be read: {exc}"
        manifest = views.manifest_of(history)
        user = user_of(request)
        csrf = config.sessions.csrf(request.cookies.get(COOKIE, "")) if user else ""
        began = views._time(shown.get("started_at"))
        now_s = (datetime.now(UTC) - began).total_seconds() if began else 0.0
        body = pages.task_page(
            shown, views.layout(manifest) if manifest else None,
            pages.timeline_svg(views.timeline(shown), now_s), views.event_rows(history), calls,
            views.tool_calls(shown, manifest),
            pages.approvals(task_id, views.live_state(shown)["waiting"], user.name if user else None,
                            bool(user and user.role == "operator"), csrf),
            request.query_params.get("message", ""), ledger_problem,
            pages.artifacts(task_id, artifacts.listed(history)),
            pages.trace(views.trace_id(history), config.trace_url))
        return html(request, f"Task {task_id[:8]}", body)

    async def row_of(request: Request) -> tuple[artifacts.ArtifactRow, str] | Response:
        """The artifact a URL names and its task's tenant, when the task's events refer to it; else the response
        that says why not. No other id is ever fetched (the credential could)."""
        if (redirect := must_log_in(request)) is not None:
            return redirect
        task_id, wanted = request.path_params["task_id"], request.path_params["artifact"]
        try:
            shown, history = await asyncio.gather(visible_show(request, task_id), link.history(task_id))
        except QueryError as exc:
            return html(request, "Artifact", pages.notice(str(exc), "error"), 404)
        row = artifacts.find(artifacts.listed(history), wanted)
        if row is None:
            return html(request, "Artifact", pages.notice(
                f"no event of task {task_id} refers to artifact {wanted[:80]}", "error"), 404)
        return row, str(shown.get("tenant") or "")

    async def artifact_view(request: Request) -> Response:
        """A text artifact's page with the start of it (read whole, as it is checked whole); any other
        downloads."""
        found = await row_of(request)
        if isinstance(found, Response):
            return found
        row, tenant = found
        if not artifacts.is_text(row.media_type):
            return await streamed(request, row, tenant)
        try:
            content = await link.artifact(tenant, row.artifact)
        except QueryError as exc:
            return html(request, "Artifact", pages.notice(str(exc), "error"), 502)
        text, cut = artifacts.preview(content)
        return html(request, f"Artifact {row.name[:40]}",
                    pages.artifact_page(request.path_params["task_id"], row, text,
                                        artifacts.PREVIEW_BYTES if cut else None))

    async def artifact_download(request: Request) -> Response:
        found = await row_of(request)
        return found if isinstance(found, Response) else await streamed(request, *found)

    async def streamed(request: Request, row: artifacts.ArtifactRow, tenant: str) -> Response:
        """The exact bytes as a download, streamed as they are read (an artifact may be 64 MiB): one chunk
        held at a time. An opaque type and `attachment`, so no browser renders other people's content (HTML,
        SVG) as a page of ours, whatever media type the reference claims."""
        try:
            size, chunks = await link.artifact_chunks(tenant, row.artifact)
        except QueryError as exc:
            return html(request, "Artifact", pages.notice(str(exc), "error"), 502)
        return StreamingResponse(chunks, media_type="application/octet-stream", headers={
            **SECURITY_HEADERS, "Content-Disposition": artifacts.disposition(row.name),
            "Cache-Control": "private, no-store", "Content-Length": str(size)})

    async def approvals_part(request: Request) -> Response:
        """The approvals section alone: the task page swaps it in when a node starts or stops waiting."""
        if must_log_in(request) is not None:
            return PlainTextResponse("log in first", 401)
        task_id = request.path_params["task_id"]
        try:
            shown = await visible_show(request, task_id)
        except QueryError as exc:
            return HTMLResponse(pages.notice(str(exc), "error"), 404, headers=SECURITY_HEADERS)
        user = user_of(request)
        csrf = config.sessions.csrf(request.cookies.get(COOKIE, "")) if user else ""
        return HTMLResponse(pages.approvals(task_id, views.live_state(shown)["waiting"], user.name if user else None,
                                            bool(user and user.role == "operator"), csrf), headers=SECURITY_HEADERS)

    async def task_live(request: Request) -> Response:
        """Server-sent events: the task's live state now and after every change, until it ends or the
        browser goes."""
        if must_log_in(request) is not None:
            return PlainTextResponse("log in first", 401)
        task_id = request.path_params["task_id"]
        gone = scope.not_found(task_id)
        try:  # asked before the feed opens: no task, or one this user may not see, gets no feed at all
            await visible_show(request, task_id)
        except QueryError as exc:
            if str(exc) == gone:
                return PlainTextResponse(gone, 404)
            # the router did not answer: the feed opens and keeps asking, as a feed whose router goes does

        async def stream() -> AsyncIterator[str]:
            wake = await link.watch(task_id)
            last = None
            try:
                while not link.closing and not await request.is_disconnected():
                    wake.clear()
                    try:
                        state = views.live_state(await visible_show(request, task_id))
                    except QueryError as exc:
                        yield f"event: problem\ndata: {json.dumps(str(exc))}\n\n"
                        if str(exc) == gone:  # no such task for this user, learnt once the router answers again
                            return
                        state = None
                    if state is not None and state != last:
                        last = state
                        yield f"data: {json.dumps(state)}\n\n"
                    if state is not None and state["status"] in TERMINAL:
                        yield "event: end\ndata: {}\n\n"
                        return
                    try:
                        await asyncio.wait_for(wake.wait(), REFRESH_S)
                    except TimeoutError:
                        pass
            finally:
                await link.unwatch(task_id, wake)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def decide(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        user = user_of(request)
        form = await request.form()
        if user is None:
            return PlainTextResponse("log in first: deciding needs an operator's login", 401)
        if not same_origin(request) or not config.sessions.csrf_ok(request.cookies.get(COOKIE),
                                                                   str(form.get("csrf", ""))):
            return PlainTextResponse("refused: the form's CSRF token is missing or not this session's", 403)
        if user.role != "operator":
            return PlainTextResponse(f"refused: {user.name} is a viewer and may not decide", 403)
        node, decision = str(form.get("node", "")), str(form.get("decision", ""))
        reason = str(form.get("reason", "")).strip()[:500]
        if decision not in ("approve", "reject"):
            return PlainTextResponse("decision must be 'approve' or 'reject'", 400)
        try:  # before anything is published: another tenant's task is one that does not exist
            await visible_show(request, task_id)
        except QueryError as exc:
            if str(exc) == scope.not_found(task_id):
                return PlainTextResponse(str(exc), 404)
            return RedirectResponse(f"/tasks/{_quote(task_id)}?message={_quote(str(exc))}", 303)  # why; no decision
        if decision == "reject" and not reason:
            message = "a rejection needs a reason: write it in the box next to Reject"
        else:
            try:
                who = await link.decide(task_id, node, decision, reason if decision == "reject" else "", user.name)
                message = f"{decision}d node '{node}' as {who}"
            except QueryError as exc:
                message = str(exc)
        return RedirectResponse(f"/tasks/{_quote(task_id)}?message={_quote(message)}", 303)

    async def cost(request: Request) -> Response:
        if (redirect := must_log_in(request)) is not None:
            return redirect
        problem, table = "", views.CostTable()
        seen = scope_of(request).tenants
        try:
            if seen is None:
                table = views.cost_table(await link.ledger())
            elif seen:  # their tenants' lines, and those tenants' calls by model and by day (one ask)
                table = views.cost_table(await link.tenant_sums(sorted(seen)))
        except QueryError as exc:
            problem = f"the cost ledger cannot be read: {exc}"
        chart = pages.bars_svg(*views.day_bars(table.days))
        return html(request, "Cost", pages.cost_page(table, chart, problem, every_tenant=seen is None))

    async def login_form(request: Request) -> Response:
        return html(request, "Log in", pages.login_page("", _local(request.query_params.get("next", "/"))))

    async def login_post(request: Request) -> Response:
        form = await request.form()
        next_url = _local(str(form.get("next", "/")))
        if not same_origin(request):
            return PlainTextResponse("refused: the login form came from another site", 403)
        operator = login(config.operators, str(form.get("token", "")))
        if operator is None:
            return html(request, "Log in", pages.login_page("That token is not listed.", next_url), 401)
        response = RedirectResponse(next_url, 303)
        response.set_cookie(COOKIE, config.sessions.issue(operator.name, time.time()), max_age=SESSION_S,
                            httponly=True, samesite="strict", secure=config.secure_cookie)
        return response

    async def logout(request: Request) -> Response:
        form = await request.form()
        if config.sessions.csrf_ok(request.cookies.get(COOKIE), str(form.get("csrf", ""))):
            response = RedirectResponse("/", 303)
            response.delete_cookie(COOKIE)
            return response
        return PlainTextResponse("refused: the form's CSRF token is missing or not this session's", 403)

    return Starlette(routes=[
        Route("/", task_list), Route("/tasks/{task_id}", task_page), Route("/tasks/{task_id}/live", task_live),
        Route("/tasks/{task_id}/approvals", approvals_part),
        Route("/tasks/{task_id}/decide", decide, methods=["POST"]), Route("/cost", cost),
        Route("/tasks/{task_id}/artifacts/{artifact}", artifact_view),
        Route("/tasks/{task_id}/artifacts/{artifact}/download", artifact_download),
        Route("/login", login_form), Route("/login", login_post, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ])


LIST_LIMIT = 50
"""Tasks a list shows when it is merged from several tenants' asks (telemetry's own default for one ask)."""
TERMINAL = ("succeeded", "failed", "rejected", "cancelled", "deduplicated")


def _local(url: str) -> str:
    """Only a path on this site after login: never an open redirect to another one."""
    return url if url.startswith("/") and not url.startswith("//") else "/"


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text[:300])
