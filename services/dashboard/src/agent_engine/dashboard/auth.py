"""Who may use the dashboard: the operators file, signed session cookies and CSRF tokens. Pure: no I/O.

The deployment gives a file (AE_DASHBOARD_OPERATORS), one person a line: `NAME TOKEN [ROLE]`, ROLE `operator`
(the default: may approve and reject) or `viewer` (reads only). A person logs in with the token; the session is
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

from agent_engine.contracts.subjects import IDENTITY_PATTERN

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
SESSION_S = 12 * 3600
"""How long a login lasts."""
MIN_TOKEN = 16
"""A shorter token is refused: it could be guessed."""
_NAME = re.compile(IDENTITY_PATTERN)


@dataclass(frozen=True)
class Operator:
    name: str
    token: str
    role: Role = "operator"


def parse_operators(text: str, source: str = "operators file") -> dict[str, Operator]:
    """The operators a file lists, by name; a bad line raises ValueError naming the line and what is wrong."""
    found: dict[str, Operator] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{source} line {number}"
        if len(parts) not in (2, 3):
            raise ValueError(f"{where}: expected 'NAME TOKEN [ROLE]', got {len(parts)} field(s)")
        name, token = parts[0], parts[1]
        role = parts[2] if len(parts) == 3 else "operator"
        if not _NAME.match(name):
            raise ValueError(f"{where}: name '{name[:70]}' must be 1-64 letters, digits, '-' or '_'")
        if len(token) < MIN_TOKEN:
            raise ValueError(f"{where}: the token of '{name}' is shorter than {MIN_TOKEN} characters")
        if role not in ROLES:
            raise ValueError(f"{where}: role '{role[:30]}' is not one of {', '.join(ROLES)}")
        if name in found:
            raise ValueError(f"{where}: '{name}' is listed twice")
        if any(hmac.compare_digest(o.token, token) for o in found.values()):
            raise ValueError(f"{where}: the token of '{name}' is already someone else's")
        found[name] = Operator(name, token, role)  # role: checked against ROLES above
    return found


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
