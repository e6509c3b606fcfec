"""A whole engine for benchmarks and fault injection: NATS and PostgreSQL owned by this process
(so they can be killed and restarted on the same port and data), and the five services started
by agentctl's own Stack as separate OS processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from agent_engine.cli.stack import SERVICES, Stack
from agent_engine.runtime import embedded
from agent_engine.runtime.keyring import CREDENTIAL_ENV, KEYRING_ENV, Keyring
from agent_engine.runtime.processes import pid_alive
from agent_engine.testkit import EngineClient

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "research-review"
READY_TIMEOUT_S = 600.0


class Cluster(EngineClient):
    example = EXAMPLE

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.env = {"AE_ACK_WAIT_S": "5", "AE_HEARTBEAT_S": "1", "AE_PROVIDER": "mock", **env}
        self.nats: embedded.ServerProcess | None = None
        self.postgres: embedded.ServerProcess | None = None
        self.nats_port = embedded.free_port()
        self.pg_port = embedded.free_port()
        self.keyring = Keyring(root / "credentials")
        """Authorization is on, as in production: each service with its own credential, this process admin."""

    # --- servers ---

    def start(self) -> None:
        self.nats = embedded.start_nats(self.root / "nats", self.nats_port, keyring=self.keyring)
        self.postgres = embedded.start_postgres(self.root / "postgres", self.pg_port, durable=False)
        os.environ.update({**self.env, "AE_HOME": str(self.root / "home"), "AE_NATS_URL": self.nats.url,
                           "AE_POSTGRES_URL": self.postgres.url, KEYRING_ENV: str(self.keyring.root),
                           CREDENTIAL_ENV: str(self.keyring.admin)})
        self.up()

    def up(self, attempts: int = 20) -> None:
        """Start whatever service is down; a service that dies at once (its server is restarting) is retried."""
        for attempt in range(attempts):
            try:
                Stack.load(self.root / "home").up(ROOT)
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)

    def stop_services(self) -> None:
        Stack.load(self.root / "home").down()

    def stop(self) -> None:
        Stack.load(self.root / "home").down()
        for server in (self.postgres, self.nats):
            if server is not None:
                server.stop()

    @property
    def nats_url(self) -> str:  # type: ignore[override]
        assert self.nats is not None
        return self.nats.url

    def pids(self) -> dict[str, int]:
        rows = Stack.load(self.root / "home").components()
        return {r["name"]: r["pid"] for r in rows if r["name"] in SERVICES and r["status"] == "running"}

    def ready(self, service: str) -> bool:
        """The service's /readyz says ready."""
        rows = Stack.load(self.root / "home").components()
        return any(r["name"] == service and r["ready"] == "ready" for r in rows)

    async def wait_ready(self, services: tuple[str, ...], timeout: float = READY_TIMEOUT_S) -> None:
        """Until every one of `services` says it is ready (Stack.up waits only so long, READY_WAIT_S)."""
        deadline = time.monotonic() + timeout
        for service in services:
            while not await asyncio.to_thread(self.ready, service):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{service} is not ready after {timeout:.0f} s")
                await asyncio.sleep(0.05)

    def kill(self, service: str) -> None:
        pid = self.pids().get(service)
        if pid:
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.01)

    def restart_nats(self) -> None:
        """kill -9 nats-server, then start it again on the same port and storage."""
        assert self.nats is not None
        os.kill(self.nats.pid, signal.SIGKILL)
        while pid_alive(self.nats.pid):
            time.sleep(0.01)
        self.nats = embedded.start_nats(self.root / "nats", self.nats_port, keyring=self.keyring)

    def restart_postgres(self) -> None:
        """Crash PostgreSQL (SIGQUIT: immediate shutdown, crash recovery on start) and start it again."""
        assert self.postgres is not None
        os.kill(self.postgres.pid, signal.SIGQUIT)
        while pid_alive(self.postgres.pid):
            time.sleep(0.01)
        if self.postgres.process is not None:
            # reap it: PostgreSQL takes an unreaped (zombie) postmaster's pid in its lock file as alive
            # and refuses to start ("lock file ... already exists")
            self.postgres.process.wait(timeout=10)
        self.postgres = embedded.start_postgres(self.root / "postgres", self.pg_port, durable=False)
