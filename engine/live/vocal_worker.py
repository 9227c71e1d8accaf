"""Sung phrases rendered in a worker process, ahead of their beat.

The show hands each lyric line (a phrase plan) to :class:`VocalWorker` as soon as the
lyrics writer has it, which is ``phrase_bars + 1`` bars or more before the phrase's first
note when the voice is on (the show composes that far ahead), with the time of that note.
The worker process loads the singer once (a DiffSinger voice in its live form: an int8
vocoder, sleeping idle threads, a cache of phrases that come back; see
:class:`~engine.voice.diffsinger.DiffSingerRunner`), measures its real-time factor at
start-up (and, for a DiffSinger voice with ``[voice] steps = 0``, picks the most diffusion
steps that keep the factor under ``TARGET_RTF``: the cap), then renders phrases one at a
time at the output's sample rate. Each DiffSinger phrase gets the most steps, up to the cap,
that its deadline allows on the machine as busy as the last renders found it
(:class:`~engine.voice.step_planner.StepPlanner`): a busy moment costs detail, not phrases.

A phrase whose audio is not in the show's hands before its first sample is due (less a
safety margin) is dropped and counted, never played late: the show checks that when the
audio arrives (see :class:`~engine.live.singing.Singing`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.live.worker_process import WorkerProcess, as_worker
from engine.lyrics.phrase import PhrasePlan, SungNote, SungSyllable
from engine.patch import Patch, build_patch

log = logging.getLogger(__name__)

TARGET_RTF = 0.25  # headroom: the probe runs on an idle machine, the show does not
FALLBACK_RTF = 0.6
"""Slower than this at one step on an idle machine, a voicebank cannot keep up with the
show's lookahead (a phrase is written about one phrase ahead): the fallback singer sings."""
STEP_CHOICES = (20, 10, 6, 4, 2, 1)
START_TIMEOUT_S = 600
"""Loading, the first start's int8 vocoder copy of a full-size bank (a minute on an idle
2-core machine, several on a busy one) and the timing probe."""
DEADLINE_SAFETY_S = 0.3
"""Seconds kept between a phrase's finished render and its first sample (resampling, the
trip back to the show, the ring's safety blocks)."""

_SINGER: Any = None
_RATE = 44100
_TRANSPOSE = 0
_STEPS: int | None = None  # diffusion steps chosen at start-up (DiffSinger voices only)
_PLANNER: Any = None  # StepPlanner: steps per phrase from its deadline (DiffSinger only)
_LOAD_ERROR: Exception | None = None  # why the singer the patch names could not load


def probe_phrase(tempo_bpm: float = 120.0) -> PhrasePlan:
    """A four-syllable test phrase ("hold the light on") used to time the singer."""
    spelled = [("hold", ("hh", "ow", "l", "d")), ("the", ("dh", "ah")),
               ("light", ("l", "ay", "t")), ("on", ("aa", "n"))]
    syllables = tuple(
        SungSyllable(text=w, word=w, phonemes=ph, notes=(SungNote(60 + 2 * k, 4.0 + k, 1.0),),
                     stressed=k % 2 == 0)
        for k, (w, ph) in enumerate(spelled))
    return PhrasePlan(bar=1, section="probe", text="Hold the light on", syllables=syllables)


def _time(singer: Any, steps: int | None = None) -> float:
    plan = probe_phrase()
    cache = getattr(singer, "cache", None)
    held, cache_size = cache, 0
    if held is not None:  # the probe phrase again and again: time it, not the cache
        cache_size, held.max_samples = held.max_samples, 0
    try:
        began = time.perf_counter()
        audio = singer.render(plan, 120.0, steps=steps) if steps else singer.render(plan,
                                                                                     120.0)
        return (time.perf_counter() - began) / max(audio.duration, 1e-9)
    finally:
        if held is not None:
            held.max_samples = cache_size


