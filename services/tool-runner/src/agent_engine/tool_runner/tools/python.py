"""python: run a snippet of Python code in its own process with time, memory and CPU limits and no network.

The snippet runs under `sys.executable -I` (no PYTHON* variables, no user site-packages), with stdin
closed, a minimal environment, and a fresh scratch directory as its working directory (deleted after
the run). `data` (the `data` argument) is a variable the snippet can read; if it sets a variable
named `result`, that value (JSON) is returned as `result`.

What isolation this gives, and what it does not, is in docs/tools.md.
"""

from __future__ import annotations

import functools
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent_engine.runtime.processes import pid_alive
from agent_engine.tool_runner.tools.base import Context, ToolError, builtin

CHILD = Path(__file__).with_name("python_child.py")
UNSHARE = ("unshare", "--user", "--map-root-user", "--net")
"""A new user and network namespace: only a loopback interface that is down, so nothing is reachable."""
GRACE_S = 0.5
"""Kept back from the run's time budget to kill the snippet and collect its output."""


RUN_DIR_PREFIX = "ae-python-"


def remove_stale_run_dirs(root: Path | None = None) -> int:
    """Delete run directories left in the temp dir by tool-runners that were killed mid-run (the pid in
    the name is not running any more); returns how many. Run at start."""
    removed = 0
    for path in Path(root or tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*-*"):
        pid = path.name[len(RUN_DIR_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):  # a zombie (killed, not yet reaped) counts as gone
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


    return True


@functools.cache
def netns_works() -> bool:
    """Whether this machine lets an unprivileged process create a network namespace (checked once)."""
    if shutil.which(UNSHARE[0]) is None:
        return False
    try:
        done = subprocess.run([*UNSHARE, sys.executable, "-I", "-c", "pass"], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _isolation(ctx: Context) -> str:
    mode = ctx.config.python_netns
    if mode == "off":
        return "socket-guard"
    if netns_works():
        return "netns+socket-guard"
    if mode == "require":
        raise ToolError("AE_PYTHON_NETNS=require, but this machine cannot create a network namespace "
                        "without privileges (`unshare --user --net` failed); the snippet was not run")
    return "socket-guard"


def run_python(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    config = ctx.config
    memory_mb = args.get("memory_mb", config.python_memory_mb)
    if memory_mb > config.python_memory_mb:
        raise ToolError(f"memory_mb {memory_mb} is over this tool-runner's limit of {config.python_memory_mb} MiB "
                        "(AE_PYTHON_MEMORY_MB)")
    wall = min(float(args.get("timeout_s", config.python_timeout_s)), ctx.remaining_s() - GRACE_S)
    if wall <= 0:
        raise ToolError("no time left to run the snippet before the tool's time limit", retryable=True)
    cpu_s = max(1, math.ceil(wall))
    isolation = _isolation(ctx)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-"))
    try:
        scratch = run_dir / "scratch"
        scratch.mkdir()
        (run_dir / "snippet.py").write_text(args["code"])
        (run_dir / "data.json").write_text(json.dumps(args.get("data")))
        command = [sys.executable, "-I", str(CHILD), str(run_dir), str(memory_mb * 1024 * 1024), str(cpu_s),
                   str(os.getpid())]
        if isolation.startswith("netns"):
            command = [*UNSHARE, *command]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(scratch), "TMPDIR": str(scratch),
               "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
        started = time.monotonic()
        proc = subprocess.Popen(command, cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, timed_out = _collect(proc, config.python_output_bytes, started + wall)
        finally:
            _kill_group(proc)
            proc.wait()
        duration_ms = round((time.monotonic() - started) * 1000, 2)
        answer: dict[str, Any] = {
            "exit_code": proc.returncode if proc.returncode >= 0 else None,
            "signal": signal.Signals(-proc.returncode).name if proc.returncode < 0 else None,
            "timed_out": timed_out,
            "stdout": out["stdout"][0].decode("utf-8", errors="replace"),
            "stderr": out["stderr"][0].decode("utf-8", errors="replace"),
            "stdout_truncated": out["stdout"][1], "stderr_truncated": out["stderr"][1],
            "duration_ms": duration_ms,
            "limits": {"time_s": round(wall, 3), "cpu_s": cpu_s, "memory_mb": memory_mb, "network": isolation},
        }
        answer.update(_result(run_dir / "result.json"))
        return answer
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _collect(proc: subprocess.Popen[bytes], cap: int, deadline: float) -> tuple[dict[str, tuple[bytes, bool]], bool]:
    """Read stdout and stderr until both close and the process ends, keeping the first `cap` bytes of each
    (the rest is read and dropped, so a chatty snippet never blocks on a full pipe). True if time ran out."""
    kept: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
    over: dict[str, bool] = {"stdout": False, "stderr": False}
    names: dict[int, str] = {}
    with selectors.DefaultSelector() as selector:
        for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            assert stream is not None
            fd = stream.fileno()
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
            names[fd] = name
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _frozen(kept, over), True
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                name = names[key.fd]
                room = cap - len(kept[name])
                kept[name].extend(chunk[:max(room, 0)])
                over[name] = over[name] or len(chunk) > room
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0.001))
    except subprocess.TimeoutExpired:  # it closed its output but kept running
        return _frozen(kept, over), True
    return _frozen(kept, over), False


def _frozen(kept: dict[str, bytearray], over: dict[str, bool]) -> dict[str, tuple[bytes, bool]]:
    return {name: (bytes(data), over[name]) for name, data in kept.items()}


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the snippet and anything it started (its own session); the leader is not reaped yet, so the
    group id cannot have been reused."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _result(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"result_error": f"could not read the result: {exc}"}
    if "error" in saved:
        return {"result_error": str(saved["error"])}
    return {"result": saved["result"]}


PYTHON = builtin(
    "python", run_python,
    result_schema={
        "type": "object",
        "required": ["exit_code", "signal", "timed_out", "stdout", "stderr", "stdout_truncated", "stderr_truncated",
                     "duration_ms", "limits"],
        "properties": {
            "exit_code": {"type": ["integer", "null"]}, "signal": {"type": ["string", "null"]},
            "timed_out": {"type": "boolean"}, "stdout": {"type": "string"}, "stderr": {"type": "string"},
            "stdout_truncated": {"type": "boolean"}, "stderr_truncated": {"type": "boolean"},
            "duration_ms": {"type": "number", "minimum": 0}, "result": {}, "result_error": {"type": "string"},
            "limits": {"type": "object", "required": ["time_s", "cpu_s", "memory_mb", "network"]}}},
)
