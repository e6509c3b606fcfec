"""A whole engine for benchmarks and fault injection: NATS and PostgreSQL owned by this process
(so they can be killed and restarted on the same port and data), and the five services started
by agentctl's own Stack as separate OS processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import nats

from agent_engine.cli.client import request_envelope
from agent_engine.cli.stack import SERVICES, Stack
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.subjects import ROUTER_RPC
from agent_engine.runtime import embedded, workflows
from agent_engine.runtime.bus import MSG_ID, TASK_ID_HEADER, ensure_streams
from agent_engine.runtime.manifests import load
from agent_engine.runtime.processes import pid_alive

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = ("succeeded", "failed", "rejected", "cancelled")
EXAMPLE = ROOT / "examples" / "research-review"


class EngineClient:
    """What tests and benchmarks do to a running engine over NATS: push, submit, query, wait."""

    nats_url: str


    async def connect(self) -> Any:
        async def quiet(_: Exception) -> None:  # reconnects during a NATS restart are expected
            return None

        nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.3, error_cb=quiet)
        await ensure_streams(nc.jetstream())
        return nc

    async def push(self, nc: Any, tenant: str, directory: Path = EXAMPLE) -> str:
        loaded = load(directory)
        assert not loaded.errors and loaded.manifest is not None, loaded.errors
        await workflows.push(await workflows.bucket(nc.jetstream()), tenant, loaded.revision, loaded.manifest)
        return loaded.manifest.name

    async def submit(self, nc: Any, tenant: str, workflow: str, task_input: dict[str, Any]) -> str:
        envelope = request_envelope(tenant, workflow, task_input, None)
        await nc.jetstream().publish(f"ae.{tenant}.task.requested", envelope.to_bytes(),
                                     headers={MSG_ID: envelope.id, TASK_ID_HEADER: envelope.task_id})
        return envelope.task_id

    async def query(self, nc: Any, action: str, task_id: str) -> dict[str, Any]:
        msg = await nc.request(f"{ROUTER_RPC}.{action}", json.dumps({"task_id": task_id}).encode(), timeout=10)
        return dict(json.loads(msg.data))

    async def history(self, nc: Any, task_id: str) -> list[Envelope]:
        return [Envelope.model_validate(e) for e in (await self.query(nc, "task.history", task_id))["events"]]

    async def statuses(self, nc: Any, task_ids: list[str]) -> dict[str, str]:
        out = {}
        for task_id in task_ids:
            try:
                out[task_id] = (await self.query(nc, "task.show", task_id)).get("status", "unknown")
            except Exception:  # noqa: BLE001  router or NATS restarting: unknown for now
                out[task_id] = "unknown"
        return out

    async def run_to_end(self, tenant: str, task_input: dict[str, Any], directory: Path = EXAMPLE
                         ) -> tuple[str, list[Envelope]]:
        """Push a workflow, submit one task, wait for it to end: its status and stored history."""
        nc = await self.connect()
        try:
            workflow = await self.push(nc, tenant, directory)
            task_id = await self.submit(nc, tenant, workflow, task_input)
            status = await self.wait_terminal(nc, [task_id])
            return status[task_id], await self.history(nc, task_id)
        finally:
            await nc.close()

    async def show(self, nc: Any, task_id: str) -> dict[str, Any]:
        return await self.query(nc, "task.show", task_id)

    async def wait_terminal(self, nc: Any, task_ids: list[str], timeout: float = 90) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        done: dict[str, str] = {}
        while time.monotonic() < deadline:
            pending = [t for t in task_ids if t not in done]
            for task_id, status in (await self.statuses(nc, pending)).items():
                if status in TERMINAL:
                    done[task_id] = status
            if len(done) == len(task_ids):
                break
            await asyncio.sleep(0.5)
        return {t: done.get(t, "unfinished") for t in task_ids}


class Cluster(EngineClient):
    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.env = {"AE_ACK_WAIT_S": "5", "AE_HEARTBEAT_S": "1", "AE_PROVIDER": "mock", **env}
        self.nats: embedded.ServerProcess | None = None
        self.postgres: embedded.ServerProcess | None = None
        self.nats_port = embedded.free_port()
        self.pg_port = embedded.free_port()

    # --- servers ---

    def start(self) -> None:
        self.nats = embedded.start_nats(self.root / "nats", self.nats_port)
        self.postgres = embedded.start_postgres(self.root / "postgres", self.pg_port, durable=False)
        os.environ.update({**self.env, "AE_HOME": str(self.root / "home"), "AE_NATS_URL": self.nats.url,
                           "AE_POSTGRES_URL": self.postgres.url})
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
        self.nats = embedded.start_nats(self.root / "nats", self.nats_port)

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
