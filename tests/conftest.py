"""End-to-end fixtures: real nats-server and PostgreSQL (from their wheels, or AE_NATS_URL /
AE_POSTGRES_URL), and the five services as OS processes started by agentctl's own Stack."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent_engine.cli.stack import Stack
from agent_engine.runtime import embedded
from agent_engine.runtime.keyring import KEYRING_ENV, Keyring
from agent_engine.runtime.processes import pid_alive
from agent_engine.testkit import EngineClient

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "research-review"
PLANTED_KEY = "sk-ant-planted-0123456789abcdef-never-in-events"
"""A fake credential every e2e stack is started with: tests check it never leaks."""
AGENTCTL = str(Path(sys.executable).parent / "agentctl")
LIMITED_TENANT = "limited"
"""The one tenant with limits in the e2e stack: 2 running tasks, 3 queued (test_e2e_scheduling)."""


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory, keyring: Keyring) -> Iterator[dict[str, str]]:
    started = []
    urls = {"nats": os.environ.get("AE_NATS_URL", ""), "postgres": os.environ.get("AE_POSTGRES_URL", "")}
    root = tmp_path_factory.mktemp("servers")
    if not urls["nats"]:
        server = embedded.start_nats(root / "nats", keyring=keyring)
        started.append(server)
        urls["nats"] = server.url
    if not urls["postgres"]:
        server = embedded.start_postgres(root / "postgres", durable=False)
        started.append(server)
        urls["postgres"] = server.url
    yield urls
    for server in started:
        server.stop()


class Engine(EngineClient):
    """The running stack as a test sees it: restart or kill services, run agentctl; plus the client side."""

    example = EXAMPLE

    def __init__(self, home: Path, urls: dict[str, str], workspace: Path) -> None:
        self.home = home
        self.workspace = workspace
        self.env = {**os.environ, "AE_HOME": str(home), "AE_NATS_URL": urls["nats"],
                    "AE_POSTGRES_URL": urls["postgres"], "AE_ACK_WAIT_S": "3", "AE_MOCK_DELAY_S": "0.05",
                    "AE_PROVIDER": "mock", "ANTHROPIC_API_KEY": PLANTED_KEY, "AE_TOOL_WORKSPACE": str(workspace),
                    "AE_TENANT_LIMITS": f"{LIMITED_TENANT}=2:3", "AE_HEARTBEAT_S": "0.5",
                    "AE_AUDIT_CHECKPOINT_S": "1"}
        self.nats_url = urls["nats"]
        self.servers: list[embedded.ServerProcess | embedded.NatsCluster] = []
        """The NATS and PostgreSQL this stack owns (own_stack), to stop or restart; none when shared."""
        self.cluster: embedded.NatsCluster | None = None
        """The stack's NATS when it is a cluster of its own (own_stack(nats_nodes=3))."""

    def stack(self) -> Stack:
        return Stack.load(self.home)

    @contextmanager
    def _environment(self) -> Iterator[None]:
        """The stack's environment in this process while agentctl's Stack starts something."""
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def up(self) -> None:
        with self._environment():
            self.stack().up(ROOT)

    def replica(self, service: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
        """Another process of `service` beside the stack's own, started as the stack starts it (its credential,
        its secrets only) plus `env`; the caller stops it."""
        with self._environment():
            return self.stack().spawn(service, ROOT, log, env)

    def pids(self) -> dict[str, int]:
        return {row["name"]: row["pid"] for row in self.stack().components() if row["status"] == "running"}

    def kill(self, service: str) -> None:
        pid = self.pids()[service]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def terminate(self, service: str, timeout: float = 40) -> float:
        """SIGTERM, as Kubernetes stops a pod; waits until the process is gone and returns how long it took."""
        pid = self.pids()[service]
        began = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        while pid_alive(pid) and time.monotonic() - began < timeout:
            time.sleep(0.02)
        assert not pid_alive(pid), f"{service} still running {timeout}s after SIGTERM"
        return time.monotonic() - began

    def wait_for_status(self, task_id: str, status: str, tries: int = 100) -> dict[str, Any]:
        """Poll `agentctl task show --json` until the task has `status`; returns what it showed."""
        shown: dict[str, Any] = {}
        for _ in range(tries):
            shown = json.loads(self.agentctl("task", "show", task_id, "--json").stdout or "{}")
            if shown.get("status") == status:
                return shown
            time.sleep(0.2)
        raise AssertionError(f"task {task_id} never became {status}: {shown.get('status')}")

    def credential(self, tenant: str, user: str, role: str = "operator") -> str:
        """Issue a tenant credential (the server reloads at once); its file, for `agentctl --credential`."""
        return str(Keyring(Path(self.env[KEYRING_ENV])).issue(tenant, user, role))  # type: ignore[arg-type]

    def agentctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([AGENTCTL, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT)


@pytest.fixture(scope="session")
def engine(servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    # the tool-runner's workspace: a scratch copy of examples/ (which the approval tests list), so tools that
    # write (workspace_append) never touch the repository
    workspace = tmp_path_factory.mktemp("workspace")
    shutil.copytree(EXAMPLE.parent, workspace / "examples")
    eng = Engine(tmp_path_factory.mktemp("ae-home"), servers, workspace)
    eng.up()
    yield eng
    eng.stack().down()
    for log in (eng.home / "logs").glob("*.log"):  # keep service logs visible when a test failed
        print(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-15:]))


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def word() -> str:
    """A unique word of letters only, for a name that goes into a task's input (a file name): a run of digits
    there may read as a phone number, which guardrails' input gate redacts."""
    return uuid.uuid4().hex[:8].translate(str.maketrans("0123456789", "ghijklmnop"))


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory, keyring: Keyring) -> Iterator[Any]:
    """Makes stacks with their own NATS and PostgreSQL (so no other stack's runners take their dispatches):
    own_stack(env changes; None removes a variable) -> a running Engine, stopped at the end of the module that
    made it (a stack left idle still polls, beats and relays: twenty of them kept to the session's end slowed
    every later test).
    `nats_nodes=3` makes the NATS a cluster of three (Engine.cluster), AE_NATS_URL listing them all."""
    made: list[tuple[Engine, list[embedded.ServerProcess | embedded.NatsCluster]]] = []

    def make(nats_nodes: int = 1, **env: str | None) -> Engine:
        root = tmp_path_factory.mktemp("own-stack")
        nats = (embedded.start_nats_cluster(root / "nats", nats_nodes, keyring=keyring) if nats_nodes > 1
                else embedded.start_nats(root / "nats", keyring=keyring))
        servers = [nats, embedded.start_postgres(root / "postgres", durable=False)]
        workspace = root / "workspace"
        shutil.copytree(EXAMPLE.parent, workspace / "examples")
        eng = Engine(root / "home", {"nats": nats.url, "postgres": servers[1].url}, workspace)
        eng.cluster = nats if isinstance(nats, embedded.NatsCluster) else None
        for name, value in env.items():
            if value is None:
                eng.env.pop(name, None)
            else:
                eng.env[name] = value
        eng.servers = servers
        made.append((eng, servers))
        eng.up()
        return eng

    yield make
    for eng, servers in made:
        eng.stack().down()
        for log in (eng.home / "logs").glob("*.log"):
            print(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-15:]))
        for server in servers:
            server.stop()


@pytest.fixture
def live_engine(servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A stack whose agent-runner calls the real Anthropic API; skipped, loudly, without a key."""
    key = os.environ.get("ANTHROPIC_API_KEY", "")
    if not key or key == PLANTED_KEY:
        pytest.skip("LIVE API TEST SKIPPED: no ANTHROPIC_API_KEY in the environment; export one to run "
                    "research-review against the real Anthropic API")
    workspace = tmp_path_factory.mktemp("live-workspace")
    eng = Engine(tmp_path_factory.mktemp("ae-home-live"), servers, workspace)
    eng.env.pop("AE_PROVIDER", None)
    eng.env["ANTHROPIC_API_KEY"] = key
    eng.up()
    yield eng
    eng.stack().down()
