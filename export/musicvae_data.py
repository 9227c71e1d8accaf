"""Training data for MusicVAE: cached windows, held-out split, augmentation, batches."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.music.encoding import MELODY_CLASSES
from export.drum_corpus import generate_drum_windows

TRANSPOSE_RANGE = (-5, 6)  # semitones, inclusive


UNKNOWN = -1  # a line the source does not have (every step): left out of the loss
REAL_DRUM_SHARE = 0.5  # windows without drums take a real drum window this often


@dataclass
class WindowSet:
    """Encoded windows ``(N, lines, T)`` (melody[, bass[, drums]]) and the piece each came
    from. A line may be ``UNKNOWN`` on every step of a window (see export.band_corpus)."""

    events: np.ndarray
    source: np.ndarray

    def split(self, held_out: float = 0.1) -> tuple[WindowSet, WindowSet]:
        """Split by piece (never by window, so no piece is in both halves)."""
        bucket = np.array([zlib.crc32(s.encode()) % 1000 for s in self.source])
        test = bucket < held_out * 1000
        return self.subset(~test), self.subset(test)

    def subset(self, keep: np.ndarray) -> WindowSet:
        return WindowSet(self.events[keep], self.source[keep])

    def real_drums(self) -> np.ndarray:
        """The known drum lines ``(M, T)`` of the windows (empty without a drum line)."""
        if self.events.shape[1] < 3:
            return np.zeros((0, self.events.shape[-1]), dtype=np.int64)
        if not hasattr(self, "_real_drums"):
            drums = self.events[:, 2]
            self._real_drums = drums[drums[:, 0] >= 0]
        return self._real_drums

    def __len__(self) -> int:
        return len(self.events)


def load_windows(path: Path) -> WindowSet:
    blob = np.load(path)
    events = blob["events"].astype(np.int64)
    if events.ndim == 2:
        events = events[:, None]
    return WindowSet(events, blob["source"])


def transpose(events: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift every melodic line of each window by one random interval that keeps it in range.

    events: (B, lines, T) 90-class events. Returns a new array.
    """
    out = events.copy()
    is_note = out >= 2
    is_note[:, 2:] = False  # a drum line is not transposed
    big = np.where(is_note, out, 10_000).reshape(len(out), -1).min(1)
    small = np.where(is_note, out, -1).reshape(len(out), -1).max(1)
    lo = np.maximum(TRANSPOSE_RANGE[0], 2 - big)
    hi = np.minimum(TRANSPOSE_RANGE[1], MELODY_CLASSES - 1 - small)
    hi = np.maximum(hi, lo)
    shift = rng.integers(lo, hi + 1)
    out = np.where(is_note, out + shift[:, None, None], out)
    return out


def one_hot_batch(parts: list[np.ndarray], depths: tuple[int, ...]) -> np.ndarray:
    """[(B, T) classes per part] -> (B, T, sum(depths)) float32; an ``UNKNOWN`` step is
    all zeros (the loss leaves it out)."""
    batch, steps = parts[0].shape
    out = np.zeros((batch, steps, sum(depths)), dtype=np.float32)
    offset = 0
    for events, depth in zip(parts, depths, strict=True):
        b, t = np.meshgrid(np.arange(batch), np.arange(steps), indexing="ij")
        known = events >= 0
        out[b[known], t[known], offset + events[known]] = 1.0
        offset += depth
    return out


def make_batch(windows: WindowSet, index: np.ndarray, parts: tuple[str, ...],
               depths: tuple[int, ...], rng: np.random.Generator, augment: bool = True,
               drums: np.ndarray | None = None) -> np.ndarray:
    """One-hot batch for the model's parts. Drums come from ``drums`` (B, T), else from the
    windows' own drum line; a window without one (none given, or ``UNKNOWN``) takes a
    random known drum window of ``windows`` with probability ``REAL_DRUM_SHARE`` (when
    training, ``augment``) and otherwise one from the drum corpus generator."""
    events = windows.events[index]
    if augment:
        events = transpose(events, rng)
    lines = {"melody": events[:, 0]}
    if events.shape[1] > 1:
        lines["bass"] = events[:, 1]
    if "drums" in parts and drums is None:
        steps = events.shape[-1]
        own = events[:, 2] if events.shape[1] > 2 else np.full((len(index), steps), UNKNOWN)
        missing = own[:, 0] < 0
        if missing.any():
            own = own.copy()
            pool = windows.real_drums() if augment else windows.real_drums()[:0]
            real = missing & (rng.random(len(index)) < REAL_DRUM_SHARE) if len(pool) else \
                np.zeros_like(missing)
            if real.any():
                own[real] = pool[rng.integers(len(pool), size=int(real.sum()))]
            made = missing & ~real
            if made.any():
                own[made] = generate_drum_windows(int(made.sum()), steps // 16, rng)
        lines["drums"] = own
    elif "drums" in parts:
        lines["drums"] = drums
    missing = [p for p in parts if p not in lines]
    if missing:
        raise ValueError(f"the data has no {missing} line; a model with parts {parts} needs "
                         "windows with those lines")
    return one_hot_batch([lines[p] for p in parts], depths)
