"""A bar whose request is cancelled because another bar's request replaced the worker
falls back (the show plays on); a show that stops waiting still cancels the request.
The pool is a stand-in: its futures are cancelled by hand, as a pool's shutdown
(cancel_futures=True) cancels the queued ones; the generator under test is real."""

from __future__ import annotations

import asyncio
import concurrent.futures
import types

import pytest

from engine.live.generator import BarGenerator
from engine.patch import build_patch


class QueuedPool:
    """Accepts work and never starts it (a busy worker's queue)."""

    def __init__(self) -> None:
        self.futures: list[concurrent.futures.Future] = []

    def submit(self, *args, **kwargs) -> concurrent.futures.Future:
        self.futures.append(concurrent.futures.Future())
        return self.futures[-1]


PLAN = types.SimpleNamespace(index=7, position=types.SimpleNamespace(section="verse"))


def _generator() -> tuple[BarGenerator, QueuedPool]:
    generator = BarGenerator(build_patch({}))
    pool = QueuedPool()
    generator._pool = pool  # type: ignore[assignment]
    return generator, pool


def test_a_request_cancelled_by_a_restart_falls_back() -> None:
    generator, pool = _generator()

    async def main():
        task = asyncio.ensure_future(generator.realize(PLAN))
        await asyncio.sleep(0.01)
        pool.futures[0].cancel()  # what pool.shutdown(cancel_futures=True) does to it
        return await task

    assert asyncio.run(main()) == (None, False)
    assert generator.health.fallbacks == 1 and "replaced" in generator.health.last_error


def test_a_show_that_stops_waiting_still_cancels() -> None:
    generator, pool = _generator()

    async def main():
        task = asyncio.ensure_future(generator.realize(PLAN))
        await asyncio.sleep(0.01)
        task.cancel()
        return await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert pool.futures[0].cancelled() and generator.health.fallbacks == 0
