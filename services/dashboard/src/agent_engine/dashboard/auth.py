"""Who may use the dashboard: the operators file, signed session cookies and CSRF tokens. Pure: no I/O.

The deployment gives a file (AE_DASHBOARD_OPERATORS), one person a line: `NAME TOKEN [ROLE] [tenants=LIST]`, ROLE
`operator` (the default: may approve and reject) or `viewer` (reads only), LIST the tenants the person may see
(`acme,globex`, or `*` for every tenant; scope.py applies it). A file where no line names tenants reads as it did
before tenants could be named: everyone sees every tenant. Once one line names them, every line must (`*`
included), so a forgotten field never quietly means "all". A person logs in with the token; the session is
a cookie signed with the dashboard's secret (HMAC-SHA256), so the server keeps no session table. Every POST
carries a CSRF token derived from the session, so another site cannot make a logged-in browser approve.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Literal

from agent_engine.contracts.envelope import TENANT_PATTERN
from agent_engine.contracts.subjects import IDENTITY_PATTERN

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
SESSION_S = 12 * 3600
"""How long a login lasts."""
MIN_TOKEN = 16
"""A shorter token is refused: it could be guessed."""
_NAME = re.compile(IDENTITY_PATTERN)
_TENANT = re.compile(TENANT_PATTERN)
TENANTS_FIELD = "tenants="
EVERY_TENANT = "*"


@dataclass(frozen=True)
class Operator:
    name: str
    token: str
    role: Role = "operator"
    tenants: frozenset[str] | None = None
    """The tenants this person may see and decide for; None: every tenant (`tenants=*`, or an old file)."""


def parse_operators(text: str, source: str = "operators file") -> dict[str, Operator]:
    """The operators a file lists, by name; a bad line raises ValueError naming the line and what is wrong."""
    found: dict[str, Operator] = {}
    scoped: dict[str, bool] = {}  # name -> whether its line named tenants (all or none must)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{source} line {number}"
        if len(parts) < 2:
            raise ValueError(f"{where}: expected 'NAME TOKEN [ROLE] [tenants=LIST]', got {len(parts)} field(s)")
        name, token = parts[0], parts[1]
        role, named, tenants = _options(parts[2:], where)
        if not _NAME.match(name):
            raise ValueError(f"{where}: name '{name[:70]}' must be 1-64 letters, digits, '-' or '_'")
        if len(token) < MIN_TOKEN:
            raise ValueError(f"{where}: the token of '{name}' is shorter than {MIN_TOKEN} characters")
        if name in found:
            raise ValueError(f"{where}: '{name}' is listed twice")
        if any(hmac.compare_digest(o.token, token) for o in found.values()):
            raise ValueError(f"{where}: the token of '{name}' is already someone else's")
        if scoped and named != next(iter(scoped.values())):
            others = [n for n, s in scoped.items() if s != named][:3]
            said = "names tenants but the line of {} does not" if named else "names no tenants but the line of {} does"
            raise ValueError(f"{where}: '{name}' {said.format(', '.join(others))}; once one line says which "
                             "tenants (tenants=LIST, or tenants=* for all), every line must")
        scoped[name] = named
        found[name] = Operator(name, token, role, tenants)
    return found


def _options(fields: list[str], where: str) -> tuple[Role, bool, frozenset[str] | None]:
    """(role, whether the line names tenants, the tenants: None for `*`, every tenant) of a line's fields after
    the token."""
    role: Role = "operator"
    named, tenants, seen_role = False, None, False
    for item in fields:
        if item.startswith(TENANTS_FIELD):
            if named:
                raise ValueError(f"{where}: tenants= is given twice")
            named, tenants = True, _tenants(item[len(TENANTS_FIELD):], where)
        elif seen_role or named:
            raise ValueError(f"{where}: expected 'NAME TOKEN [ROLE] [tenants=LIST]'; "
                             f"'{item[:30]}' is not tenants=LIST")
        elif item in ROLES:
            role, seen_role = ("viewer" if item == "viewer" else "operator"), True
        else:
            raise ValueError(f"{where}: role '{item[:30]}' is not one of {', '.join(ROLES)}")
    return role, named, tenants


def _tenants(value: str, where: str) -> frozenset[str] | None:
    if value == EVERY_TENANT:
        return None
    names = value.split(",")
    for tenant in names:
        if not _TENANT.match(tenant):
            raise ValueError(f"{where}: tenants=LIST takes '*' or tenant names separated by ',' "
                             f"(each 1-64 letters, digits, '-' or '_'); '{tenant[:70]}' is not one")
    return frozenset(names)


def login(operators: dict[str, Operator], token: str) -> Operator | None:
    """The operator holding `token` (compared in constant time, every entry), or None."""
    match = None
    for operator in operators.values():
        if hmac.compare_digest(operator.token.encode(), token.encode()):
            match = operator
    return match


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Sessions:
    secret: bytes

    def _sign(self, purpose: str, payload: str) -> str:
        return _b64(hmac.new(self.secret, f"{purpose}:{payload}".encode(), hashlib.sha256).digest())

    def issue(self, name: str, now: float) -> str:
        """A cookie value naming `name` until now + SESSION_S."""
        payload = _b64(f"{name}|{int(now) + SESSION_S}".encode())
        return f"{payload}.{self._sign('session', payload)}"

    def name_of(self, cookie: str | None, now: float) -> str | None:
        """The name a cookie was issued to, when its signature holds and it has not expired; else None."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign("session", payload)):
            return None
        try:
            name, expires = _unb64(payload).decode().rsplit("|", 1)
            if int(expires) <= now:
                return None
        except ValueError:
            return None
        return name

    def csrf(self, cookie: str) -> str:
        """The CSRF token of a session: forms carry it, a POST without the one of its own cookie is refused."""
        return self._sign("csrf", cookie)

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        return bool(cookie and token) and hmac.compare_digest(self.csrf(cookie or ""), token or "")
