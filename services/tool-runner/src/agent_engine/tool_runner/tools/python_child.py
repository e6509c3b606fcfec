"""Runs inside the snippet's own process (`python -I python_child.py RUN_DIR MEMORY_BYTES CPU_S PARENT_PID`), before
and after the snippet: set the limits, cut the socket API off, run RUN_DIR/snippet.py with `data` from
RUN_DIR/data.json, and write the variable `result`, if the snippet set one, to RUN_DIR/result.json.

Standard library only: it runs under `-I`, in a scratch directory, with a minimal environment.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

NO_NETWORK = "network access is disabled in the python tool"
PR_SET_PDEATHSIG = 1


def limit(memory_bytes: int, cpu_s: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The tool-runner kills the snippet at its wall-clock limit; should the tool-runner itself die, these
    # end it anyway: SIGKILL when the parent dies (Linux), and an alarm a little after the limit.
    signal.alarm(cpu_s + 2)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def block_network() -> None:
    """Refuse internet sockets and name lookups from Python code. Best effort: code that reaches the
    original classes (ctypes, a subprocess) gets past it; the network namespace, where used, does not."""
    import _socket
    import socket

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise PermissionError(NO_NETWORK)

    local = {getattr(socket, "AF_UNIX", -1)}
    raw = _socket.socket

    class GuardedSocket(raw):  # type: ignore[misc, valid-type]
        """socket.socket.__init__ calls `_socket.socket.__init__` by name, so this guards both."""

        def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None) -> None:
            if fileno is None and family not in local:  # wrapping an existing fd (socketpair) is fine
                raise PermissionError(NO_NETWORK)
            raw.__init__(self, family, type, proto, fileno)

    for module, name in ((_socket, "socket"), (_socket, "SocketType"), (socket, "SocketType")):
        setattr(module, name, GuardedSocket)
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo",
                 "create_connection", "create_server"):
        setattr(socket, name, refuse)
        if hasattr(_socket, name):
            setattr(_socket, name, refuse)


def save_result(namespace: dict[str, Any], run_dir: Path) -> None:
    if "result" not in namespace:
        return
    try:
        body = json.dumps({"result": namespace["result"]}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        body = json.dumps({"error": f"`result` is not JSON: {exc}"})
    (run_dir / "result.json").write_text(body)


def main() -> int:
    run_dir, memory_bytes, cpu_s, parent = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    source = (run_dir / "snippet.py").read_text()
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__,
                                 "data": json.loads((run_dir / "data.json").read_text())}
    sys.argv = ["snippet.py"]
    limit(memory_bytes, cpu_s)
    if os.getppid() != parent:  # the tool-runner died before the death signal was set
        return 137
    block_network()
    code = 0
    try:
        exec(compile(source, "snippet.py", "exec"), namespace)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    except BaseException as exc:  # noqa: BLE001  the snippet's own failure: report it as python would
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    save_result(namespace, run_dir)
    return code


if __name__ == "__main__":
    sys.exit(main())
