"""Dashboard operators limited to tenants, and the task page's link to its trace, over HTTP against a real stack.

Two tenants each run a task that waits at an approval gate. alice may see tenant A only: every page, feed and
decision about B's task answers as for a task that does not exist (404, the same words), her task list shows
A's tasks and nothing of B's, her cost page A's line and A's calls by model and by day with the chart (the
ledger's figures for A, never summed with B's), and her decision on B's gate is refused while B's task still
waits.
root (`tenants=*`) sees both. The stack traces to a file (AE_TRACE_FILE); alice's task page shows the trace id
of the task's spans and links it through AE_DASHBOARD_TRACE_URL.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_engine.runtime import embedded

pytestmark = pytest.mark.e2e
WORKFLOW = "tests/workflows/dashboard"
ALICE, ROOT = "alice-token-0123456789abcdef", "root-token-0123456789abcdef"
TRACE_URL = "http://traces.example:16686/trace/{trace_id}"


@pytest.fixture(scope="module")
def stack(own_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path, str, str, str]]:
    """A traced stack of its own, two fresh tenants, and a dashboard whose alice sees only the first."""
    home = tmp_path_factory.mktemp("dash-tenants")
    trace_file = home / "traces.jsonl"
    engine = own_stack(AE_TRACE_FILE=str(trace_file), OTEL_BSP_SCHEDULE_DELAY="100")
    a, b = f"ta{uuid.uuid4().hex[:9]}", f"tb{uuid.uuid4().hex[:9]}"
    operators = home / "operators"
    operators.write_text(f"alice {ALICE} operator tenants={a}\nroot {ROOT} viewer tenants=*\n")
    port = embedded.free_port()
    proc = engine.replica("dashboard", home / "dashboard.log", AE_DASHBOARD_PORT=str(port),
                          AE_DASHBOARD_OPERATORS=str(operators), AE_DASHBOARD_TRACE_URL=TRACE_URL)
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: _answers(f"{url}/login"), "the dashboard answering", lambda: proc.poll() is None)
        yield engine, trace_file, url, a, b
    finally:
        proc.terminate()
        proc.wait(30)


def _answers(url: str) -> bool:
    try:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2).read()
        return True
    except (urllib.error.URLError, ConnectionError):
        return False


def until(ready: Callable[[], Any], what: str, alive: Callable[[], bool] = lambda: True, tries: int = 300) -> Any:
    """`ready()`'s answer once it is truthy (what telemetry and the trace file show is folded or exported a moment
    after the router's records)."""
    for _ in range(tries):
        answer = ready()
        if answer:
            return answer
        assert alive(), f"gave up waiting for {what}: the process ended"
        time.sleep(0.2)
    raise AssertionError(f"never: {what}")


class Browser:
    """A logged-in person over plain HTTP: a cookie jar, no proxy; answers as (status, text)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                  urllib.request.HTTPCookieProcessor(self.jar))
        status, page = self.post("/login", {"token": token, "next": "/"})
        assert status == 200 and "Log out" in page, page[:500]
        self.csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]

    def get(self, path: str) -> tuple[int, str]:
        return self._open(urllib.request.Request(self.url + path))

    def post(self, path: str, form: dict[str, str]) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode()
        return self._open(urllib.request.Request(self.url + path, data=data, method="POST"))

    def _open(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self.opener.open(request, timeout=20) as answer:
                return answer.status, answer.read(200_000).decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def screenshot(person: Browser, path: str, name: str, where: Path) -> None:
    """The page as the person sees it in Debian's chromium (docs/img/dashboard-NAME.png when
    AE_DASHBOARD_SCREENSHOTS is set: scripts/dashboard-shots.sh)."""
    target = os.environ.get("AE_DASHBOARD_SCREENSHOTS")
    if not target:
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_cookies([{"name": c.name, "value": c.value or "", "url": person.url} for c in person.jar])
            page = context.new_page()
            page.goto(person.url + path)
            page.wait_for_function("document.body.dataset.live === 'open'")
            shot = where / f"dashboard-{name}.png"
            page.screenshot(path=str(shot), full_page=False)
        finally:
            browser.close()
    Path(target).mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, Path(target) / shot.name)


def submit(engine: Any, tenant: str) -> str:
    assert engine.agentctl("workflow", "push", WORKFLOW, "--tenant", tenant).returncode == 0
    sub = engine.agentctl("submit", "dashboard", "--tenant", tenant, "--input", '{"folder": "examples"}')
    assert sub.returncode == 0, sub.stderr
    return str(sub.stdout.strip())


def node_status(engine: Any, task_id: str, node: str) -> str:
    shown = json.loads(engine.agentctl("task", "show", task_id, "--json").stdout or "{}")
    return next((str(n["status"]) for n in shown.get("nodes", []) if n["node"] == node), "")


def showing(person: Browser, path: str, text: str) -> str:
    """The page at `path` when it shows `text`, else ""."""
    status, page = person.get(path)
    return page if status == 200 and text in page else ""


def table_rows(page: str, ident: str) -> list[tuple[str, int, str]]:
    """The rows of the cost page's table `by-IDENT`: (key, calls, cost USD)."""
    section = re.search(rf'<section id="by-{ident}">(.*?)</section>', page, re.S)
    assert section, f"no table by {ident}"
    return [(k, int(n), c) for k, n, c in re.findall(
        r'<tr><td>([^<]*)</td><td class="num">(\d+)</td><td class="num">([^<]*)</td></tr>', section.group(1))]


def notice_of(page: str) -> str:
    found = re.search(r'<p class="notice error" role="status">([^<]*)</p>', page)
    return found.group(1) if found else ""


