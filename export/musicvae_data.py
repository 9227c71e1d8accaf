"""Training data for MusicVAE: cached windows, held-out split, augmentation, batches."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.music.encoding import MELODY_CLASSES
from export.drum_corpus import generate_drum_windows

TRANSPOSE_RANGE = (-5, 6)  # semitones, inclusive


@dataclass
class WindowSet:
    """Encoded windows ``(N, lines, T)`` (melody[, bass]) and the piece each came from."""

    events: np.ndarray
    source: np.ndarray

    def split(self, held_out: float = 0.1) -> tuple[WindowSet, WindowSet]:
        """Split by piece (never by window, so no piece is in both halves)."""
        bucket = np.array([zlib.crc32(s.encode()) % 1000 for s in self.source])
        test = bucket < held_out * 1000
        return (WindowSet(self.events[~test], self.source[~test]),
                WindowSet(self.events[test], self.source[test]))

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
    big = np.where(is_note, out, 10_000).reshape(len(out), -1).min(1)
    small = np.where(is_note, out, -1).reshape(len(out), -1).max(1)
    lo = np.maximum(TRANSPOSE_RANGE[0], 2 - big)
    hi = np.minimum(TRANSPOSE_RANGE[1], MELODY_CLASSES - 1 - small)
    hi = np.maximum(hi, lo)
    shift = rng.integers(lo, hi + 1)
    out = np.where(is_note, out + shift[:, None, None], out)
    return out


def one_hot_batch(parts: list[np.ndarray], depths: tuple[int, ...]) -> np.ndarray:
    """[(B, T) classes per part] -> (B, T, sum(depths)) float32."""
    batch, steps = parts[0].shape
    out = np.zeros((batch, steps, sum(depths)), dtype=np.float32)
    offset = 0
    for events, depth in zip(parts, depths, strict=True):
        b, t = np.meshgrid(np.arange(batch), np.arange(steps), indexing="ij")
        out[b, t, offset + events] = 1.0
        offset += depth
    return out


def make_batch(windows: WindowSet, index: np.ndarray, parts: tuple[str, ...],
               depths: tuple[int, ...], rng: np.random.Generator, augment: bool = True,
               drums: np.ndarray | None = None) -> np.ndarray:
    """One-hot batch for the model's parts. Drums come from ``drums`` (B, T) or, when the
    model has a drum part and none are given, from the drum corpus generator."""
    events = windows.events[index]
    if augment:
        events = transpose(events, rng)
    lines = {"melody": events[:, 0]}
    if events.shape[1] > 1:
        lines["bass"] = events[:, 1]
    if "drums" in parts:
        steps = events.shape[-1]
        lines["drums"] = drums if drums is not None else generate_drum_windows(
            len(index), steps // 16, rng)
    missing = [p for p in parts if p not in lines]
    if missing:
        raise ValueError(f"the data has no {missing} line; a model with parts {parts} needs "
                         "windows with those lines")
    return one_hot_batch([lines[p] for p in parts], depths)
