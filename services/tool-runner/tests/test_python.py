"""The python tool: real child processes hitting their limits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_engine.tool_runner.config import ToolConfig
from agent_engine.tool_runner.tools import REGISTRY, Context, ToolError
from agent_engine.tool_runner.tools.python import netns_works, remove_stale_run_dirs, run_python


def ctx_for(time_limit_s: float = 30.0, **limits: Any) -> Context:
    return Context(ToolConfig(workspace=Path(".").resolve(), **limits), time_limit_s)


def run(code: str, **args: Any) -> dict[str, Any]:
    limits = args.pop("limits", {})
    out = run_python({"code": code, **args}, ctx_for(**limits))
    REGISTRY["python"].check_result(out)
    return out


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections, to prove the snippet cannot reach it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_a_normal_snippet_returns_its_output_and_result() -> None:
    out = run("import sys\nprint('sum', sum(data['xs']))\nprint('note', file=sys.stderr)\n"
              "result = {'total': sum(data['xs']), 'n': len(data['xs'])}", data={"xs": [1, 2, 3]})
    assert (out["exit_code"], out["signal"], out["timed_out"]) == (0, None, False)
    assert (out["stdout"], out["stderr"]) == ("sum 6\n", "note\n")
    assert out["result"] == {"total": 6, "n": 3}
    assert out["limits"]["memory_mb"] == 256


def test_without_a_result_variable_there_is_no_result() -> None:
    out = run("print('just output')")
    assert "result" not in out and out["stdout"] == "just output\n"


def test_a_result_that_is_not_json_is_reported() -> None:
    out = run("result = {1, 2}")
    assert out["exit_code"] == 0 and "result" not in out
    assert out["result_error"] == "`result` is not JSON: Object of type set is not JSON serializable"


def test_an_exception_gives_its_traceback_and_exit_code_1() -> None:
    out = run("def f():\n    raise ValueError('bad value')\nf()")
    assert out["exit_code"] == 1
    assert 'File "snippet.py", line 2, in f' in out["stderr"]
    assert out["stderr"].rstrip().endswith("ValueError: bad value")


def test_sys_exit_sets_the_exit_code_and_a_result_set_before_still_counts() -> None:
    out = run("result = 'partial'\nimport sys\nsys.exit(3)")
    assert (out["exit_code"], out["result"]) == (3, "partial")


def test_the_time_limit_kills_an_endless_loop() -> None:
    out = run("print('started', flush=True)\nwhile True:\n    pass", timeout_s=0.5)
    assert out["timed_out"] is True
    assert (out["exit_code"], out["signal"]) == (None, "SIGKILL")
    assert out["stdout"] == "started\n"  # what it printed before it was killed is kept
    assert out["duration_ms"] < 5000


def test_the_runs_time_budget_caps_the_snippets_timeout() -> None:
    out = run_python({"code": "import time\ntime.sleep(30)", "timeout_s": 30}, ctx_for(time_limit_s=1.5))
    assert out["timed_out"] is True and 0.8 < out["limits"]["time_s"] <= 1.0  # 1.5 s less the 0.5 s grace


def test_the_memory_limit_stops_a_big_allocation() -> None:
    out = run("block = bytearray(512 * 1024 * 1024)\nprint('allocated')", memory_mb=64)
    assert out["exit_code"] == 1 and out["stdout"] == ""
    assert out["stderr"].rstrip().endswith("MemoryError")


def test_asking_for_more_memory_than_allowed_is_refused() -> None:
    with pytest.raises(ToolError, match="memory_mb 4096 is over this tool-runner's limit of 256 MiB"):
        run("pass", memory_mb=4096)


def test_the_memory_and_cpu_limits_are_set_in_the_child() -> None:
    # CPU seconds: the wall-clock limit rounded up (SIGXCPU at the soft limit, SIGKILL one second later)
    out = run("import resource\nresult = [resource.getrlimit(resource.RLIMIT_AS), "
              "resource.getrlimit(resource.RLIMIT_CPU)]", timeout_s=1.5, memory_mb=64)
    assert out["result"] == [[64 * 1024 * 1024] * 2, [2, 3]]
    assert (out["limits"]["cpu_s"], out["limits"]["memory_mb"]) == (2, 64)


def test_a_network_attempt_fails(listener: int) -> None:
    out = run(f"import socket\nsocket.create_connection(('127.0.0.1', {listener}), timeout=2)\nprint('connected')")
    assert out["exit_code"] == 1 and "connected" not in out["stdout"]
    assert "PermissionError: network access is disabled in the python tool" in out["stderr"]


def test_urllib_fails_too(listener: int) -> None:
    out = run(f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{listener}/', timeout=2)")
    assert out["exit_code"] == 1 and "network access is disabled in the python tool" in out["stderr"]


BYPASS = ("import _socket\noriginal = _socket.socket.__mro__[1]\ns = original(2, 1)\ns.settimeout(2)\n"
          "s.connect(('127.0.0.1', {port}))\nprint('connected')")
"""Reaching the unguarded socket class: the socket guard alone is best effort."""


@pytest.mark.skipif(not netns_works(), reason="this machine cannot create a network namespace unprivileged")
def test_in_a_network_namespace_even_a_bypass_of_the_guard_finds_no_network(listener: int) -> None:
    out = run(BYPASS.format(port=listener))
    assert out["limits"]["network"] == "netns+socket-guard"
    assert out["exit_code"] == 1 and "connected" not in out["stdout"]
    assert "OSError: [Errno 101] Network is unreachable" in out["stderr"]


def test_the_socket_guard_alone_is_best_effort(listener: int) -> None:
    """AE_PYTHON_NETNS=off: documented as best effort, and this is why."""
    out = run(BYPASS.format(port=listener), limits={"python_netns": "off"})
    assert out["limits"]["network"] == "socket-guard"
    assert out["stdout"] == "connected\n"


def test_require_refuses_to_run_without_a_network_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent_engine.tool_runner.tools.python.netns_works", lambda: False)
    with pytest.raises(ToolError, match="AE_PYTHON_NETNS=require, but this machine cannot create a network "
                                        "namespace"):
        run("print('never')", limits={"python_netns": "require"})


def test_local_sockets_still_work_so_asyncio_runs() -> None:
    out = run("import asyncio\nasync def main():\n    return 42\nresult = asyncio.run(main())")
    assert (out["exit_code"], out["result"]) == (0, 42)


def test_stdin_is_closed() -> None:
    out = run("try:\n    input()\nexcept EOFError:\n    print('eof')")
    assert out["stdout"] == "eof\n"


def test_output_is_capped_and_flagged() -> None:
    out = run("import sys\nprint('x' * 100000)\nsys.stderr.write('e' * 10)", limits={"python_output_bytes": 1000})
    assert (len(out["stdout"]), out["stdout_truncated"]) == (1000, True)
    assert (out["stderr"], out["stderr_truncated"]) == ("e" * 10, False)
    assert out["exit_code"] == 0  # the rest was read and dropped, so the snippet never blocked


def test_each_run_gets_a_fresh_scratch_directory_that_is_removed(tmp_path: Path) -> None:
    first = run("import os\nopen('left.txt', 'w').write('x')\nresult = [os.getcwd(), sorted(os.listdir('.'))]")
    second = run("import os\nresult = [os.getcwd(), sorted(os.listdir('.'))]")
    assert first["result"][1] == ["left.txt"] and second["result"][1] == []
    assert first["result"][0] != second["result"][0]
    assert not Path(first["result"][0]).exists()


def test_the_environment_is_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_NATS_URL", "nats://secret-host:4222")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    out = run("import os, sys\nresult = [sorted(os.environ), sys.flags.isolated]")
    names, isolated = out["result"]
    assert "AE_NATS_URL" not in names and "PYTHONPATH" not in names
    assert isolated == 1


def test_no_time_left_is_a_retryable_refusal() -> None:
    with pytest.raises(ToolError, match="no time left to run the snippet") as info:
        run_python({"code": "pass"}, ctx_for(time_limit_s=0.2))
    assert info.value.retryable


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_a_snippet_dies_with_a_tool_runner_killed_mid_run(tmp_path: Path) -> None:
    pid_file = tmp_path / "snippet.pid"
    code = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)"
    host = subprocess.Popen([sys.executable, "-c", (
        "from pathlib import Path\n"
        "from agent_engine.tool_runner.tools import context\n"
        "from agent_engine.tool_runner.tools.python import run_python\n"
        f"run_python({{'code': {code!r}, 'timeout_s': 60}}, context(Path('.'), 120))\n")])
    try:
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        snippet = int(pid_file.read_text())
        assert _running(snippet)
    finally:
        host.kill()  # SIGKILL: no cleanup code of the host runs
        host.wait()
    deadline = time.monotonic() + 10
    while _running(snippet) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(snippet)
    left = list(Path(tempfile.gettempdir()).glob(f"ae-python-{host.pid}-*"))
    assert left  # the killed host could not clean up; the next tool-runner to start does
    remove_stale_run_dirs()
    assert not any(p.exists() for p in left)


def test_only_run_dirs_of_dead_processes_are_removed(tmp_path: Path) -> None:
    mine = tmp_path / f"ae-python-{os.getpid()}-abc"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"ae-python-{gone.pid}-def"
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits, and is not reaped until the end
    while _running(zombie.pid):
        time.sleep(0.02)
    unreaped = tmp_path / f"ae-python-{zombie.pid}-ghi"
    other = tmp_path / "ae-python-notapid-x"
    for path in (mine, dead, unreaped, other):
        (path / "scratch").mkdir(parents=True)
    assert remove_stale_run_dirs(tmp_path) == 2
    assert [p.exists() for p in (mine, dead, unreaped, other)] == [True, False, False, True]
    zombie.wait()