def test_an_operator_of_one_tenant_sees_and_decides_only_its_tasks(stack: tuple[Any, Path, str, str, str]) -> None:
    engine, trace_file, url, a, b = stack
    task_a, task_b = submit(engine, a), submit(engine, b)
    for task in (task_a, task_b):
        until(lambda t=task: node_status(engine, t, "gate") == "awaiting_approval", f"{task} at its gate")
    alice = Browser(url, ALICE)

    # her own tenant's task: its page and its approve form
    status, page = alice.get(f"/tasks/{task_a}")
    assert status == 200 and 'class="decide" method="post" action="/tasks/' in page and 'data-node="gate"><strong>' in page

    # the other tenant's task is, to her, a task that does not exist: the same status and the same words
    unknown = str(uuid.uuid4())
    status, missing = alice.get(f"/tasks/{unknown}")
    status_b, page_b = alice.get(f"/tasks/{task_b}")
    assert (status, status_b) == (404, 404)
    assert notice_of(page_b) == notice_of(missing).replace(unknown, task_b) == f"no task &#x27;{task_b}&#x27; in " \
        "the router&#x27;s store"
    assert b not in page_b
    for path in (f"/tasks/{task_b}/live", f"/tasks/{task_b}/approvals",
                 f"/tasks/{task_b}/artifacts/sha256:{'0' * 64}", f"/tasks/{task_b}/artifacts/sha256:{'0' * 64}/download"):
        status, text = alice.get(path)
        assert status == 404 and "no task" in text and b not in text, (path, status, text[:300])

    # her approval of B's gate is refused on the server, and B's task still waits there
    status, text = alice.post(f"/tasks/{task_b}/decide", {"node": "gate", "decision": "approve", "csrf": alice.csrf})
    assert status == 404 and text == f"no task '{task_b}' in the router's store"
    # hers goes through, recorded as hers
    status, page = alice.post(f"/tasks/{task_a}/decide", {"node": "gate", "decision": "approve", "csrf": alice.csrf})
    assert status == 200 and "approved node &#x27;gate&#x27; as dashboard:alice" in page
    assert node_status(engine, task_b, "gate") == "awaiting_approval"
    assert engine.agentctl("approve", task_b, "gate").returncode == 0  # B's agents run too: B has costs
    for task in (task_a, task_b):
        until(lambda t=task: node_status(engine, t, "publish") == "awaiting_approval", f"{task} at publish")

    # her task list: A's task, never B's, whatever the filter names
    listed = until(lambda: showing(alice, "/", f'href="/tasks/{task_a}"'), "A's task in alice's list")
    assert f'href="/tasks/{task_b}"' not in listed and b not in listed
    status, filtered = alice.get(f"/?tenant={b}")
    assert status == 200 and task_b not in filtered and "No tasks match." in filtered
    root = Browser(url, ROOT)
    until(lambda: showing(root, "/", f'href="/tasks/{task_b}"'), "B's task in root's list (tenants=*)")

    # her cost page: A's line, and A's calls by model and by day with the chart, the ledger's figures for A
    # (agentctl cost --tenant A); nothing of B's. root's has both tenants and the models
    def cost_of_a() -> tuple[str, dict[str, Any], dict[str, list[tuple[str, int, str]]]] | None:
        """Her cost page and the ledger's line of A, once the page shows what the ledger has (both are read
        while telemetry may still be folding A's last calls)."""
        own = json.loads(engine.agentctl("cost", "--tenant", a, "--json").stdout or "{}")
        status, page = alice.get("/cost")
        if status != 200 or f"<td>{a}</td>" not in page:
            return None
        wanted = {"tenant": [(a, own.get("calls"), own.get("cost_usd"))],
                  "model": [(k, v["calls"], v["cost_usd"]) for k, v in sorted(own.get("models", {}).items())],
                  "day": [(k, v["calls"], v["cost_usd"]) for k, v in sorted(own.get("days", {}).items(), reverse=True)]}
        return (page, own, wanted) if all(table_rows(page, k) == rows for k, rows in wanted.items()) else None

    cost, own, wanted = until(cost_of_a, "alice's cost page showing the ledger's figures of A")
    assert own["models"] and own["days"] and wanted["model"] and wanted["day"]  # A's own sums, on her page
    assert all(table_rows(cost, kind) == rows for kind, rows in wanted.items())
    assert b not in cost and 'id="cost-chart"' in cost and 'id="cost-scope"' in cost
    everything = until(lambda: showing(root, "/cost", f"<td>{b}</td>"), "B's cost line")
    assert f"<td>{a}</td>" in everything and 'id="by-model"' in everything and "mock/" in everything

    # the trace: the one the router's dispatches of the task's nodes are in (agentctl's request and each
    # approval have traces of their own, linked), linked to the trace viewer
    def trace_of_a() -> str:
        spans = [json.loads(line) for line in trace_file.read_text().splitlines()] if trace_file.exists() else []
        return next((s["trace_id"] for s in spans if s["attributes"].get("ae.task.id") == task_a
                     and s["name"].startswith(f"publish ae.{a}.node.dispatched")), "")

    trace_id = until(trace_of_a, f"a span of task {task_a} in {trace_file}")
    status, page = alice.get(f"/tasks/{task_a}")
    assert re.search(r'<code id="trace-id">([0-9a-f]{32})</code>', page).group(1) == trace_id  # type: ignore[union-attr]
    assert f'id="trace-link" href="{TRACE_URL.replace("{trace_id}", trace_id)}"' in page
    screenshot(alice, f"/tasks/{task_a}", "trace", trace_file.parent)

    for task in (task_a, task_b):
        assert engine.agentctl("reject", task, "publish", "--reason", "test over").returncode == 0
