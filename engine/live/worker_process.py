"""One worker process for the show's heavy work (composing bars, singing phrases).

The music and the voice each run their model in a process of their own, so no model work
holds the interpreter lock that the show's time-keeping threads need. Both start it the
same way (spawned, one worker, an initializer that loads the model there), replace it the
same way when it hangs or dies, and stop it the same way, so that lives here::

    worker = WorkerProcess(_init, (patch_dict, model_dir)).start()
    future = worker.submit(_render, plan)      # a concurrent.futures.Future
    worker.kill()                              # stuck or broken: gone at once
    worker.stop()                              # on the way out: asked, then made to

Each initializer calls :func:`as_worker` first: Ctrl-C is the show's to handle (it stops
its workers itself; a worker that died of it mid-bar would only print a traceback over the
performer's terminal), and model work yields the CPU to the show's threads.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from engine.live.priority import lower_worker_priority

__all__ = ["STOP_WAIT_S", "WorkerProcess", "as_worker"]

STOP_WAIT_S = 0.5
"""How long a worker asked to stop (SIGTERM) gets before it is killed (a stopped, SIGSTOP,
worker ignores SIGTERM)."""


def as_worker() -> None:
    """In a worker process, first thing: SIGINT ignored, priority lowered (in a session of
    its own), and a watch that ends the worker when the show's process ends, however it
    ends (a closed terminal's hangup no longer reaches the worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lower_worker_priority()
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_end_with, args=(parent,), name="encore-end-with-show",
                         daemon=True).start()


def _end_with(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()  # the show's process has ended (its sentinel closed)
    os._exit(0)


class WorkerProcess:
    """A spawned process running ``initializer(*initargs)`` once, then the work submitted,
    one piece at a time, in order."""

    def __init__(self, initializer: Callable[..., Any], initargs: tuple[Any, ...]) -> None:
        self.initializer = initializer
        self.initargs = initargs
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def start(self) -> WorkerProcess:
        """Start it (the process itself starts with the first piece of work)."""
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=self.initializer, initargs=self.initargs)
        return self

    @property
    def running(self) -> bool:
        return self._pool is not None

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        """Run ``fn(*args)`` in the worker; raises RuntimeError when it is not started, and
        BrokenProcessPool when its process died."""
        if self._pool is None:
            raise RuntimeError("the worker process is not running")
        return self._pool.submit(fn, *args)

    def pids(self) -> list[int]:
        """The worker's process ids (none before its first piece of work)."""
        return [p.pid for p in self._processes() if p.pid is not None]

    def kill(self) -> None:
        """Gone at once (stuck, or broken): SIGKILL, the work queued is cancelled."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in _processes(pool):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        """On the way out: the work queued is cancelled, the process asked to end, then
        killed if it has not within :data:`STOP_WAIT_S`."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = _processes(pool)
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(STOP_WAIT_S)
            if process.is_alive():
                process.kill()

    def _processes(self) -> list[Any]:
        return _processes(self._pool) if self._pool is not None else []


def _processes(pool: concurrent.futures.ProcessPoolExecutor) -> list[Any]:
    """The pool's worker processes (a private attribute: there is no public way)."""
    return list((getattr(pool, "_processes", None) or {}).values())
