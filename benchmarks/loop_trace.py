"""What holds an asyncio loop: timestamps of its lags, of garbage collections, and of a
trivial loop's lags in another process beside it (a benchmark tool, not part of the engine).

    python benchmarks/loop_trace.py show OUT.json -- live --patch P ...   # encore, traced
    python benchmarks/loop_trace.py probe OUT.json SECONDS                 # a trivial loop

``show`` runs ``encore`` with two tracers added: a task on the show's own loop that sleeps
10 ms at a time, as the show's loop watcher does, and writes down every wake-up more than
:data:`NOTED_MS` late (monotonic time, lag); and ``gc.callbacks`` writing down every
collection of :data:`NOTED_MS` or more (time, generation, duration). ``probe`` is a loop
with nothing else to do, at the show's niceness, doing the same sleeps for SECONDS. Both
write JSON at exit. Monotonic time is one clock for every process on the machine, so a lag
of the show can be set beside a collection in it and beside a lag of the probe: when both
loops stall together, the machine (no core free) held them, not the show's code.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import os
import sys
import time
from pathlib import Path

SLEEP_S = 0.01
NOTED_MS = 2.0
DUMP_AFTER_S = 0.04


def _watch(lags: list[tuple[float, float]], stacks=None):
    """A task noting its late wake-ups; with ``stacks`` (a file), a wake-up later than
    :data:`DUMP_AFTER_S` has every thread's stack written there by faulthandler's own
    thread (which needs no interpreter lock): what each thread was doing while the loop
    was held."""
    import faulthandler

    async def watch() -> None:
        while True:
            began = time.monotonic()
            if stacks is not None:
                faulthandler.dump_traceback_later(DUMP_AFTER_S, file=stacks)
            await asyncio.sleep(SLEEP_S)
            if stacks is not None:
                faulthandler.cancel_dump_traceback_later()
            now = time.monotonic()
            lag_ms = (now - began - SLEEP_S) * 1000
            if lag_ms >= NOTED_MS:
                lags.append((now, round(lag_ms, 2)))
    return watch


def _gc_tracer(out: list[tuple[float, int, float]]):
    started: dict[str, float] = {}

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started["t"] = time.perf_counter()
            return
        took_ms = (time.perf_counter() - started.get("t", time.perf_counter())) * 1000
        if took_ms >= NOTED_MS:
            out.append((time.monotonic(), info["generation"], round(took_ms, 2)))
    return callback


def trace_show(out_path: Path, argv: list[str]) -> int:
    from engine.cli import main
    from engine.live import show as show_module

    lags: list[tuple[float, float]] = []
    collections: list[tuple[float, int, float]] = []
    gc.callbacks.append(_gc_tracer(collections))
    original_run = show_module.Show.run

    stacks = out_path.with_suffix(".stacks").open("w")

    async def run(self):  # the show's run, with the tracer task on its loop
        task = asyncio.ensure_future(_watch(lags, stacks)())
        try:
            return await original_run(self)
        finally:
            task.cancel()

    show_module.Show.run = run

    def dump() -> None:
        out_path.write_text(json.dumps({"lags": lags, "gc": collections,
                                        "gc_stats": gc.get_stats(),
                                        "gc_threshold": gc.get_threshold()}))
    atexit.register(dump)
    return main(argv)


def probe(out_path: Path, seconds: float) -> int:
    """A trivial loop, given the priorities the show's loop takes (the tree on PYTHONPATH:
    its thread nice, and its scheduling group's where it sets that)."""
    from engine.live import priority

    priority.set_thread_nice(priority.SHOW_NICENESS)
    if hasattr(priority, "set_group_nice"):
        priority.set_group_nice(priority.SHOW_NICENESS)
    lags: list[tuple[float, float]] = []

    async def run() -> None:
        task = asyncio.ensure_future(_watch(lags)())
        await asyncio.sleep(seconds)
        task.cancel()
    asyncio.run(run())
    out_path.write_text(json.dumps({"lags": lags, "nice": os.getpriority(os.PRIO_PROCESS, 0),
                                    "group": getattr(priority, "group_nice", lambda: None)()}))
    return 0


if __name__ == "__main__":
    what, out = sys.argv[1], Path(sys.argv[2])
    if what == "probe":
        sys.exit(probe(out, float(sys.argv[3])))
    rest = sys.argv[3:]
    sys.exit(trace_show(out, rest[1:] if rest[:1] == ["--"] else rest))