def _init(patch_dict: dict[str, Any], model_dir: str | None, rate: int) -> dict[str, Any]:
    global _SINGER, _RATE, _TRANSPOSE, _LOAD_ERROR
    as_worker()  # Ctrl-C is the show's (it stops the worker itself); the CPU too
    from engine.voice.choose import load_singer

    patch = build_patch(patch_dict, "<voice worker>")
    try:
        _SINGER = load_singer(patch.voice, model_dir, live=True)
    except Exception as err:  # noqa: BLE001 - given to the show by _probe, with its reason
        _SINGER, _LOAD_ERROR = None, err
    _RATE = rate
    _TRANSPOSE = patch.voice.transpose
    return {}


def _probe(auto_steps: bool) -> dict[str, Any]:
    """Runs in the worker: time the singer; choose steps for a DiffSinger voice."""
    global _SINGER, _STEPS, _PLANNER
    if _LOAD_ERROR is not None:  # raised again in the show's process, reason and all
        raise _LOAD_ERROR
    if _SINGER is None:
        return {"singer": "", "rtf": 0.0, "steps": None}
    _time(_SINGER)  # warm-up: first runs allocate
    steps = None
    note = ""
    if hasattr(_SINGER, "settings"):  # DiffSinger: timed at 1 and 2 steps, the rest fitted
        fewest = STEP_CHOICES[-1]
        timed = {fewest: _time(_SINGER, fewest), fewest + 1: _time(_SINGER, fewest + 1)}
        planner, frames = _fit_planner(timed)
        seconds = frames * _SINGER.hop_size / _SINGER.sample_rate
        cap = _SINGER.settings.steps  # steps set in the patch: the planner's cap
        if auto_steps:
            steps = next((s for s in STEP_CHOICES
                          if planner.predict(s, frames) / seconds <= TARGET_RTF), None)
            if steps is None and timed[fewest] <= FALLBACK_RTF:
                steps = fewest  # slower than the target: the planner keeps it in time
            cap = steps
        if cap is None:  # too slow here even at the fewest steps: the fallback sings
            from engine.voice.fallback_singer import FallbackSinger

            note = (f"{_SINGER.name} is too slow on this machine (real-time factor "
                    f"{timed[fewest]:.2f} at {fewest} step); the fallback singer sings")
            log.warning("voice: %s", note)
            _SINGER = FallbackSinger()
        else:
            planner.cap = cap
            _PLANNER = planner
    _STEPS = steps
    return {"singer": _SINGER.name, "rtf": _time(_SINGER, steps), "steps": steps,
            "note": note}


def _fit_planner(timed: dict[int, float]) -> tuple[Any, int]:
    """A step planner from the probe phrase's real-time factors by steps, and the phrase's
    length in frames."""
    from engine.voice.step_planner import StepPlanner

    frames = _SINGER.prepare(probe_phrase(), 120.0).n_frames
    seconds = frames * _SINGER.hop_size / _SINGER.sample_rate
    planner = StepPlanner.fit([(s, rtf * seconds) for s, rtf in timed.items()], frames,
                              cap=max(STEP_CHOICES))
    return planner, frames


def _render(plan_dict: dict[str, Any], tempo_bpm: float, note_ns: int | None = None,
            ) -> tuple[np.ndarray, float, float, int | None]:
    """Runs in the worker: (samples at the output rate, start seconds, real-time factor,
    steps). ``note_ns``: when the phrase's first note plays (``time.monotonic_ns``)."""
    from engine.voice.choose import resample
    from engine.voice.singer import SungAudio

    plan = PhrasePlan.from_dict(plan_dict).transposed(_TRANSPOSE)
    began = time.perf_counter()
    steps = _STEPS
    if _PLANNER is not None and note_ns is not None:
        timing = _SINGER.prepare(plan, tempo_bpm)
        pre_roll = -timing.start_offset
        budget = (note_ns - time.monotonic_ns()) / 1e9 - pre_roll - DEADLINE_SAFETY_S
        steps = _PLANNER.choose(timing.n_frames, budget)
        synth = time.perf_counter()
        audio = SungAudio(_SINGER.synthesize(timing, steps), _SINGER.sample_rate,
                          timing.start_seconds)
        if "cache" not in _SINGER.stage_seconds:
            _PLANNER.observe(steps, timing.n_frames, time.perf_counter() - synth)
    elif _STEPS:
        audio = _SINGER.render(plan, tempo_bpm, steps=_STEPS)
    else:
        audio = _SINGER.render(plan, tempo_bpm)
    samples = resample(audio, _RATE)
    rtf = (time.perf_counter() - began) / max(audio.duration, 1e-9)
    return samples, audio.start_seconds, rtf, steps


