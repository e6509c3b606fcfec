"""The dashboard's logins: the operators file, signed sessions, CSRF tokens."""

from __future__ import annotations

import pytest

from agent_engine.dashboard.auth import SESSION_S, Sessions, login, parse_operators

TOKEN = "a" * 20


def test_the_operators_file_names_people_tokens_and_roles() -> None:
    ops = parse_operators(f"# who may log in\nalice {TOKEN}\n\nvictor {'v' * 20} viewer  # reads only\n")
    assert {n: o.role for n, o in ops.items()} == {"alice": "operator", "victor": "viewer"}
    assert login(ops, TOKEN) == ops["alice"] and login(ops, "b" * 20) is None and login(ops, "") is None


@pytest.mark.parametrize(("text", "problem"), [
    ("alice", "line 1: expected 'NAME TOKEN [ROLE] [tenants=LIST]'"),
    ("al.ice " + TOKEN, "name 'al.ice' must be"),
    ("alice short", "shorter than 16"),
    (f"alice {TOKEN} admin", "role 'admin' is not one of viewer, operator"),
    (f"alice {TOKEN}\nalice {'c' * 20}", "line 2: 'alice' is listed twice"),
    (f"alice {TOKEN}\nbob {TOKEN}", "line 2: the token of 'bob' is already someone else's"),
])
def test_a_bad_line_is_named(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        parse_operators(text)


def test_a_session_holds_until_it_expires_and_cannot_be_forged() -> None:
    sessions = Sessions(b"k" * 32)
    cookie = sessions.issue("alice", now=1000.0)
    assert sessions.name_of(cookie, 1000.0 + SESSION_S - 1) == "alice"
    assert sessions.name_of(cookie, 1000.0 + SESSION_S) is None  # expired
    assert Sessions(b"x" * 32).name_of(cookie, 1000.0) is None  # another dashboard's key
    _, signature = cookie.split(".")
    forged = sessions.issue("mallory", 1000.0).split(".")[0] + "." + signature
    assert sessions.name_of(forged, 1000.0) is None
    assert sessions.name_of(None, 0) is None and sessions.name_of("junk", 0) is None


def test_a_csrf_token_belongs_to_its_session() -> None:
    sessions = Sessions(b"k" * 32)
    mine, theirs = sessions.issue("alice", 0), sessions.issue("bob", 0)
    assert sessions.csrf_ok(mine, sessions.csrf(mine))
    assert not sessions.csrf_ok(mine, sessions.csrf(theirs))
    assert not sessions.csrf_ok(mine, "") and not sessions.csrf_ok(None, sessions.csrf(mine))
