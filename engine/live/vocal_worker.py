"""Sung phrases rendered in a worker process, ahead of their beat.

The show hands each lyric line (a phrase plan) to :class:`VocalWorker` as soon as the
lyrics writer has it, which is ``phrase_bars + 1`` bars or more before the phrase's first
note when the voice is on (the show composes that far ahead). The worker process loads the
singer once, measures its real-time factor at start-up (and, for a DiffSinger voice with
``[voice] steps = 0``, picks the most diffusion steps that keep the factor under
``TARGET_RTF``), then renders phrases one at a time at the output's sample rate.

A phrase whose audio is not in the show's hands before its first sample is due (less a
safety margin) is dropped and counted, never played late: the show checks that when the
audio arrives (see ``Show._sing``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.live.priority import lower_worker_priority
from engine.lyrics.phrase import PhrasePlan, SungNote, SungSyllable
from engine.patch import Patch, build_patch

log = logging.getLogger(__name__)

TARGET_RTF = 0.25  # headroom: the probe runs on an idle machine, the show does not
STEP_CHOICES = (20, 10, 6, 4, 2)

_SINGER: Any = None
_RATE = 44100
_TRANSPOSE = 0
_STEPS: int | None = None  # diffusion steps chosen at start-up (DiffSinger voices only)
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
    began = time.perf_counter()
    audio = singer.render(plan, 120.0, steps=steps) if steps else singer.render(plan, 120.0)
    return (time.perf_counter() - began) / max(audio.duration, 1e-9)


def _init(patch_dict: dict[str, Any], model_dir: str | None, rate: int) -> dict[str, Any]:
    global _SINGER, _RATE, _TRANSPOSE, _LOAD_ERROR
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the show stops the worker itself
    lower_worker_priority()
    from engine.voice.choose import load_singer

    patch = build_patch(patch_dict, "<voice worker>")
    try:
        _SINGER = load_singer(patch.voice, model_dir)
    except Exception as err:  # noqa: BLE001 - given to the show by _probe, with its reason
        _SINGER, _LOAD_ERROR = None, err
    _RATE = rate
    _TRANSPOSE = patch.voice.transpose
    return {}


def _probe(auto_steps: bool) -> dict[str, Any]:
    """Runs in the worker: time the singer; choose steps for a DiffSinger voice."""
    global _SINGER, _STEPS
    if _LOAD_ERROR is not None:  # raised again in the show's process, reason and all
        raise _LOAD_ERROR
    if _SINGER is None:
        return {"singer": "", "rtf": 0.0, "steps": None}
    _time(_SINGER)  # warm-up: first runs allocate
    steps = None
    note = ""
    if auto_steps and hasattr(_SINGER, "settings"):
        for choice in STEP_CHOICES:
            if _time(_SINGER, choice) <= TARGET_RTF:
                steps = choice
                break
        if steps is None:  # too slow here even at the fewest steps: the fallback sings
            slow = _time(_SINGER, STEP_CHOICES[-1])
            from engine.voice.fallback_singer import FallbackSinger

            note = (f"{_SINGER.name} is too slow on this machine (real-time factor "
                    f"{slow:.2f} at {STEP_CHOICES[-1]} steps); the fallback singer sings")
            log.warning("voice: %s", note)
            _SINGER = FallbackSinger()
    _STEPS = steps
    return {"singer": _SINGER.name, "rtf": _time(_SINGER, steps), "steps": steps,
            "note": note}


def _render(plan_dict: dict[str, Any], tempo_bpm: float) -> tuple[np.ndarray, float, float]:
    """Runs in the worker: (samples at the output rate, start seconds, real-time factor)."""
    from engine.voice.choose import resample

    plan = PhrasePlan.from_dict(plan_dict).transposed(_TRANSPOSE)
    began = time.perf_counter()
    audio = _SINGER.render(plan, tempo_bpm, steps=_STEPS) if _STEPS else _SINGER.render(
        plan, tempo_bpm)
    samples = resample(audio, _RATE)
    return samples, audio.start_seconds, (time.perf_counter() - began) / max(audio.duration,
                                                                             1e-9)


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
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def start(self) -> dict[str, Any]:
        """Start the worker, load the singer and time it (blocking: before the show)."""
        context = multiprocessing.get_context("spawn")
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=context, initializer=_init,
            initargs=(self.patch.to_dict(), self.model_dir, self.sample_rate))
        try:
            self.info = self._pool.submit(_probe, self.patch.voice.steps == 0).result(
                timeout=180)
        except BaseException:  # a voicebank refused (its reason), a worker that died
            self.close()
            raise
        return self.info

    @property
    def active(self) -> bool:
        return self._pool is not None and bool(self.info.get("singer"))

    def submit(self, plan: dict[str, Any], tempo_bpm: float) -> concurrent.futures.Future:
        if self._pool is None:
            raise RuntimeError("the voice worker is starting again")
        self.health.submitted += 1
        return self._pool.submit(_render, plan, tempo_bpm)

    def restart(self) -> None:
        """Replace a worker that is stuck or died (its phrases in flight are lost)."""
        self.close()
        self.health.restarts += 1
        self.start()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(0.5)
            if process.is_alive():
                process.kill()
