"""`python -m agent_engine.dashboard`: the web dashboard on AE_DASHBOARD_HOST:AE_DASHBOARD_PORT (default
127.0.0.1:8780), reading the engine over NATS with its own credential (docs/observability.md, "Dashboard").

Settings: AE_DASHBOARD_OPERATORS (the operators file: `NAME TOKEN [ROLE] [tenants=LIST]` a line; without it
nobody can log in or approve), AE_DASHBOARD_SECRET_FILE (the key sessions are signed with; without it a random one per
process, so a restart logs everyone out), AE_DASHBOARD_OPEN_READ=1 (pages that only read need no login),
AE_DASHBOARD_SECURE_COOKIE=1 (behind HTTPS), AE_DASHBOARD_TRACE_URL (a trace viewer's URL of one trace with
`{trace_id}` in it, such as http://jaeger:16686/trace/{trace_id}: the task page links the task's trace).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from agent_engine.dashboard.app import Config, build
from agent_engine.dashboard.auth import Operator, Sessions, parse_operators
from agent_engine.dashboard.link import Link
from agent_engine.dashboard.pages import TRACE_ID
from agent_engine.runtime import health, service
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.settings import Settings, env_int

log = logging.getLogger("dashboard")
PORT_ENV, HOST_ENV, OPERATORS_ENV, SECRET_ENV = ("AE_DASHBOARD_PORT", "AE_DASHBOARD_HOST", "AE_DASHBOARD_OPERATORS",
                                                 "AE_DASHBOARD_SECRET_FILE")
OPEN_READ_ENV, TRACE_URL_ENV = "AE_DASHBOARD_OPEN_READ", "AE_DASHBOARD_TRACE_URL"
DEFAULT_PORT = 8780


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the service kit's (runtime/service.py) own SIGTERM and drain."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def load_config() -> Config:
    """The settings, each checked: a bad operators file stops the start with the line that is wrong."""
    operators: dict[str, Operator] = {}
    path = os.environ.get(OPERATORS_ENV)
    if path:
        try:
            operators = parse_operators(Path(path).read_text(), path)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{OPERATORS_ENV}: {exc}") from None
    else:
        log.warning("%s is not set: nobody can log in, so nobody can approve or reject here", OPERATORS_ENV)
    secret_path = os.environ.get(SECRET_ENV)
    try:
        secret = Path(secret_path).read_bytes().strip() if secret_path else secrets.token_bytes(32)
    except OSError as exc:
        raise SystemExit(f"{SECRET_ENV}: {exc}") from None
    if len(secret) < 16:
        raise SystemExit(f"{SECRET_ENV}: the secret in {secret_path} is shorter than 16 bytes")
    open_read = os.environ.get(OPEN_READ_ENV) == "1"
    scoped = sorted(o.name for o in operators.values() if o.tenants is not None)
    if open_read and scoped:  # anyone could read what the file keeps from these people: say so, do not start
        raise SystemExit(f"{OPEN_READ_ENV}=1 shows every tenant's tasks to anyone, but {OPERATORS_ENV} limits "
                         f"{', '.join(scoped[:5])} to some tenants: turn one of them off")
    try:
        trace_url = check_trace_url(os.environ.get(TRACE_URL_ENV, ""))
    except ValueError as exc:
        raise SystemExit(f"{TRACE_URL_ENV}: {exc}") from None
    return Config(operators, Sessions(secret), open_read, os.environ.get("AE_DASHBOARD_SECURE_COOKIE") == "1",
                  trace_url)


def check_trace_url(value: str) -> str | None:
    """The trace link template, or None when unset; one that is no http(s) URL with `{trace_id}` in it raises
    ValueError saying so (a link that cannot work is a start-up error, not a dead link on every page)."""
    value = value.strip()
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"'{value[:80]}' is not an http:// or https:// URL")
    if TRACE_ID not in value:
        raise ValueError(f"'{value[:80]}' has no {TRACE_ID} (where the task's trace id goes), "
                         "as in http://jaeger:16686/trace/{trace_id}")
    return value


async def main(stop: asyncio.Event) -> None:
    config = load_config()
    port = env_int(PORT_ENV, DEFAULT_PORT)
    host = os.environ.get(HOST_ENV, "127.0.0.1")
    bus = await Bus.open(Settings().nats_url, "dashboard")
    try:
        link = Link(bus)
        server = _Server(uvicorn.Config(build(link, config), host=host, port=port, log_level="warning",
                                               lifespan="off", timeout_graceful_shutdown=2))
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if serving.done():
            raise SystemExit(f"the dashboard could not listen on {host}:{port}")
        health.PROCESS.serving = True
        log.info("dashboard on http://%s:%d/ (%d operator(s), %d limited to some tenants)", host, port,
                 len(config.operators), sum(o.tenants is not None for o in config.operators.values()))
        await asyncio.wait([serving, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        link.close()
        server.should_exit = True
        await serving
    finally:
        await bus.close()


if __name__ == "__main__":
    service.run("dashboard", main)
