"""What a singer is: anything that turns a phrase plan into audio placed in song time.

Two implement it: :class:`~engine.voice.diffsinger.DiffSingerRunner` (a DiffSinger
voicebank) and the non-neural fallback singer in :mod:`engine.voice.fallback_singer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from engine.lyrics.phrase import PhrasePlan


@dataclass(frozen=True, eq=False)
class SungAudio:
    """One rendered phrase: mono float32 samples and where they belong in the song.

    ``start_seconds`` is the song time (seconds from the song's start) at which
    ``samples[0]`` must play. It is earlier than the phrase's first note: consonants and
    breath sound before the beat, so the audio must be ready before this time.
    """

    samples: np.ndarray
    sample_rate: int
    start_seconds: float

    def __post_init__(self) -> None:
        if self.samples.ndim != 1 or self.samples.dtype != np.float32:
            raise TypeError(f"SungAudio.samples must be 1-D float32, got {self.samples.ndim}-D "
                            f"{self.samples.dtype}")
        if not np.isfinite(self.samples).all():
            raise ValueError("SungAudio.samples holds NaN or infinity: the singer failed on "
                             "this phrase (never played: it would poison the mix)")
        if self.sample_rate <= 0:
            raise ValueError(f"SungAudio.sample_rate must be positive, got {self.sample_rate}")

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return len(self.samples) / self.sample_rate

    @property
    def end_seconds(self) -> float:
        """Song time just after the last sample."""
        return self.start_seconds + self.duration


@runtime_checkable
class Singer(Protocol):
    """Sings phrase plans. Implementations may take extra keyword arguments in ``render``."""

    @property
    def name(self) -> str: ...

    @property
    def sample_rate(self) -> int: ...

    def render(self, plan: PhrasePlan, tempo_bpm: float) -> SungAudio: ...
