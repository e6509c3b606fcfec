"""Which recorded process is still the one `agentctl up` started: exact whatever the wall clock did since (a step
of the clock once made `down` pass over live services, leaving whole stacks running), and a reused pid is not it."""

from __future__ import annotations

import os
import subprocess
import sys

from agent_engine.cli.stack import alive
from agent_engine.runtime.processes import start_mark


def test_a_recorded_process_is_alive_even_when_the_clock_moved_since_it_started() -> None:
    me = os.getpid()
    assert alive({"pid": me, "started": 12.0, "mark": start_mark(me)})  # a start time hours off, as after a step


def test_another_process_under_the_recorded_pid_is_not_the_one_started() -> None:
    me = os.getpid()
    mark = start_mark(me)
    assert mark is not None
    assert not alive({"pid": me, "started": 12.0, "mark": mark.rsplit(":", 1)[0] + ":1"})


def test_a_process_that_has_exited_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    mark = start_mark(child.pid)
    child.wait()
    assert not alive({"pid": child.pid, "mark": mark})
