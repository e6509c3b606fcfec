"""The local stack: embedded NATS and PostgreSQL plus the five services and the credential authority, each
its own OS process.

State lives in AE_HOME (default ~/.agent-engine): stack.json (urls, pids), logs/, data dirs.
`up` is idempotent: it starts whatever part is not running and keeps ports stable, so services
that are still up reconnect to a restarted server.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from agent_engine.runtime import embedded
from agent_engine.runtime.health import HOST_ENV as HEALTH_HOST_ENV
from agent_engine.runtime.health import PORT_ENV as HEALTH_PORT_ENV
from agent_engine.runtime.keyring import CREDENTIAL_ENV, KEYRING_ENV, Keyring
from agent_engine.runtime.processes import pid_alive, start_mark, stop_pid
from agent_engine.runtime.service import CANCEL_S, grace_from_env
from agent_engine.runtime.settings import postgres_url_from_env

SERVICES = {
    "guardrails": "agent_engine.guardrails",
    "router": "agent_engine.router",
    "agent-runner": "agent_engine.agent_runner",
    "tool-runner": "agent_engine.tool_runner",
    "telemetry": "agent_engine.telemetry",
    "dashboard": "agent_engine.dashboard",
}
DASHBOARD_PORT_ENV = "AE_DASHBOARD_PORT"
"""The dashboard's web port; `up` picks a free one when unset and keeps it (`agentctl ps` shows its URL)."""
DASHBOARD_OPERATORS_ENV = "AE_DASHBOARD_OPERATORS"
"""Who may log in to the dashboard; `up` makes $AE_HOME/dashboard-operators (operator `admin`) when unset."""


COMPONENTS = {**SERVICES, "authority": "agent_engine.cli.authority"}
"""The processes `up` starts: the five services, and the credential authority when authorization is on
(it lets a tenant's admin manage its tenant's credentials over the bus; cli/authority.py)."""

MASTER_KEY_ENV = "AE_MASTER_KEY_FILE"
"""The router's master key (wraps the data keys of its store); `up` makes $AE_HOME/master.key when unset."""
READY_WAIT_S = 30.0
"""How long `up` waits for the processes it started to say they are ready."""
SECRETS = ("ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY_FILE", "OPENAI_API_KEY", "OPENAI_API_KEY_FILE")
"""Only the agent-runner gets provider credentials."""


def _start_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def alive(entry: dict[str, Any]) -> bool:
    """The recorded process is running, and is the one we started (not a reused pid after a reboot)."""
    pid = entry.get("pid")
    if not pid or not pid_alive(pid):
        return False
    mark = start_mark(pid)
    if entry.get("mark") and mark:  # exact, whatever the wall clock did since (a step of it once orphaned stacks)
        return bool(entry["mark"] == mark)
    if "started" not in entry:
        return True  # written before start times were recorded
    started, now = entry["started"], _start_time(pid)
    # create_time derives from the boot time, which clock adjustments move by whole seconds
    return started is not None and now is not None and abs(now - started) < 2.0


def home() -> Path:
    return Path(os.environ.get("AE_HOME", Path.home() / ".agent-engine")).expanduser()


