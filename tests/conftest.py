"""End-to-end fixtures: real nats-server and PostgreSQL (from their wheels, or AE_NATS_URL /
AE_POSTGRES_URL), and the five services as OS processes started by agentctl's own Stack."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from agent_engine.cli.client import request_envelope
from agent_engine.cli.manifests import load
from agent_engine.cli.stack import Stack
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.subjects import ROUTER_RPC
from agent_engine.runtime import embedded, workflows
from agent_engine.runtime.bus import MSG_ID, TASK_ID_HEADER, ensure_streams

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "research-review"
AGENTCTL = str(Path(sys.executable).parent / "agentctl")


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    started = []
    urls = {"nats": os.environ.get("AE_NATS_URL", ""), "postgres": os.environ.get("AE_POSTGRES_URL", "")}
    root = tmp_path_factory.mktemp("servers")
    if not urls["nats"]:
        server = embedded.start_nats(root / "nats")
        started.append(server)
        urls["nats"] = server.url
    if not urls["postgres"]:
        server = embedded.start_postgres(root / "postgres", durable=False)
        started.append(server)
        urls["postgres"] = server.url
    yield urls
    for server in started:
        server.stop()


class Engine:
    """The running stack as a test sees it: restart or kill services, submit, wait, inspect."""

    def __init__(self, home: Path, urls: dict[str, str]) -> None:
        self.home = home
        self.env = {**os.environ, "AE_HOME": str(home), "AE_NATS_URL": urls["nats"],
                    "AE_POSTGRES_URL": urls["postgres"], "AE_ACK_WAIT_S": "3", "AE_MOCK_DELAY_S": "0.05",
                    "AE_PROVIDER": "mock"}
        self.urls = urls

    def stack(self) -> Stack:
        return Stack.load(self.home)

    def up(self) -> None:
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            self.stack().up(ROOT)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def pids(self) -> dict[str, int]:
        return {row["name"]: row["pid"] for row in self.stack().components() if row["status"] == "running"}

    def kill(self, service: str) -> None:
        pid = self.pids()[service]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while embedded.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def agentctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([AGENTCTL, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT)

    # --- async helpers, over a direct NATS connection ---

    async def connect(self) -> nats.aio.client.Client:
        nc = await nats.connect(self.urls["nats"])
        await ensure_streams(nc.jetstream())
        return nc

    async def push(self, nc: Any, tenant: str, directory: Path = EXAMPLE) -> str:
        loaded = load(directory)
        assert not loaded.errors, loaded.errors
        assert loaded.manifest is not None
        kv = await workflows.bucket(nc.jetstream())
        await workflows.push(kv, tenant, loaded.revision, loaded.manifest)
        return loaded.manifest.name

    async def submit(self, nc: Any, tenant: str, workflow: str, task_input: dict[str, Any]) -> str:
        envelope = request_envelope(tenant, workflow, task_input, None)
        await nc.jetstream().publish(f"ae.{tenant}.task.requested", envelope.to_bytes(),
                                     headers={MSG_ID: envelope.id, TASK_ID_HEADER: envelope.task_id})
        return envelope.task_id

    async def show(self, nc: Any, task_id: str) -> dict[str, Any]:
        msg = await nc.request(f"{ROUTER_RPC}.task.show", json.dumps({"task_id": task_id}).encode(), timeout=10)
        return json.loads(msg.data)

    async def history(self, nc: Any, task_id: str) -> list[Envelope]:
        msg = await nc.request(f"{ROUTER_RPC}.task.history", json.dumps({"task_id": task_id}).encode(), timeout=10)
        return [Envelope.model_validate(e) for e in json.loads(msg.data)["events"]]

    async def wait_terminal(self, nc: Any, task_ids: list[str], timeout: float = 90) -> dict[str, str]:
        """Poll the router until every task is terminal; returns task id -> status."""
        deadline = time.monotonic() + timeout
        status: dict[str, str] = {}
        while time.monotonic() < deadline:
            for task_id in task_ids:
                if status.get(task_id) in ("succeeded", "failed", "rejected"):
                    continue
                try:
                    status[task_id] = (await self.show(nc, task_id)).get("status", "unknown")
                except Exception:  # noqa: BLE001  router restarting: ask again
                    status[task_id] = "unknown"
            if all(s in ("succeeded", "failed", "rejected") for s in status.values()) and len(status) == len(task_ids):
                return status
            await asyncio.sleep(0.3)
        return status


@pytest.fixture(scope="session")
def engine(servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    eng = Engine(tmp_path_factory.mktemp("ae-home"), servers)
    eng.up()
    yield eng
    eng.stack().down()
    for log in (eng.home / "logs").glob("*.log"):  # keep service logs visible when a test failed
        print(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-15:]))


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"
