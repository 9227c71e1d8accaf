"""Notes, parts and bars on a 16-steps-per-bar grid.

A bar holds, per part, the notes that *start* in it. ``start`` and ``end`` are steps
relative to the bar's first step (0..15); ``end`` may exceed 16 when a note is held into
the following bars. This is the contract between the model runner, the song conductor
and the MIDI writers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STEPS_PER_BAR = 16
STEPS_PER_QUARTER = 4

MELODY = "melody"
BASS = "bass"
DRUMS = "drums"
PART_NAMES = (MELODY, BASS, DRUMS)


@dataclass(frozen=True, slots=True, order=True)
class Note:
    """One note: MIDI pitch, velocity, start step and end step (exclusive)."""

    start: int
    pitch: int
    end: int
    velocity: int = 90

    def __post_init__(self) -> None:
        if not 0 <= self.pitch <= 127:
            raise ValueError(f"pitch must be 0..127, got {self.pitch}")
        if not 1 <= self.velocity <= 127:
            raise ValueError(f"velocity must be 1..127, got {self.velocity}")
        if self.end <= self.start:
            raise ValueError(
                f"note must end after it starts, got start={self.start} end={self.end}")

    @property
    def duration(self) -> int:
        return self.end - self.start

    def shifted(self, steps: int) -> Note:
        return Note(self.start + steps, self.pitch, self.end + steps, self.velocity)


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of every part, with the latent vector and section it came from."""

    parts: dict[str, tuple[Note, ...]]
    z: np.ndarray | None = field(default=None, compare=False)
    section: str = ""

    def notes(self, part: str) -> tuple[Note, ...]:
        return self.parts.get(part, ())


def fold_into(pitch: int, low: int, high: int) -> int:
    """Move ``pitch`` by whole octaves into ``low..high`` (a range of at least an octave),
    keeping its pitch class."""
    while pitch < low:
        pitch += 12
    while pitch > high:
        pitch -= 12
    return pitch


def split_into_bars(notes: list[Note] | tuple[Note, ...], n_bars: int) -> list[tuple[Note, ...]]:
    """Group notes with absolute steps into bars of bar-relative notes (by start step)."""
    bars: list[list[Note]] = [[] for _ in range(n_bars)]
    for note in notes:
        index = note.start // STEPS_PER_BAR
        if 0 <= index < n_bars:
            bars[index].append(note.shifted(-index * STEPS_PER_BAR))
    return [tuple(sorted(b)) for b in bars]


def join_bars(bars: list[tuple[Note, ...]] | tuple[tuple[Note, ...], ...]) -> list[Note]:
    """Inverse of :func:`split_into_bars`: bar-relative notes to absolute steps."""
    out: list[Note] = []
    for index, bar in enumerate(bars):
        out.extend(n.shifted(index * STEPS_PER_BAR) for n in bar)
    return sorted(out)
