"""Nice values of the show's threads and of its model workers (engine.live.priority).

Each case runs in a child process: a nice value lowered here could not be raised back
without privileges, and the test process must stay as it was."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not hasattr(os, "setpriority"), reason="POSIX only")


def run_child(code: str, *, nice: int = 0) -> list[int]:
    prefix = ["nice", "-n", str(nice)] if nice else []
    out = subprocess.run(prefix + [sys.executable, "-c", code], cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return [int(x) for x in out.split()]


def test_worker_runs_below_the_show_whatever_it_inherited():
    code = ("from engine.live.priority import lower_worker_priority as f, thread_nice as n;"
            "print(n(), f())")
    assert run_child(code) == [0, 5]
    assert run_child(code, nice=10) == [10, 15]  # a show started under `nice 10`
    assert run_child(code, nice=17) == [17, 19]  # capped at the lowest priority


def _may_raise_priority() -> bool:
    code = "import os; os.setpriority(os.PRIO_PROCESS, 0, -1)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_show_nice_is_per_thread_inherited_and_given_back():
    """set_thread_nice changes the calling thread only; a thread started afterwards
    inherits it; setting the old value back works. Without the privilege to go below 0
    the value stays and is reported unchanged (never an error)."""
    code = """
import threading
from engine.live.priority import SHOW_NICENESS, set_thread_nice, thread_nice
seen = []
before = threading.Thread(target=lambda: threading.Event().wait(0.3))
before.start()
got = set_thread_nice(SHOW_NICENESS)
t = threading.Thread(target=lambda: seen.append(thread_nice()))
t.start(); t.join()
import os
other = os.getpriority(os.PRIO_PROCESS, before.native_id)
before.join()
back = set_thread_nice(0)
print(got, seen[0], other, back)
"""
    got, child_thread, earlier_thread, back = run_child(code)
    expected = -10 if _may_raise_priority() else 0
    assert got == expected
    assert child_thread == expected  # inherited by threads started later
    assert earlier_thread == 0       # threads started before keep theirs
    assert back == 0


def test_a_worker_has_a_session_of_its_own_and_ends_with_the_show():
    """A model worker runs in a session (a scheduling group, where Linux groups by session)
    apart from the show's, and ends when the show's process ends, even killed outright."""
    code = """
import os
from engine.live.worker_process import WorkerProcess, as_worker
worker = WorkerProcess(as_worker, ()).start()
sid, pid = worker.submit(os.getsid, 0).result(60), worker.submit(os.getpid).result(60)
print(os.getsid(0), sid, pid, flush=True)
os.kill(os.getpid(), 9)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    show_session, worker_session, worker = (int(x) for x in done.stdout.split())
    assert worker_session != show_session
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, 9)
        pytest.fail("the worker outlived the show's process")


def test_group_nice_is_read_and_set_where_there_are_groups():
    code = """
from engine.live.priority import group_nice, set_group_nice
before = group_nice()
print(-99 if before is None else before, -99 if before is None else set_group_nice(3))
"""
    before, after = run_child(code)
    if before == -99:
        pytest.skip("no scheduling groups here (/proc/self/autogroup)")
    assert after == 3  # raising a value is always allowed