def _quantile(ordered: list[float], q: float, digits: int = 1) -> float | None:
    """The ``q`` quantile of an ascending list (nearest rank; 0 is the least, 1 the
    greatest), rounded; None when empty."""
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], digits)


@dataclass
class VocalHealth:
    """How the singing goes, for the event log and the tablet."""

    submitted: int = 0
    sung: int = 0
    missed: int = 0
    failed: int = 0
    restarts: int = 0
    margins_ms: list[float] = field(default_factory=list)
    rtf: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    """Diffusion steps each sung DiffSinger phrase got."""
    last_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        margins = sorted(self.margins_ms)
        rtf = sorted(self.rtf)
        return {
            "submitted": self.submitted, "sung": self.sung, "missed": self.missed,
            "failed": self.failed, "restarts": self.restarts, "last_error": self.last_error,
            "margin_ms_min": _quantile(margins, 0.0),
            "margin_ms_p10": _quantile(margins, 0.1),
            "margin_ms_median": _quantile(margins, 0.5),
            "margin_ms_p90": _quantile(margins, 0.9),
            "margin_ms_max": _quantile(margins, 1.0),
            "rtf_median": _quantile(rtf, 0.5, 3),
            "rtf_max": _quantile(rtf, 1.0, 3),
            "steps_min": min(self.steps, default=None),
            "steps_median": _quantile(sorted(self.steps), 0.5, 0),
        }


class VocalWorker:
    """The singer in its own process (spawned, niced, SIGINT ignored)."""

    def __init__(self, patch: Patch, sample_rate: int, *,
                 model_dir: str | Path | None = None) -> None:
        self.patch = patch
        self.sample_rate = sample_rate
        self.model_dir = str(model_dir) if model_dir else None
        self.health = VocalHealth()
        self.info: dict[str, Any] = {}
        self._pool: WorkerProcess | None = None

    def start(self) -> dict[str, Any]:
        """Start the worker, load the singer and time it (blocking: before the show)."""
        self._pool = WorkerProcess(_init, (self.patch.to_dict(), self.model_dir,
                                           self.sample_rate)).start()
        try:
            self.info = self._pool.submit(_probe, self.patch.voice.steps == 0).result(
                timeout=START_TIMEOUT_S)
        except BaseException:  # a voicebank refused (its reason), a worker that died
            self.close()
            raise
        return self.info

    @property
    def active(self) -> bool:
        return self._pool is not None and bool(self.info.get("singer"))

    def submit(self, plan: dict[str, Any], tempo_bpm: float,
               note_ns: int | None = None) -> concurrent.futures.Future:
        """Render ``plan``; ``note_ns`` (``time.monotonic_ns`` of its first note) lets a
        DiffSinger voice choose its steps from the time left. The future gives (samples,
        start seconds, real-time factor, steps or None)."""
        if self._pool is None:
            raise RuntimeError("the voice worker is starting again")
        self.health.submitted += 1
        return self._pool.submit(_render, plan, tempo_bpm, note_ns)

    def restart(self) -> None:
        """Replace a worker that is stuck or died (its phrases in flight are lost)."""
        self.close()
        self.health.restarts += 1
        self.start()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
