"""Magenta-identical one-hot encodings on a 16th-note grid.

Melody (and bass), 90 classes: 0 = no event (hold, or stay silent), 1 = note off,
2..89 = note on for MIDI pitch ``class - 2 + 21`` (A0..C8). Overlapping notes keep the
highest one sounding (a skyline). Magenta's extractor differs in one case: there any later
onset cuts the sounding note, while here a lower note is dropped while a higher one sounds,
so a melody read from a chordal track keeps its top line.

Drums, 512 classes: 9 drum classes (kick, snare, closed hat, open hat, low tom, mid tom,
high tom, crash, ride); a step's class is the sum of ``2**drum`` over the drums struck.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from engine.music.notes import Note, fold_into

MELODY_MIN_PITCH = 21
MELODY_MAX_PITCH = 108
NO_EVENT = 0
NOTE_OFF = 1
MELODY_CLASSES = MELODY_MAX_PITCH - MELODY_MIN_PITCH + 1 + 2  # 90

DRUM_NAMES = ("kick", "snare", "closed_hat", "open_hat", "low_tom", "mid_tom", "high_tom",
              "crash", "ride")
# General MIDI pitches per drum class; the first one is written when decoding (Magenta's map).
DRUM_PITCHES: tuple[tuple[int, ...], ...] = (
    (36, 35),
    (38, 27, 28, 31, 32, 33, 34, 37, 39, 40, 56, 65, 66, 75, 85),
    (42, 44, 54, 68, 69, 70, 71, 73, 78, 80, 22),
    (46, 67, 72, 74, 79, 81, 26),
    (45, 29, 41, 43, 61, 64, 84),
    (48, 47, 60, 63, 77, 86, 87),
    (50, 30, 62, 76, 83),
    (49, 52, 55, 57, 58),
    (51, 53, 59, 82),
)
DRUM_CLASSES = 2 ** len(DRUM_PITCHES)  # 512
PITCH_TO_DRUM: dict[int, int] = {p: i for i, ps in enumerate(DRUM_PITCHES) for p in ps}

PART_DEPTHS = {"melody": MELODY_CLASSES, "bass": MELODY_CLASSES, "drums": DRUM_CLASSES}


def encode_melody(notes: Iterable[Note], n_steps: int) -> np.ndarray:
    """Notes with absolute steps -> ``(n_steps,)`` int64 classes, monophonic.

    Overlaps keep the highest note: of notes starting on the same step only the highest
    sounds; a later, lower note is dropped while a higher one still sounds; a later,
    higher note cuts the sounding one short. A cut-short note does not resume. Pitches
    outside A0..C8 are folded into range by octaves.
    """
    events = np.full(n_steps, NO_EVENT, dtype=np.int64)
    by_start: dict[int, Note] = {}
    for note in notes:
        if 0 <= note.start < n_steps:
            best = by_start.get(note.start)
            if best is None or (note.pitch, note.end) > (best.pitch, best.end):
                by_start[note.start] = note
    sounding: Note | None = None
    for start in sorted(by_start):
        note = by_start[start]
        if sounding is not None and sounding.end > start and sounding.pitch >= note.pitch:
            continue
        if sounding is not None and sounding.end < start:
            events[sounding.end] = NOTE_OFF
        events[start] = fold_pitch(note.pitch) - MELODY_MIN_PITCH + 2
        sounding = note
    if sounding is not None and sounding.end < n_steps:
        events[sounding.end] = NOTE_OFF
    return events


def decode_melody(events: Sequence[int] | np.ndarray, velocity: int = 90) -> list[Note]:
    """``(n_steps,)`` classes -> notes with absolute steps; a note runs to the next event."""
    notes: list[Note] = []
    pitch, start = -1, 0
    for step, event in enumerate(int(e) for e in events):
        if event == NO_EVENT:
            continue
        if pitch >= 0:
            notes.append(Note(start, pitch, step, velocity))
            pitch = -1
        if event >= 2:
            pitch, start = event - 2 + MELODY_MIN_PITCH, step
    if pitch >= 0:
        notes.append(Note(start, pitch, len(events), velocity))
    return notes


def fold_pitch(pitch: int) -> int:
    """``pitch`` moved by octaves into the melody encoding's range (A0..C8)."""
    return fold_into(pitch, MELODY_MIN_PITCH, MELODY_MAX_PITCH)


def encode_drums(notes: Iterable[Note], n_steps: int) -> np.ndarray:
    """Drum notes (GM pitches) with absolute steps -> ``(n_steps,)`` int64 classes 0..511.

    Pitches that map to no drum class are ignored.
    """
    events = np.zeros(n_steps, dtype=np.int64)
    for note in notes:
        drum = PITCH_TO_DRUM.get(note.pitch)
        if drum is not None and 0 <= note.start < n_steps:
            events[note.start] |= 1 << drum
    return events


def decode_drums(events: Sequence[int] | np.ndarray, velocity: int = 100) -> list[Note]:
    """``(n_steps,)`` classes -> one-step drum notes at each class's first GM pitch."""
    notes: list[Note] = []
    for step, event in enumerate(int(e) for e in events):
        for drum, pitches in enumerate(DRUM_PITCHES):
            if event >> drum & 1:
                notes.append(Note(step, pitches[0], step + 1, velocity))
    return notes


def one_hot(events: np.ndarray, depth: int) -> np.ndarray:
    """``(..., T)`` int classes -> ``(..., T, depth)`` float32 one-hot."""
    return np.eye(depth, dtype=np.float32)[events]
