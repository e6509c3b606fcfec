"""The web dashboard in a real browser (Debian's chromium, driven by Playwright; never `playwright install`).

A task waits at an approval gate while the page opens; once the gate is approved, its three agents run a second
each and the page colours them green one after another without reloading (server-sent events). The operator
then logs in... and approves the last, held node from the page; the task succeeds and its history names who
decided. A task with a 1 MiB tool output shows its artifact on the page, and the download is its exact bytes.
Screenshots go to the test's tmp dir; AE_DASHBOARD_SCREENSHOTS=docs/img (scripts/dashboard-shots.sh)
copies them into the docs."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_engine.contracts.artifacts import artifact_id
from agent_engine.runtime import embedded

pytestmark = pytest.mark.e2e
WORKFLOW = "tests/workflows/dashboard"
CHROMIUM = "/usr/bin/chromium"
TOKEN = "alice-token-0123456789abcdef"
VIEWER_TOKEN = "victor-token-0123456789abcdef"
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def dashboard(engine: Any, tmp_path: Path) -> Iterator[str]:
    """A dashboard of its own beside the stack's (its own port and operators file); its URL."""
    operators = tmp_path / "operators"
    operators.write_text(f"alice {TOKEN} operator\nvictor {VIEWER_TOKEN} viewer\n")
    port = embedded.free_port()
    proc = engine.replica("dashboard", tmp_path / "dashboard.log", AE_DASHBOARD_PORT=str(port),
                          AE_DASHBOARD_OPERATORS=str(operators))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # until it answers (it connects to NATS first)
            try:
                DIRECT.open(f"{url}/login", timeout=2).read()
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # `launch` gives the browser a fresh user-data-dir of its own (a temporary one, removed at close)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            yield browser
        finally:
            browser.close()


