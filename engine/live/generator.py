"""Bar generation in a worker process, ahead of the music, with a fallback.

The show loop hands each :class:`~engine.song.conductor.BarPlan` to a worker process that
runs the :class:`~engine.song.conductor.Composer` (model decoding and arrangement: the
CPU-heavy part, kept out of the process whose threads keep time, since any pure-Python
work there costs the MIDI thread ~5 ms through the GIL). Results come back as
:class:`~engine.song.conductor.ArrangedBar`.

When a worker raises, hangs past its time limit, or dies, the caller gets the last good
material instead (the previous bar re-stamped), the failure is counted and reported, and
a fresh worker is started. The music never waits for a worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from engine.live.worker_process import WorkerProcess, as_worker
from engine.patch import Patch, build_patch
from engine.song.conductor import ArrangedBar, BarPlan, Composer

log = logging.getLogger(__name__)

_COMPOSER: Composer | None = None
_LYRICS: Any = None  # engine.song.lyrics_track.LyricsTrack in the worker, or None
STARTUP_TIMEOUT_S = 30.0


def _init_worker(patch_dict: dict[str, Any], model: str, model_dir: str | None,
                 threads: int) -> None:
    """Runs once in each worker process: load the patch and the model there."""
    global _COMPOSER, _LYRICS
    as_worker()  # Ctrl-C is the show's; model work yields the CPU to the show's threads
    from engine.music.musicvae_runner import load_model

    patch = build_patch(patch_dict, "<worker>")
    runner = load_model(model, model_dir=model_dir, threads=threads)
    _COMPOSER = Composer(runner, patch)
    from engine.song.lyrics_track import LyricsTrack, build_writer, line_budget_s

    try:
        writer = build_writer(patch.lyrics, patch.song.seed, model_dir)
    except (OSError, ValueError) as err:  # checked before the show; never kill the music
        log.warning("lyrics off: %s", err)
        writer = None
    _LYRICS = (LyricsTrack(writer, patch.lyrics, budget_s=line_budget_s(patch.song.tempo))
               if writer is not None else None)


def _describe() -> dict[str, Any]:
    if _COMPOSER is None:  # pragma: no cover
        raise RuntimeError("worker not initialised")
    runner = _COMPOSER.runner
    return {"name": runner.name, "z_size": runner.z_size, "bars": runner.bars,
            "parts": list(runner.parts), "provider": runner.provider}


def _realize(plan: BarPlan) -> tuple[ArrangedBar, float, dict[str, Any] | None]:
    """Compose one bar, and the lyric line it completes (an event-log record) if any."""
    if _COMPOSER is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("worker not initialised")
    started = time.perf_counter()
    bar = _COMPOSER.realize(plan)
    lyric = None
    if _LYRICS is not None:
        from engine.song.lyrics_track import lyric_record

        try:
            written = _LYRICS.feed(plan, bar)
        except Exception as err:  # noqa: BLE001 - words may fail; the music must not
            log.warning("lyrics failed at bar %d: %s", plan.index, err)
            written = None
        if written is not None:
            lyric = lyric_record(*written)
    return bar, time.perf_counter() - started, lyric


def _steer_lyrics(target: str, value: str) -> None:
    """Runs in the worker, in order with the bars: a theme change or new words."""
    if _LYRICS is None:
        return
    if target == "lyrics.theme":
        _LYRICS.writer.set_theme(value)
    elif target == "lyrics.renew":
        _LYRICS.writer.renew()


@dataclasses.dataclass
class GeneratorHealth:
    realized: int = 0
    fallbacks: int = 0
    errors: int = 0
    timeouts: int = 0
    restarts: int = 0
    last_error: str = ""
    last_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class BarGenerator:
    """Realises bar plans in a worker process; ``await realize(plan)`` never fails."""

    def __init__(self, patch: Patch, *, model_dir: str | Path | None = None,
                 timeout_s: float = 2.0, threads: int = 1) -> None:
        self.patch = patch
        self.model_dir = str(model_dir) if model_dir else None
        self.timeout_s = timeout_s
        self.threads = threads
        self.health = GeneratorHealth()
        self._last_good: ArrangedBar | None = None
        self._pool: WorkerProcess | None = None
        # Submitted work not yet finished, with when it was submitted: the show may stop
        # waiting for a bar (it plays the fallback) but a worker stuck past timeout_s is
        # still found and replaced at the next request.
        self._in_flight: list[tuple[concurrent.futures.Future, float]] = []
        self._warm = False  # has the current worker delivered a bar yet?
        self._lyrics: list[dict[str, Any]] = []  # lines written, not yet taken by the show

    @property
    def limit_s(self) -> float:
        """Time a bar may take: a fresh worker first loads its model, so it gets longer."""
        return self.timeout_s if self._warm else max(self.timeout_s, STARTUP_TIMEOUT_S)

    def start(self) -> None:
        """Start the worker (it loads the model: call this before the show starts)."""
        if self._pool is None:
            self._pool = WorkerProcess(_init_worker, (
                self.patch.to_dict(), self.patch.song.model, self.model_dir,
                self.threads)).start()

    def describe(self) -> dict[str, Any]:
        """The worker's model: name, z_size, bars, parts, provider (loads it; blocking)."""
        self.start()
        assert self._pool is not None
        return self._pool.submit(_describe).result(timeout=120)

    def warm_up(self, plan: BarPlan) -> ArrangedBar:
        """Realise one plan synchronously (loads the model in the worker); raises on error."""
        self.start()
        assert self._pool is not None
        bar, seconds, lyric = self._pool.submit(_realize, plan).result(timeout=120)
        self._keep_lyric(plan, lyric)
        self._warm = True
        self._last_good = bar
        self.health.last_seconds = seconds
        return bar

    def _restart(self) -> None:
        pool, self._pool = self._pool, None
        self._in_flight = []
        self._warm = False
        if pool is not None:
            pool.kill()
        self.health.restarts += 1
        self.start()

    def fallback(self, plan: BarPlan) -> ArrangedBar | None:
        """The last good material, re-stamped as bar ``plan.index`` (None before any)."""
        self.health.fallbacks += 1
        if self._last_good is None:
            return None
        return dataclasses.replace(self._last_good, index=plan.index,
                                   section=plan.position.section)

    async def realize(self, plan: BarPlan) -> tuple[ArrangedBar | None, bool]:
        """(bar, fresh): the realised bar, or the fallback with fresh=False."""
        self.start()
        now = time.monotonic()
        self._in_flight = [(f, t) for f, t in self._in_flight if not f.done()]
        if self._in_flight and now - self._in_flight[0][1] > self.limit_s:
            self.health.timeouts += 1
            self.health.last_error = f"worker stuck over {self.limit_s} s before bar {plan.index}"
            log.warning("generation: %s; restarting it", self.health.last_error)
            self._restart()
        assert self._pool is not None
        submitted = self._pool.submit(_realize, plan)
        self._in_flight.append((submitted, now))
        try:
            bar, seconds, lyric = await asyncio.wait_for(asyncio.wrap_future(submitted),
                                                         self.limit_s)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the show stopped waiting for this bar
            # another bar's request restarted the worker, cancelling this one's work
            self.health.errors += 1
            self.health.last_error = f"bar {plan.index}: the worker was replaced meanwhile"
            return self.fallback(plan), False
        except TimeoutError:
            self.health.timeouts += 1
            self.health.last_error = f"bar {plan.index}: worker took over {self.limit_s} s"
            log.warning("generation: %s; restarting it", self.health.last_error)
            self._restart()
            return self.fallback(plan), False
        except Exception as err:  # noqa: BLE001 - any worker failure falls back
            self.health.errors += 1
            self.health.last_error = f"bar {plan.index}: {type(err).__name__}: {err}"
            log.warning("generation failed: %s", self.health.last_error)
            if isinstance(err, concurrent.futures.process.BrokenProcessPool):
                self._restart()
            return self.fallback(plan), False
        self._keep_lyric(plan, lyric)
        self._warm = True
        self.health.realized += 1
        self.health.last_seconds = seconds
        self._last_good = bar
        return bar, True

    def _keep_lyric(self, plan: BarPlan, lyric: dict[str, Any] | None) -> None:
        if lyric is not None:
            self._lyrics.append(lyric)

    def take_lyrics(self) -> list[dict[str, Any]]:
        """The lines written since the last call (event-log records), in song order."""
        taken, self._lyrics = self._lyrics, []
        return taken

    def steer_lyrics(self, target: str, value: str = "") -> None:
        """Change the theme or ask for new words; lands in order with the bars asked for."""
        if self._pool is not None:
            self._pool.submit(_steer_lyrics, target, value)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
