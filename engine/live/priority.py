"""Process and thread priorities for the live show (Linux nice values; no-ops elsewhere).

The audio callback is a real-time JACK thread, but it is Python, so it needs the GIL. A
show thread that holds the GIL and is preempted by another program keeps the callback
waiting: priority inversion, heard as an underrun. So the show's own threads (the asyncio
loop, the recorder) run at :data:`SHOW_NICENESS` where the system allows it (root,
CAP_SYS_NICE, or an RLIMIT_NICE such as the one distributions give the ``audio`` group),
and the model workers :data:`WORKER_NICENESS` steps below the show, so model work never
takes the CPU from the threads that keep time.

Nice values only rank threads within one scheduling group: where Linux groups processes by
session (``/proc/sys/kernel/sched_autogroup_enabled``, the default of many distributions),
the CPU is first shared between sessions and only then, by nice, within each. A worker in
the show's session makes the show's group a heavy one, and the scheduler then lets the
show's loop wait, on a busy machine, behind other sessions' programs for tens of
milliseconds at a time (measured: benchmarks/bench_osc_flood.py --trace). So each worker
starts a session (and so a group) of its own (:func:`lower_worker_priority`), and the show
asks for its group's nice to be :data:`SHOW_NICENESS` too (:func:`set_group_nice`), where
permitted.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

SHOW_NICENESS = -10
WORKER_NICENESS = 5
AUTOGROUP = Path("/proc/self/autogroup")
"""Linux: this process's scheduling group and its nice ("/autogroup-42 nice 0")."""


def thread_nice() -> int:
    """The calling thread's nice value (0 where there is none)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (OSError, AttributeError):  # pragma: no cover - not POSIX
        return 0


def set_thread_nice(value: int) -> int:
    """Set the calling thread's nice value (on Linux a per-thread value, inherited by the
    threads and processes it starts later) and return the value now in force: unchanged
    when the system does not permit it, which is logged once with the fix."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, value)
    except (OSError, AttributeError):
        log.info("could not set the show's priority to nice %d (it stays %d): give the user "
                 "CAP_SYS_NICE or an RLIMIT_NICE (e.g. the audio group's) for fewer audio "
                 "underruns on a busy machine", value, thread_nice())
    return thread_nice()


def group_nice() -> int | None:
    """The nice value of this process's scheduling group (None where there is none)."""
    try:
        return int(AUTOGROUP.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def set_group_nice(value: int) -> int | None:
    """Set the nice value of this process's scheduling group (its session's, where Linux
    groups by session) and return the value in force, None where there are no groups; a
    lower value than allowed (no CAP_SYS_NICE) leaves it as it was."""
    if group_nice() is None:
        return None
    try:
        AUTOGROUP.write_text(str(value))
    except OSError:
        pass
    return group_nice()


def lower_worker_priority() -> int:
    """In a model worker process: a session of its own (so a scheduling group apart from
    the show's, see the module's note; it no longer shares the terminal's hangup with the
    show, so :func:`engine.live.worker_process.as_worker` ends it with the show), then
    :data:`WORKER_NICENESS` below the show, whatever the nice value inherited from it (the
    show's -10 gives 5, a show run under ``nice 10`` gives 15). Returns the value in
    force."""
    try:
        os.setsid()
    except (OSError, AttributeError):  # pragma: no cover - a group leader, or not POSIX
        pass
    target = min(19, max(WORKER_NICENESS, thread_nice() + WORKER_NICENESS))
    try:
        os.setpriority(os.PRIO_PROCESS, 0, target)
    except (OSError, AttributeError):  # pragma: no cover - raising the value is allowed
        pass
    return thread_nice()