def shoot(page: Any, name: str, tmp_path: Path) -> None:
    path = tmp_path / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("AE_DASHBOARD_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


def submit(engine: Any, tenant: str) -> str:
    assert engine.agentctl("workflow", "push", WORKFLOW, "--tenant", tenant).returncode == 0
    sub = engine.agentctl("submit", "dashboard", "--tenant", tenant, "--input", '{"folder": "examples"}')
    assert sub.returncode == 0, sub.stderr
    return str(sub.stdout.strip())


def open_until(page: Any, url: str, ready: Callable[[], bool], tries: int = 100) -> None:
    """Open `url` until `ready()` holds: what telemetry shows (the ledger, the task list) is folded from the
    stream a moment after the router's records, so a page may be opened before it caught up."""
    for _ in range(tries):
        page.goto(url)
        if ready():
            return
        page.wait_for_timeout(200)
    raise AssertionError(f"{url} never showed what was expected: {page.locator('main').inner_text()[:2000]}")


RECORD_CHANGES = """() => {
  window.__samePage = true;
  window.__changes = [];
  new MutationObserver(function (records) {
    for (const r of records) {
      if (r.oldValue !== r.target.dataset.status) window.__changes.push([r.target.dataset.node, r.target.dataset.status]);
    }
  }).observe(document.getElementById("graph"),
             {attributes: true, attributeFilter: ["data-status"], attributeOldValue: true, subtree: true});
}"""


def test_a_task_runs_live_in_the_browser_and_is_approved_from_it(engine: Any, tenant: str, dashboard: str,
                                                                  browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    task_id = submit(engine, tenant)
    engine.wait_for_status(task_id, "waiting")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))

    # reading needs a login (AE_DASHBOARD_OPEN_READ is off): the page sends us to it, and back after
    page.goto(f"{dashboard}/tasks/{task_id}")
    assert "/login" in page.url
    page.fill("input[name=token]", "not-a-listed-token-at-all")
    page.click("form.login button")
    assert "That token is not listed." in page.content()
    page.fill("input[name=token]", TOKEN)
    page.click("form.login button")
    page.wait_for_url(f"{dashboard}/tasks/{task_id}")
    assert page.locator("nav .who").inner_text().startswith("alice")

    graph = page.locator("#graph")
    assert graph.locator(".node").count() == 6
    assert graph.locator('.node[data-node="gate"]').get_attribute("data-status") == "awaiting_approval"
    for node in ("plan", "draft", "review"):
        assert graph.locator(f'.node[data-node="{node}"]').get_attribute("data-status") == "pending"
    page.wait_for_function("document.body.dataset.live === 'open'")
    page.evaluate(RECORD_CHANGES)

    # the gate is let through elsewhere (agentctl, as the tenant's operator): this page only watches
    approved = engine.agentctl("--credential", engine.credential(tenant, "olga"), "approve", task_id, "gate")
    assert approved.returncode == 0, approved.stderr
    for node in ("plan", "draft", "review"):
        page.wait_for_selector(f'#graph .node[data-node="{node}"][data-status="succeeded"]', timeout=60_000)
    try:
        page.wait_for_selector('form.decide[data-node="publish"]', timeout=30_000)  # swapped in, no reload
    except PlaywrightTimeout:
        raise AssertionError(f"no approve form for publish: changes {page.evaluate('window.__changes')}, "
                             f"approvals {page.locator('#approvals').inner_html()}, console {console}") from None
    assert page.evaluate("window.__samePage") is True
    changes = page.evaluate("window.__changes")
    green = [node for node, status in changes if status == "succeeded"]
    assert [n for n in green if n in ("plan", "draft", "review")] == ["plan", "draft", "review"]
    assert ["publish", "awaiting_approval"] in changes
    assert page.locator("#task-status").inner_text() == "waiting"
    shoot(page, "task", tmp_path)

    # the LLM calls, with tokens and cost, the tool calls and the events: drawn again below the graph, no reload
    page.locator("#llm table tr").nth(3).wait_for(timeout=30_000)  # a header and the three agents' calls
    page.locator("#events tr", has_text="publish").first.wait_for(timeout=30_000)  # its approval asked for
    assert page.evaluate("window.__samePage") is True
    assert "mock/" in page.locator("#llm").inner_text()
    assert "gate" in page.locator("#tools").inner_text()

    # a form without this session's CSRF token is refused, even with the session's cookie
    cookie = next(c for c in page.context.cookies() if c["name"] == "ae_dashboard")
    forged = urllib.request.Request(f"{dashboard}/tasks/{task_id}/decide", method="POST",
                                    data=b"node=publish&decision=approve&csrf=forged",
                                    headers={"Cookie": f"ae_dashboard={cookie['value']}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        DIRECT.open(forged, timeout=10)
    assert refused.value.code == 403

    page.click('form.decide[data-node="publish"] button.approve')
    page.wait_for_selector("#task-status.s-succeeded", timeout=60_000)
    assert "approved node 'publish' as dashboard:alice" in page.locator(".notice").inner_text()
    history = json.loads(engine.agentctl("task", "history", task_id, "--json").stdout)
    deciders = {e["data"]["node"]: e["data"]["decided_by"] for e in history if e["type"] == "node.approved"}
    assert deciders == {"gate": "olga", "publish": "dashboard:alice"}
    assert page.locator('#graph .node[data-status="succeeded"]').count() == 5
    shoot(page, "approved", tmp_path)

    # the task list: filtered to this tenant, the task is there with its status; filtered to another, not
    open_until(page, f"{dashboard}/?tenant={tenant}&status=succeeded",
               lambda: page.locator(f'#tasks a[href="/tasks/{task_id}"]').count() == 1)
    assert "succeeded" in page.locator("#tasks").inner_text() and "dashboard" in page.locator("#tasks").inner_text()
    shoot(page, "tasks", tmp_path)
    page.goto(f"{dashboard}/?tenant={tenant}x")
    assert page.locator(f'a[href="/tasks/{task_id}"]').count() == 0 and "No tasks match." in page.content()
    page.goto(f"{dashboard}/?since=yesterday")
    assert "cannot list tasks" in page.locator(".notice.error").inner_text()  # the telemetry's reason, shown

    # cost by tenant, model and day, with its chart
    page.goto(f"{dashboard}/cost")
    assert page.locator("#cost-chart rect.bar").count() >= 1
    assert tenant in page.locator("#by-tenant").inner_text()
    assert "mock" in page.locator("#by-model").inner_text()
    shoot(page, "cost", tmp_path)
    page.close()


def test_a_viewer_reads_but_cannot_decide(engine: Any, tenant: str, dashboard: str, browser: Any) -> None:
    task_id = submit(engine, tenant)
    engine.wait_for_status(task_id, "waiting")
    page = browser.new_page()
    page.goto(f"{dashboard}/login?next=/tasks/{task_id}")
    page.fill("input[name=token]", VIEWER_TOKEN)
    page.click("form.login button")
    page.wait_for_url(f"{dashboard}/tasks/{task_id}")
    assert "Your role may not decide" in page.locator("#approvals").inner_text()
    assert page.locator("form.decide").count() == 0
    page.close()
    # nobody logged in: no page, and a decision is refused outright
    with pytest.raises(urllib.error.HTTPError) as refused:
        DIRECT.open(urllib.request.Request(f"{dashboard}/tasks/{task_id}/decide", method="POST",
                                           data=b"node=gate&decision=approve"), timeout=10)
    assert refused.value.code == 401
    assert engine.agentctl("reject", task_id, "gate", "--reason", "test over").returncode == 0




def test_a_tasks_large_output_is_listed_on_its_page_shown_and_downloaded_exact(
        engine: Any, tenant: str, dashboard: str, browser: Any, tmp_path: Path, word: str) -> None:
    """A tool reads a 1 MiB file (stored as an artifact, tests/test_e2e_artifacts.py): the task page lists it,
    its page shows the start of it as text (markup in it escaped), and the download is its exact bytes. Only
    a logged-in person gets it, and only through a task whose events refer to it."""
    assert engine.agentctl("tenant", "declare", tenant).returncode == 0  # its bucket open to the services
    assert engine.agentctl("workflow", "push", "tests/workflows/artifacts", "--tenant", tenant).returncode == 0
    name = f"log-{word}.txt"
    content = b"".join(f"line-{i:07d} <b>the engine</b> recorded one more step\n".encode() for i in range(22_000))
    (engine.workspace / name).write_bytes(content)
    sub = engine.agentctl("submit", "artifacts", "--tenant", tenant, "--input", json.dumps({"file": name}))
    assert sub.returncode == 0, sub.stderr
    task_id, ref = sub.stdout.strip(), artifact_id(content)
    engine.wait_for_status(task_id, "succeeded")
    view = f"{dashboard}/tasks/{task_id}/artifacts/{ref}"

    anonymous = DIRECT.open(f"{view}/download", timeout=10)  # nobody logged in: sent to log in, no bytes
    assert "/login?next=" in anonymous.url and b"line-0000000" not in anonymous.read()

    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page.goto(view)
    assert "/login" in page.url
    page.fill("input[name=token]", VIEWER_TOKEN)  # reading is a viewer's right
    page.click("form.login button")
    page.wait_for_selector("#artifact-text")
    shown = page.locator("#artifact-text")
    assert shown.inner_text().startswith("line-0000000 <b>the engine</b> recorded one more step\nline-0000001")
    assert shown.locator("b").count() == 0  # the file's markup is text here, never HTML
    assert f"Showing the first 65,536 of {len(content):,} bytes" in page.locator(".notice").inner_text()

    page.goto(f"{dashboard}/tasks/{task_id}")
    row = page.locator(f'#artifacts tr[data-artifact="{ref}"]')
    assert row.count() == 1
    cells = row.locator("td").all_inner_texts()
    assert cells[:4] == ["read", "read.content", str(len(content)), "text/plain; charset=utf-8"], cells
    assert page.locator("#artifacts tr[data-artifact]").count() == 1  # read twice, one artifact
    shoot(page, "artifacts", tmp_path)
    with page.expect_download() as downloading:
        row.locator("a.download").click()
    download = downloading.value
    assert download.suggested_filename == "read.content"
    assert Path(download.path()).read_bytes() == content
    raw = page.request.get(f"{view}/download")
    assert raw.status == 200 and raw.body() == content
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.headers["content-disposition"].startswith("attachment;")

    # the same id through a task whose events do not refer to it (same tenant, same bucket): refused, unread
    other = submit(engine, tenant)
    engine.wait_for_status(other, "waiting")
    stray = page.request.get(f"{dashboard}/tasks/{other}/artifacts/{ref}/download")
    assert stray.status == 404 and f"no event of task {other} refers to artifact {ref}" in stray.text()
    assert page.request.get(f"{dashboard}/tasks/{task_id}/artifacts/sha256:abc").status == 404
    page.close()
    assert engine.agentctl("reject", other, "gate", "--reason", "test over").returncode == 0


def test_agentctl_up_starts_the_dashboard_and_ps_says_where(engine: Any) -> None:
    rows = json.loads(engine.agentctl("ps", "--json").stdout)
    row = next(r for r in rows if r["name"] == "dashboard")
    assert row["status"] == "running" and row["ready"] == "ready"
    page = DIRECT.open(f"{row['url']}login", timeout=10).read().decode()
    assert 'name="token"' in page  # its operators file: $AE_HOME/dashboard-operators, made by `up`
    line = (engine.home / "dashboard-operators").read_text().splitlines()[-1].split()
    assert line[0] == "admin" and len(line[1]) >= 16 and line[2] == "operator"
