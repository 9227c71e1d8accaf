"""The show's voice: the singer's worker, its level and mute, and each phrase placed in time.

:class:`Singing` is the one owner of singing in a live show. The show starts it after the
audio engine opens (``await singing.start(sample_rate, event_log)``: the worker loads and
times the singer), hands it each lyric line as the lyrics writer delivers it
(``singing.sing(lyric, clock, audio_engine)``) and closes it on the way out. A line is
rendered in the voice worker (:class:`~engine.live.vocal_worker.VocalWorker`) while the
music plays; its audio goes into the audio engine's vocal ring only when it arrives before
its first sample is due, with ``VOCAL_SAFETY_BLOCKS`` audio blocks to spare, else it is
dropped and counted (never sung late). A worker that broke is started again once, and the
band plays on unsung if it cannot be.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.live.vocal_worker import VocalWorker
from engine.patch import Patch

log = logging.getLogger(__name__)

NS = 1_000_000_000
VOCAL_SAFETY_BLOCKS = 2  # a phrase must be in the ring this many audio blocks early


class Singing:
    """The set's voice (``vocals`` is None when the set is not sung). ``level`` and ``mute``
    are the tablet's (``/encore/voice/*``); they apply from the next phrase placed."""

    def __init__(self, patch: Patch, *, model_dir: str | Path | None = None) -> None:
        self.patch = patch
        self.model_dir = model_dir
        self.level = patch.voice.level
        self.mute = patch.voice.mute
        self.vocals: VocalWorker | None = None
        self.sample_rate = patch.audio.sample_rate
        self._tasks: set[asyncio.Task] = set()

    @property
    def on(self) -> bool:
        """A singer is loaded and singing."""
        return self.vocals is not None and self.vocals.active

    def health(self) -> dict[str, Any]:
        """The singing's figures for the show's health ({} when the set is not sung)."""
        if self.vocals is None:
            return {}
        return self.vocals.health.to_dict() | {"singer": self.vocals.info}

    async def start(self, sample_rate: int, event_log: Any = None) -> None:
        """Start the voice worker (it loads and times the singer) when the set is sung."""
        patch = self.patch
        self.sample_rate = sample_rate
        if patch.lyrics.source == "off" or patch.voice.singer == "off":
            return
        vocals = VocalWorker(patch, sample_rate, model_dir=self.model_dir)
        info = await asyncio.to_thread(vocals.start)
        if not vocals.active:
            vocals.close()
            return
        self.vocals = vocals
        log.info("voice: %s, real-time factor %.2f%s", info["singer"], info["rtf"],
                 f" at {info['steps']} steps" if info.get("steps") else "")
        if event_log is not None:
            event_log.write({"type": "voice"} | info)

    def sing(self, lyric: dict[str, Any], clock: Any, engine: Any) -> None:
        """Have a line sung, on time or not at all (a task on the running loop)."""
        if not self.on:
            return
        task = asyncio.ensure_future(self._sing(lyric, clock, engine))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sing(self, lyric: dict[str, Any], clock: Any, engine: Any) -> None:
        """Render the phrase in the voice worker; place it in the vocal ring if it is
        there before its first sample is due (with a safety margin), else drop it."""
        vocals = self.vocals
        assert vocals is not None and clock is not None and engine is not None
        health = vocals.health
        first_beat = float(lyric["syllables"][0]["notes"][0][1])
        note_ns = clock.beat_to_ns(first_beat)
        wait_s = (note_ns - time.monotonic_ns()) / NS
        if wait_s <= 0:
            health.missed += 1
            health.last_error = f"bar {lyric['bar']}: written after its first note"
            return
        bpm = clock.bpm
        restarts = health.restarts  # a worker that broke under several lines restarts once
        try:  # submit too: a pool already known broken raises there
            future = vocals.submit(lyric, bpm, note_ns)
            samples, start_s, rtf, steps = await asyncio.wait_for(asyncio.wrap_future(future),
                                                                   wait_s)
        except TimeoutError:
            health.missed += 1
            health.last_error = f"bar {lyric['bar']}: not rendered before its first note"
            return
        except Exception as err:  # noqa: BLE001 - a phrase may fail; the set goes on
            health.failed += 1
            health.last_error = f"bar {lyric['bar']}: {type(err).__name__}: {err}"
            if (isinstance(err, concurrent.futures.process.BrokenProcessPool)
                    and health.restarts == restarts and vocals.active):
                try:
                    await asyncio.to_thread(vocals.restart)
                except Exception as restart_err:  # noqa: BLE001 - the band plays on, unsung
                    health.last_error = (f"the voice worker could not start again: "
                                         f"{type(restart_err).__name__}: {restart_err}")
                    log.warning("voice: %s; the set goes on without singing", health.last_error)
            return
        health.rtf.append(rtf)
        if steps is not None:
            health.steps.append(steps)
        start_frame = engine.ns_to_frame(note_ns) + round(
            (start_s - first_beat * 60.0 / bpm) * self.sample_rate)
        ring = engine.vocals
        margin = start_frame - ring.read_frame - VOCAL_SAFETY_BLOCKS * self.patch.live.block_size
        if margin <= 0:
            health.missed += 1
            health.last_error = f"bar {lyric['bar']}: rendered {-margin} frames too late"
            return
        health.margins_ms.append(1000.0 * margin / self.sample_rate)
        health.sung += 1
        if not self.mute:
            ring.write_at(start_frame, samples * np.float32(self.level))

    def close(self) -> None:
        if self.vocals is not None:
            self.vocals.close()
