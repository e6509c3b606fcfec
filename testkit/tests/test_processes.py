"""What a run left behind: its own processes count, those of a process that ran before it do not."""

from __future__ import annotations

import subprocess
import sys
import time

from agent_engine.testkit.processes import left_running, running_now

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_process_started_since_is_named_until_it_is_stopped():
    before = running_now()
    child = subprocess.Popen(SLEEPER)
    try:
        left = left_running(before)
        assert len(left) == 1 and left[0].startswith(f"{child.pid} ") and "time.sleep(60)" in left[0]
    finally:
        child.kill()
        child.wait()
    assert left_running(before) == []


def test_a_new_child_of_an_earlier_process_is_not_the_runs():
    # an earlier process (say, the session's PostgreSQL) that starts a child of its own during the run
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\n"
                               "input()\n"
                               f"subprocess.Popen({SLEEPER!r})\n"
                               "print('started', flush=True)\n"
                               "time.sleep(60)\n"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        before = running_now()
        assert parent.stdin is not None and parent.stdout is not None
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 10
        while len(running_now() - before) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert running_now() - before, "the earlier process started its child"
        assert left_running(before) == []
    finally:
        import psutil

        for process in psutil.Process(parent.pid).children(recursive=True):
            process.kill()
        parent.kill()
        parent.wait()
