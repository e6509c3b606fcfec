"""A service process and SIGTERM: it drains and exits 0 within AE_SHUTDOWN_GRACE_S; work that will not stop is
cut off at the end of the grace period (exit 1), even a thread stuck on a server that is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest

from agent_engine.runtime import embedded
from agent_engine.runtime.service import CANCEL_S

SERVICE = textwrap.dedent("""
    import asyncio, sys, threading, time
    from agent_engine.runtime import health, service

    async def main(stop):
        health.PROCESS.add("work", lambda: asyncio.sleep(0))
        health.PROCESS.serving = True
        print("serving", flush=True)
        if sys.argv[1] == "drains":
            await stop.wait()
            await asyncio.sleep(1.0)  # the batch in hand
        elif sys.argv[1] == "drains-beside-a-stuck-thread":  # e.g. a readiness check on a server that is gone
            asyncio.get_running_loop().run_in_executor(None, time.sleep, 3600)
            await stop.wait()
        elif sys.argv[1] == "refuses-its-settings":
            raise SystemExit("AE_SOMETHING='x' is not a number")
        elif sys.argv[1] == "ignores":
            while True:
                await asyncio.sleep(0.1)
        else:  # a thread blocked on a server that is gone: cancelling cannot reach it
            await asyncio.to_thread(time.sleep, 3600)

    service.run("demo", main)
""")


def _start(mode: str, **env: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVICE, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **env})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "serving"
    return proc


def _stop(proc: subprocess.Popen[str]) -> tuple[int, float, str]:
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, time.monotonic() - began, err


def test_a_service_that_drains_exits_0_and_says_so():
    code, _, log = _stop(_start("drains", AE_SHUTDOWN_GRACE_S="10"))
    assert code == 0, log
    assert "draining: no new work" in log and "demo INFO stopped" in log


def test_a_drained_service_exits_at_once_even_beside_a_thread_stuck_on_a_server_that_is_gone():
    code, took, log = _stop(_start("drains-beside-a-stuck-thread", AE_SHUTDOWN_GRACE_S="20"))
    assert code == 0, log
    assert took < 5, f"took {took:.1f}s: the stuck thread held the exit"


@pytest.mark.parametrize("mode", ["ignores", "stuck-thread"])
def test_work_that_outlives_the_grace_period_is_cut_off_and_the_process_exits_1(mode):
    code, took, log = _stop(_start(mode, AE_SHUTDOWN_GRACE_S="1"))
    assert code == 1, log
    assert "not drained within 1s (AE_SHUTDOWN_GRACE_S)" in log
    assert "still running" not in log, "the watchdog had to end it: cancelling did not"
    assert took < 1 + CANCEL_S + 1, f"took {took:.1f}s to exit with a 1 s grace period"


def test_a_service_that_refuses_its_settings_says_why_in_one_line_and_exits_1():
    proc = subprocess.run([sys.executable, "-c", SERVICE, "refuses-its-settings"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.rstrip().endswith("AE_SOMETHING='x' is not a number"), proc.stderr
    assert "Traceback" not in proc.stderr and "never retrieved" not in proc.stderr, proc.stderr


def test_the_health_port_answers_while_serving_and_readiness_drops_when_draining():
    port = embedded.free_port()
    proc = _start("drains", AE_HEALTH_PORT=str(port), AE_HEALTH_HOST="127.0.0.1", AE_SHUTDOWN_GRACE_S="10")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
            assert reply.status == 200
        proc.send_signal(signal.SIGTERM)
        proc.signalled = True  # type: ignore[attr-defined]
        status, body = _readiness_once_signalled(port)
        assert (status, json.loads(body)) == (503, {"status": "not ready", "failing": {
            "process": "draining after SIGTERM"}, "pid": proc.pid})  # the pid: which process holds the port
    finally:
        if proc.poll() is None and proc.returncode is None and not _signalled(proc):
            proc.kill()  # the test failed before its SIGTERM: leave no process behind
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def _signalled(proc: subprocess.Popen[str]) -> bool:
    return bool(getattr(proc, "signalled", False))


def _readiness_once_signalled(port: int) -> tuple[int, bytes]:
    """/readyz after the signal has arrived (within the second the batch in hand takes to finish)."""
    for _ in range(40):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
                answer = reply.status, reply.read()
        except urllib.error.HTTPError as refused:
            return refused.code, refused.read()
        time.sleep(0.02)
    return answer


def test_a_bad_grace_period_stops_the_service_with_a_message_naming_the_variable():
    proc = subprocess.run([sys.executable, "-c", SERVICE, "drains"], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "AE_SHUTDOWN_GRACE_S": "soon"})
    assert proc.returncode != 0 and "AE_SHUTDOWN_GRACE_S='soon' is not a number" in proc.stderr
