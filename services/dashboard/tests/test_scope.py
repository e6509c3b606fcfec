"""Operators limited to tenants: the file format (old files read as before) and the scope rule every page,
feed and POST applies on the server (app.py)."""

from __future__ import annotations

import pytest

from agent_engine.dashboard import pages, views
from agent_engine.dashboard.auth import Operator, parse_operators
from agent_engine.dashboard.scope import EVERY, Scope, list_tenants, merge_tasks, not_found, scope_of

A, B, C = "a" * 20, "b" * 20, "c" * 20


def test_an_old_file_without_tenants_lets_everyone_see_every_tenant() -> None:
    ops = parse_operators(f"alice {A}\nvictor {B} viewer\n")
    assert ops["alice"].tenants is None and ops["victor"].tenants is None
    assert scope_of(ops["alice"], open_read=False).sees("anyone")


def test_each_line_names_the_tenants_its_person_sees() -> None:
    ops = parse_operators(f"alice {A} operator tenants=acme,globex\nvictor {B} tenants=acme\n"
                          f"root {C} viewer tenants=*  # every tenant\n")
    assert ops["alice"] == Operator("alice", A, "operator", frozenset({"acme", "globex"}))
    assert ops["victor"].role == "operator" and ops["victor"].tenants == frozenset({"acme"})
    assert ops["root"].role == "viewer" and ops["root"].tenants is None
    alice = scope_of(ops["alice"], open_read=False)
    assert alice.sees("acme") and alice.sees("globex") and not alice.sees("initech")
    assert not alice.sees(None) and not alice.sees("")  # a task.show without a tenant is nobody's


@pytest.mark.parametrize(("text", "problem"), [
    # once one line names tenants, a line without them is an error, never a quiet "every tenant"
    (f"alice {A} tenants=acme\nbob {B} operator", "line 2: 'bob' names no tenants but the line of alice does"),
    (f"alice {A}\nbob {B} tenants=acme", "line 2: 'bob' names tenants but the line of alice does not"),
    (f"alice {A} tenants=", "tenants=LIST takes '\\*' or tenant names"),
    (f"alice {A} tenants=acme,", "'' is not one"),
    (f"alice {A} tenants=*,acme", "'\\*' is not one"),
    (f"alice {A} tenants=ac.me", "'ac.me' is not one"),
    (f"alice {A} tenants=acme tenants=b", "tenants= is given twice"),
    (f"alice {A} tenants=acme viewer", "'viewer' is not tenants=LIST"),
    (f"alice {A} viewer operator", "'operator' is not tenants=LIST"),
    (f"alice {A} admin tenants=acme", "role 'admin' is not one of viewer, operator"),
])
def test_a_bad_tenants_field_is_named(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_operators(text)


def test_nobody_logged_in_sees_every_tenant_only_when_reading_is_open() -> None:
    assert scope_of(None, open_read=True) == EVERY
    assert not scope_of(None, open_read=False).sees("acme")


def test_another_tenants_task_reads_as_one_that_does_not_exist() -> None:
    # the router's words for an id it has not got (router/queries.py), so the two cannot be told apart
    assert not_found("t-1") == "no task 't-1' in the router's store"


def test_the_task_list_asks_only_for_tenants_the_person_sees() -> None:
    some = Scope(frozenset({"globex", "acme"}))
    assert list_tenants(EVERY, "") is None and list_tenants(EVERY, "initech") is None  # one ask, as given
    assert list_tenants(some, "") == ["acme", "globex"]
    assert list_tenants(some, "acme") == ["acme"]
    assert list_tenants(some, "initech") == []  # another tenant named in the filter: nothing asked, nothing shown


def test_several_tenants_lists_merge_newest_first_and_cut() -> None:
    acme = [{"task_id": "a2", "started_at": "2026-01-02T00:00:00+00:00"},
            {"task_id": "a1", "started_at": "2026-01-01T00:00:00+00:00"}]
    globex = [{"task_id": "g3", "started_at": "2026-01-03T00:00:00+00:00"},
              {"task_id": "g0", "started_at": None}]  # not started yet: last, as telemetry orders it
    assert [t["task_id"] for t in merge_tasks([acme, globex], 10)] == ["g3", "a2", "a1", "g0"]
    assert [t["task_id"] for t in merge_tasks([acme, globex], 2)] == ["g3", "a2"]


def test_the_cost_page_of_some_tenants_shows_their_models_days_and_chart() -> None:
    """The ledger's `tenants` answer (their lines, their calls by model and day) makes the whole page, told apart
    by a line saying it is of their tenants only."""
    table = views.cost_table({"tenants": {"globex": {"calls": 2, "cost_usd": "0.5"},
                                          "acme": {"calls": 1, "cost_usd": "0.25"}},
                              "models": {"anthropic/claude-x": {"calls": 3, "cost_usd": "0.75"}},
                              "days": {"2026-01-02": {"calls": 3, "cost_usd": "0.75"}}})
    page = pages.cost_page(table, pages.bars_svg(*views.day_bars(table.days)), "", every_tenant=False)
    assert [(t, n, str(c)) for t, n, c in table.tenants] == [("acme", 1, "0.25"), ("globex", 2, "0.5")]
    for shown in ('id="by-model"', "<td>anthropic/claude-x</td>", 'id="by-day"', "<td>2026-01-02</td>",
                  'id="cost-chart"', 'id="cost-scope"'):
        assert shown in page
    assert 'id="cost-scope"' not in pages.cost_page(table, "", "", every_tenant=True)