@dataclass
class Stack:
    root: Path
    state: dict[str, Any]

    @classmethod
    def load(cls, root: Path | None = None) -> Stack:
        root = root or home()
        path = root / "stack.json"
        state = json.loads(path.read_text()) if path.exists() else {}
        return cls(root, state)

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "stack.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.root / "stack.json")

    @property
    def keyring(self) -> Keyring:
        """The credentials of this stack's NATS: AE_CREDENTIALS_DIR, else <AE_HOME>/credentials."""
        return Keyring(Path(os.environ.get(KEYRING_ENV) or self.root / "credentials"))

    @property
    def nats_url(self) -> str | None:
        return os.environ.get("AE_NATS_URL") or self.state.get("nats", {}).get("url")

    @property
    def postgres_url(self) -> str | None:
        return postgres_url_from_env() or self.state.get("postgres", {}).get("url")

    def components(self) -> list[dict[str, Any]]:
        rows = []
        for name in ("nats", "postgres"):
            entry = self.state.get(name, {})
            external = entry.get("external", False)
            pid = entry.get("pid")
            status = "external" if external else ("running" if alive(entry) else "stopped")
            rows.append({"name": name, "pid": None if external else pid, "status": status, "url": entry.get("url")})
        for name in COMPONENTS:
            entry = self.state.get("services", {}).get(name, {})
            if name not in SERVICES and not entry:
                continue
            pid = entry.get("pid")
            status = "running" if alive(entry) else "stopped"
            port = entry.get("health_port")
            rows.append({"name": name, "pid": pid, "status": status, "log": entry.get("log"), "health_port": port,
                         "ready": readiness(port, pid=pid) if status == "running" and port else None,
                         **({"url": f"http://127.0.0.1:{entry['web_port']}/"} if entry.get("web_port") else {})})
        return rows

    def up(self, workspace: Path, extra_env: dict[str, str] | None = None) -> list[str]:
        """Start every part that is not running; returns the names started."""
        started = []
        self.root.mkdir(parents=True, exist_ok=True)
        for name in ("nats", "postgres"):
            if self._ensure_server(name):
                started.append(name)
        services = self.state.setdefault("services", {})
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        keyring = self.keyring
        if keyring.admin.exists() and keyring.ensure_platform_created():
            keyring.apply()  # a keyring made by an older version: its servers learn the new credentials
        # a port the OS called free may be handed out again before the process it was meant for binds it (two
        # services once got the same health port): never give one port twice
        taken = {p for e in services.values() for p in (e.get("health_port"), e.get("web_port")) if p}

        def free_port() -> int:
            while (port := embedded.free_port()) in taken:
                pass
            taken.add(port)
            return port

        for name in COMPONENTS:
            if alive(services.get(name, {})):
                continue
            if name not in SERVICES and not keyring.service(name).exists():
                continue  # no authorization, no authority
            log = logs / f"{name}.log"
            port = services.get(name, {}).get("health_port") or free_port()
            env, web = extra_env, None
            if name == "dashboard":  # its web port, stable across restarts like the health port
                web = int(services.get(name, {}).get("web_port") or os.environ.get(DASHBOARD_PORT_ENV)
                          or free_port())
                env = {**(extra_env or {}), DASHBOARD_PORT_ENV: str(web)}
            proc = self.spawn(name, workspace, log, env, health_port=port)
            services[name] = {"pid": proc.pid, "log": str(log), "started": _start_time(proc.pid),
                              "mark": start_mark(proc.pid),
                              "health_port": port, **({"web_port": web} if web else {})}
            started.append(name)
        self.save()
        self._wait_ready([n for n in started if n in services], services)
        return started

    def spawn(self, name: str, workspace: Path, log: Path, extra_env: dict[str, str] | None = None, *,
              health_port: int | None = None) -> subprocess.Popen[bytes]:
        """Start one process of component `name` against this stack's servers, with its own credential and only
        the secrets it needs, serving health on `health_port` (a free port when not given). `up` records what it
        starts; another replica (say, a second router with its own AE_ROUTER_NAME in `extra_env`) is the
        caller's to stop."""
        env = {k: v for k, v in os.environ.items() if k != "AE_POSTGRES_URL_FILE"}  # resolved just below
        env = {**env, **(extra_env or {}), "AE_NATS_URL": self.nats_url or "",
               "AE_POSTGRES_URL": self.postgres_url or "",
               "AE_TOOL_WORKSPACE": os.environ.get("AE_TOOL_WORKSPACE", str(workspace))}
        keyring = self.keyring
        own_env = env if name == "agent-runner" else {k: v for k, v in env.items() if k not in SECRETS}
        own_env = {k: v for k, v in own_env.items() if k not in (KEYRING_ENV, MASTER_KEY_ENV)}
        if keyring.service(name).exists():  # else an external server without authorization
            own_env[CREDENTIAL_ENV] = str(keyring.service(name))
        if name == "authority":
            own_env[KEYRING_ENV] = str(keyring.root)
        if name == "router":  # the only service that seals and opens stored records
            own_env[MASTER_KEY_ENV] = env.get(MASTER_KEY_ENV) or str(_master_key_file(self.root / "master.key"))
        if name == "dashboard" and not env.get(DASHBOARD_OPERATORS_ENV):  # one operator, `admin`, for the local stack
            own_env[DASHBOARD_OPERATORS_ENV] = str(_dashboard_operators(self.root / "dashboard-operators"))
        own_env.update({HEALTH_PORT_ENV: str(health_port or embedded.free_port()), HEALTH_HOST_ENV: "127.0.0.1"})
        with open(log, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", COMPONENTS[name]], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=own_env, start_new_session=True)

    def _wait_ready(self, names: list[str], services: dict[str, Any], timeout: float = READY_WAIT_S) -> None:
        """Until each process started says it is ready, or exits (an error naming it, with its log's tail), or
        `timeout` passes (then `ps` shows what each is waiting for)."""
        waiting = set(names)
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            time.sleep(0.1)
            dead = [n for n in COMPONENTS if n in services and services[n].get("pid") and not alive(services[n])]
            if dead:
                tails = "\n".join(f"--- {n} ({services[n]['log']}):\n{_tail(Path(services[n]['log']))}" for n in dead)
                raise RuntimeError(f"service(s) exited right after start: {', '.join(dead)}\n{tails}")
            waiting = {n for n in waiting
                       if readiness(services[n]["health_port"], timeout=0.5, pid=services[n]["pid"]) != "ready"}

    def _ensure_server(self, name: str) -> bool:
        env_url = os.environ.get("AE_NATS_URL") if name == "nats" else postgres_url_from_env()
        if env_url:
            self.state[name] = {"url": env_url, "external": True}
            return False
        entry = self.state.get(name, {})
        if not entry.get("external") and alive(entry):
            return False
        port = entry.get("port") if not entry.get("external") else None
        data = self.root / name
        if name == "nats":
            server = embedded.start_nats(data, port, detach=True, keyring=self.keyring)
        else:
            server = embedded.start_postgres(data, port, detach=True)
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        self.state[name] = {"url": server.url, "pid": server.pid, "port": port, "log": str(server.log),
                            "started": _start_time(server.pid), "mark": start_mark(server.pid)}
        self.save()
        return True

    def down(self) -> list[str]:
        stopped = []
        for name, entry in self.state.get("services", {}).items():
            if alive(entry):  # SIGTERM: it drains within its grace period, then SIGKILL
                stop_pid(entry["pid"], timeout=grace_from_env() + CANCEL_S + 2)
                stopped.append(name)
            entry["pid"] = None
        for name, sig in (("postgres", 2), ("nats", 15)):
            entry = self.state.get(name, {})
            if not entry.get("external") and alive(entry):
                stop_pid(entry["pid"], timeout=15, sig=sig)
                stopped.append(name)
            if entry:
                entry["pid"] = None
        self.save()
        return stopped


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Straight to the local port, whatever http_proxy says."""


def readiness(port: int, timeout: float = 1.0, pid: int | None = None) -> str:
    """What the service's /readyz says: "ready", or what is not ready (or that it does not answer). With `pid`,
    "ready" only from that process: another may hold the port (taken between picking it and the start)."""
    try:
        with DIRECT.open(f"http://127.0.0.1:{port}/readyz", timeout=timeout) as reply:
            if reply.status != 200:
                return f"HTTP {reply.status}"
            answered = _pid_of(reply.read())
            if pid is not None and answered != pid:
                return f"health port {port} is answered by another process (pid {answered}), not pid {pid}"
            return "ready"
    except urllib.error.HTTPError as exc:
        try:
            failing = json.loads(exc.read()).get("failing", {})
        except ValueError:
            failing = {}
        return "; ".join(f"{k}: {v}" for k, v in failing.items()) or f"HTTP {exc.code}"
    except OSError as exc:
        return f"no answer on health port {port} ({getattr(exc, 'reason', exc)})"


def _pid_of(body: bytes) -> int | None:
    try:
        pid = json.loads(body).get("pid")
    except (ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _master_key_file(path: Path) -> Path:
    """A master key for the local stack (32 random bytes as hex, mode 0600), made once."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
    return path


def _dashboard_operators(path: Path) -> Path:
    """The local stack's dashboard operators file: `admin` with a random token (mode 0600), made once."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as out:
        out.write("# NAME TOKEN [ROLE] [tenants=LIST]: who may log in to the dashboard, and the tenants each sees "
                  "(acme,globex or *; docs/deploy.md)\n"
                  f"admin {secrets.token_urlsafe(24)} operator\n")
    return path
