"""Process and thread priorities for the live show (Linux nice values; no-ops elsewhere).

The audio callback is a real-time JACK thread, but it is Python, so it needs the GIL. A
show thread that holds the GIL and is preempted by another program keeps the callback
waiting: priority inversion, heard as an underrun. So the show's own threads (the asyncio
loop, the recorder) run at :data:`SHOW_NICENESS` where the system allows it (root,
CAP_SYS_NICE, or an RLIMIT_NICE such as the one distributions give the ``audio`` group),
and the model workers :data:`WORKER_NICENESS` steps below the show, so model work never
takes the CPU from the threads that keep time.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

SHOW_NICENESS = -10
WORKER_NICENESS = 5


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


def lower_worker_priority() -> int:
    """In a model worker process: run :data:`WORKER_NICENESS` below the show, whatever
    the nice value inherited from it (the show's -10 gives 5, a show run under ``nice 10``
    gives 15). Returns the value in force."""
    target = min(19, max(WORKER_NICENESS, thread_nice() + WORKER_NICENESS))
    try:
        os.setpriority(os.PRIO_PROCESS, 0, target)
    except (OSError, AttributeError):  # pragma: no cover - raising the value is allowed
        pass
    return thread_nice()
