"""Which singer sings: the patch's ``[voice] singer`` turned into a loaded :class:`Singer`.

``"auto"`` takes the first DiffSinger voicebank found in the model folders (a folder with
a ``dsconfig.yaml``; ``encore_voice`` first, the project's own, when it is there) and
otherwise the fallback singer; ``"fallback"`` is espeak-ng re-pitched by WORLD; anything
else is a voicebank folder, by path or by name in the model folders. ``"off"`` sings
nothing. A named singer that cannot be loaded is an error before the show starts; ``auto``
on a machine with no way to sing says so and plays on instrumental.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engine.models import model_dirs
from engine.patch import Voice
from engine.voice.singer import Singer, SungAudio

log = logging.getLogger(__name__)
OWN_VOICE = "encore_voice"
LIVE_CACHE_SECONDS = 120.0
"""Seconds of rendered phrases a live DiffSinger voice keeps for phrases that come back."""


def find_voicebanks(model_dir: str | Path | None = None) -> list[Path]:
    """Voicebank folders in the model folders, the project's own first."""
    found: list[Path] = []
    for folder in model_dirs(model_dir):
        if folder.is_dir():
            found += sorted(p.parent for p in folder.glob("*/dsconfig.yaml"))
    found.sort(key=lambda p: p.name != OWN_VOICE)
    return found


def _voicebank(path: Path, settings: Voice, live: bool) -> Singer:
    from engine.voice.diffsinger import DiffSingerRunner, RenderSettings

    render = RenderSettings(speaker=settings.speaker or None,
                            steps=settings.steps or 20)
    if live:
        return DiffSingerRunner(path, render, live=True, cache_seconds=LIVE_CACHE_SECONDS)
    return DiffSingerRunner(path, render)


def load_singer(settings: Voice, model_dir: str | Path | None = None, *,
                live: bool = False) -> Singer | None:
    """The singer the patch asks for, loaded; None for ``"off"`` (or ``"auto"`` when
    nothing here can sing). ``live``: a DiffSinger voice in its live form (see
    :class:`~engine.voice.diffsinger.DiffSingerRunner`)."""
    choice = settings.singer.strip()
    if choice == "off":
        return None
    if choice == "fallback":
        from engine.voice.fallback_singer import FallbackSinger

        return FallbackSinger()
    if choice == "auto":
        for bank in find_voicebanks(model_dir):
            try:
                return _voicebank(bank, settings, live)
            except (OSError, ValueError) as err:
                log.warning("voicebank %s cannot sing here (%s); trying the next", bank, err)
        try:
            from engine.voice.fallback_singer import FallbackSinger

            return FallbackSinger()
        except (OSError, RuntimeError, ImportError) as err:
            log.warning("no voice can sing on this machine (%s): the set is instrumental", err)
            return None
    path = named_voicebank(settings, model_dir)
    assert path is not None  # not one of the words above
    return _voicebank(path, settings, live)


def named_voicebank(settings: Voice, model_dir: str | Path | None = None) -> Path | None:
    """The voicebank folder ``[voice] singer`` names (a path, or a name in the model
    folders); None for "off", "fallback" and "auto" (which try what they find)."""
    choice = settings.singer.strip()
    if choice in ("off", "fallback", "auto"):
        return None
    path = Path(choice).expanduser()
    if path.exists():
        return path
    for folder in model_dirs(model_dir):
        if (folder / choice).exists():
            return folder / choice
    raise FileNotFoundError(
        f"[voice] singer = {choice!r}: no such voicebank folder (looked in "
        f"{', '.join(str(d) for d in model_dirs(model_dir))}); unpack a DiffSinger "
        'voicebank into models_onnx/ or give its path, or use "fallback"')


def resample(audio: SungAudio, rate: int) -> np.ndarray:
    """The phrase's samples at ``rate`` (polyphase, scipy)."""
    if audio.sample_rate == rate:
        return audio.samples
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(audio.sample_rate, rate)
    return resample_poly(audio.samples, rate // g, audio.sample_rate // g).astype(np.float32)
