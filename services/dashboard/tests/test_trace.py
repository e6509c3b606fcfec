"""The task page's trace: the id its records carry, and the link AE_DASHBOARD_TRACE_URL makes of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_engine.dashboard.__main__ import check_trace_url, load_config
from agent_engine.dashboard.pages import trace
from agent_engine.dashboard.views import trace_id

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_the_trace_id_is_the_one_task_started_carries() -> None:
    history = [{"type": "router.input"},
               {"type": "task.started", "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"},
               # an approval's input: the router's span for that request, a trace of its own
               {"type": "router.input", "traceparent": f"00-{'1' * 32}-00f067aa0ba902b7-01"}]
    assert trace_id(history) == TRACE
    assert trace_id(history[:1]) is None  # not started yet
    assert trace_id([{"type": "task.started"}, history[2]]) is None  # started with tracing off
    assert trace_id([{"type": "task.started", "traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"}]) is None
    assert trace_id([{"type": "task.started", "traceparent": ["not", "text"]}]) is None
    forked = [{"type": "task.forked", "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}, history[2]]
    assert trace_id(forked) == TRACE, "a fork has no task.started: its own trace is the one task.forked names"


def test_the_page_shows_the_id_and_links_it_when_a_viewer_is_set() -> None:
    assert TRACE in trace(TRACE, None) and "href" not in trace(TRACE, None)
    linked = trace(TRACE, "http://jaeger:16686/trace/{trace_id}?uiEmbed={x}&a=<b>")
    assert f'href="http://jaeger:16686/trace/{TRACE}?uiEmbed={{x}}&amp;a=&lt;b&gt;"' in linked  # only {trace_id}
    assert 'rel="noopener noreferrer"' in linked
    assert "trace: none" in trace(None, "http://jaeger:16686/trace/{trace_id}")


@pytest.mark.parametrize(("value", "problem"), [
    ("jaeger:16686/trace/{trace_id}", "is not an http:// or https:// URL"),
    ("javascript:alert(1)//{trace_id}", "is not an http:// or https:// URL"),
    ("http://jaeger:16686/trace/", "has no {trace_id}"),
])
def test_a_trace_url_that_cannot_work_is_refused(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("{", r"\{").replace("}", r"\}")):
        check_trace_url(value)
    assert check_trace_url("") is None
    assert check_trace_url(" https://t.example/{trace_id} ") == "https://t.example/{trace_id}"


def test_the_start_refuses_open_read_beside_operators_limited_to_tenants(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    operators = tmp_path / "operators"
    operators.write_text(f"alice {'t' * 20} tenants=acme\nroot {'r' * 20} tenants=*\n")
    monkeypatch.setenv("AE_DASHBOARD_OPERATORS", str(operators))
    monkeypatch.delenv("AE_DASHBOARD_SECRET_FILE", raising=False)
    assert load_config().operators["alice"].tenants == frozenset({"acme"})
    monkeypatch.setenv("AE_DASHBOARD_OPEN_READ", "1")
    with pytest.raises(SystemExit, match="AE_DASHBOARD_OPEN_READ=1 shows every tenant's tasks to anyone, but "
                                         "AE_DASHBOARD_OPERATORS limits alice to some tenants"):
        load_config()
    monkeypatch.delenv("AE_DASHBOARD_OPEN_READ")
    monkeypatch.setenv("AE_DASHBOARD_TRACE_URL", "http://jaeger/")
    with pytest.raises(SystemExit, match="AE_DASHBOARD_TRACE_URL: 'http://jaeger/' has no"):
        load_config()
    monkeypatch.setenv("AE_DASHBOARD_TRACE_URL", "http://jaeger:16686/trace/{trace_id}")
    assert load_config().trace_url == "http://jaeger:16686/trace/{trace_id}"
