"""Liveness and readiness over HTTP, on the port AE_HEALTH_PORT names (none when unset).

    GET /livez   200 while the process's event loop answers.
    GET /metrics Prometheus metrics in the text exposition format (metrics.py).
    GET /readyz  200 when the service takes work and every readiness check passes (connected to NATS, its
                 consumer fetching, PostgreSQL where the service needs it); 503 with a JSON body naming each
                 check that fails, before the service takes work (`starting`), and while it drains.

Checks are registered on the process's `Health` (`health.PROCESS`) by the parts that know: the bus registers
its connection, each consume loop its consumer, the router its store. One registry per process, like a
metrics registry, so the bus need not be handed a health object through every constructor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable

import psycopg

from agent_engine.runtime import metrics

log = logging.getLogger(__name__)

PORT_ENV = "AE_HEALTH_PORT"
HOST_ENV = "AE_HEALTH_HOST"
Check = Callable[[], Awaitable[str | None]]
"""A readiness check: None when ready, else what is wrong (one line, no secret)."""
READ_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 8192


class Health:
    def __init__(self) -> None:
        self.checks: dict[str, Check] = {}
        self.serving = False
        """Set by the service once it takes work (its consumer bound, its subscriptions made): before that the
        process is `starting`, whatever the checks registered so far say."""
        self.draining = False

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def remove(self, name: str) -> None:
        self.checks.pop(name, None)

    async def problems(self) -> dict[str, str]:
        """Each failing check by name with what is wrong; empty when ready."""
        if self.draining:
            return {"process": "draining after SIGTERM"}
        if not self.serving:
            return {"process": "starting"}
        names = list(self.checks)
        results = await asyncio.gather(*(self._run(self.checks[n]) for n in names))
        return {name: problem for name, problem in zip(names, results, strict=True) if problem}

    @staticmethod
    async def _run(check: Check) -> str | None:
        try:
            return await asyncio.wait_for(check(), timeout=3.0)
        except TimeoutError:
            return "check timed out after 3s"
        except Exception as exc:  # noqa: BLE001  a broken check reports itself, never the endpoint
            return f"check failed: {type(exc).__name__}: {exc}"[:300]


PROCESS = Health()
"""This process's registry: what /readyz asks."""


def port_from_env() -> int | None:
    raw = os.environ.get(PORT_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SystemExit(f"{PORT_ENV}={raw!r} must be a TCP port number from 1 to 65535 (or unset: no health port)")
    return int(raw)


async def serve(health: Health, port: int, host: str | None = None) -> asyncio.Server:
    """Start answering /livez and /readyz on host:port (AE_HEALTH_HOST, default every interface)."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await _answer(health, reader)
            writer.write(_response(status, body))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that went away or sent nothing useful gets nothing
        finally:
            writer.close()

    host = host if host is not None else (os.environ.get(HOST_ENV) or "0.0.0.0")  # probes come from outside
    try:
        return await asyncio.start_server(on_connection, host, port, limit=MAX_REQUEST_BYTES)
    except OSError as exc:
        raise SystemExit(f"{PORT_ENV}={port}: cannot listen on {host}:{port}: {exc.strerror}") from None


async def _answer(health: Health, reader: asyncio.StreamReader) -> tuple[int, dict[str, object] | bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
    method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
    path = rest.split(" ", 1)[0].split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return 405, {"error": f"method {method} not allowed; use GET"}
    if path == "/livez":
        return 200, {"status": "alive", "pid": os.getpid()}
    if path == "/readyz":  # the pid, so a caller that started the process can tell it from another on the port
        problems = await health.problems()
        if problems:
            return 503, {"status": "not ready", "failing": problems, "pid": os.getpid()}
        return 200, {"status": "ready", "pid": os.getpid()}
    if path == "/metrics":
        return 200, await metrics.exposition()
    return 404, {"error": f"no such path {path[:100]!r}; try /livez, /readyz or /metrics"}


REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def _response(status: int, body: dict[str, object] | bytes) -> bytes:
    """JSON for the probes; bytes as they are (the metrics text)."""
    data, kind = (body, metrics.CONTENT_TYPE) if isinstance(body, bytes) else (json.dumps(body).encode() + b"\n",
                                                                              "application/json")
    head = (f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
    return head.encode() + data


class Cached:
    """A check that really asks at most every `every_s` seconds, one question at a time (one for a remote server:
    probes from each kubelet, or from anyone who can reach the port, must not open a connection each, nor pile
    up behind a server that does not answer)."""

    def __init__(self, check: Check, every_s: float = 5.0) -> None:
        self.check, self.every_s = check, every_s
        self.at = -math.inf
        self.said: str | None = None
        self.asking: asyncio.Future[str | None] | None = None

    async def __call__(self) -> str | None:
        if self.asking is None and time.monotonic() - self.at > self.every_s:
            asking = self.asking = asyncio.ensure_future(self.check())
            asking.add_done_callback(self._keep)
        if self.asking is not None:
            return await asyncio.shield(self.asking)
        return self.said

    def _keep(self, task: asyncio.Future[str | None]) -> None:
        if task.cancelled():
            self.said = "check cancelled"
        elif (failure := task.exception()) is not None:
            self.said = f"check failed: {type(failure).__name__}: {failure}"[:300]
        else:
            self.said = task.result()
        self.at, self.asking = time.monotonic(), None


def cached(check: Check, every_s: float = 5.0) -> Check:
    return Cached(check, every_s)


def postgres(url: str) -> Check:
    """A readiness check: PostgreSQL at `url` answers a query (asked at most every 5 s). The problem names the
    error's first line only, which carries no password."""

    def ping() -> None:
        with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
            conn.execute("SET statement_timeout = 2000")
            conn.execute("SELECT 1")

    async def check() -> str | None:
        try:
            await asyncio.to_thread(ping)
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            return f"PostgreSQL does not answer: {first}"
        return None

    return cached(check)
