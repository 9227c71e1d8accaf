"""Laying a line of words on a phrase of melody notes.

Every syllable is sung on one note, on several notes in a row (a melisma), or on part of a
long note that is split to carry more than one syllable. The alignment is the cheapest of
all of these, found by dynamic programming over (notes used, syllables placed):

- one syllable on one note costs nothing;
- a melisma costs ``MELISMA`` per extra note, and is only allowed across notes that follow
  each other without a rest (a syllable is not held through silence);
- splitting a note into ``k`` equal parts costs ``SPLIT`` per extra part, and only notes of
  at least ``2k`` sixteenths can be split (no syllable shorter than a sixteenth);
- a stressed syllable on a weak position costs up to ``STRESS``, and an unstressed syllable
  of a longer word on a downbeat a little, so the words' accents fall on the beat.

A line with exactly one syllable per note, no melisma and no split, is an *exact* fit: the
fit-quality figure the benchmark reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.lyrics.phrase import SungNote

STEPS_PER_BEAT = 4
MELISMA = 1.0
SPLIT = 1.5
STRESS = 1.2
MAX_MELISMA = 4
MAX_SPLIT = 4
INFEASIBLE = float("inf")


def beat_strength(beat: float) -> float:
    """How strong a position in a 4/4 bar is: 1 on the downbeat, 0.75 on beat 3, 0.5 on
    beats 2 and 4, 0.25 on off-beat eighths, 0 on sixteenths."""
    pos = beat % 4.0
    if abs(pos) < 1e-6:
        return 1.0
    if abs(pos - 2.0) < 1e-6:
        return 0.75
    if abs(pos - round(pos)) < 1e-6:
        return 0.5
    if abs(pos * 2 - round(pos * 2)) < 1e-6:
        return 0.25
    return 0.0


@dataclass(frozen=True, slots=True)
class SyllableSlot:
    """The notes one syllable is sung on, and how it got them."""

    notes: tuple[SungNote, ...]
    kind: str
    """"note", "melisma" or "split"."""


@dataclass(frozen=True, slots=True)
class Fit:
    cost: float
    slots: tuple[SyllableSlot, ...]

    @property
    def exact(self) -> bool:
        return all(slot.kind == "note" for slot in self.slots)


def _stress_cost(stress: str, beat: float) -> float:
    strength = beat_strength(beat)
    if stress == "1":
        return STRESS * (1.0 - strength)
    if stress == "0":
        return 0.5 * STRESS * strength
    return 0.0  # secondary stress or a monosyllable that may go either way ("2" / "x")


def _legato(a: SungNote, b: SungNote) -> bool:
    return b.start - a.end < 1e-6


def fit_line(stresses: str, notes: list[SungNote] | tuple[SungNote, ...]) -> Fit | None:
    """The cheapest alignment of syllables (one stress mark each: ``1`` stressed, ``0``
    unstressed, ``x`` free) to ``notes``, or None when the line cannot be sung on them."""
    n, s = len(notes), len(stresses)
    if n == 0 or s == 0:
        return None
    # best[i][j]: cheapest cost of singing syllables [0, j) on notes [0, i)
    best = [[INFEASIBLE] * (s + 1) for _ in range(n + 1)]
    back: list[list[tuple[int, int, str] | None]] = [[None] * (s + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for i in range(n):
        for j in range(s):
            here = best[i][j]
            if here == INFEASIBLE:
                continue
            stress_here = _stress_cost(stresses[j], notes[i].start)
            # one syllable over g whole notes (g = 1: a plain note; g > 1: a melisma)
            for g in range(1, min(MAX_MELISMA, n - i) + 1):
                if g > 1 and not _legato(notes[i + g - 2], notes[i + g - 1]):
                    break
                cost = here + stress_here + MELISMA * (g - 1)
                if cost < best[i + g][j + 1]:
                    best[i + g][j + 1] = cost
                    back[i + g][j + 1] = (i, j, "note" if g == 1 else "melisma")
            # k syllables sharing note i, split into equal parts
            steps = round(notes[i].duration * STEPS_PER_BEAT)
            for k in range(2, min(MAX_SPLIT, s - j, steps) + 1):
                part = notes[i].duration / k
                cost = here + SPLIT * (k - 1) + sum(
                    _stress_cost(stresses[j + m], notes[i].start + m * part) for m in range(k))
                if cost < best[i + 1][j + k]:
                    best[i + 1][j + k] = cost
                    back[i + 1][j + k] = (i, j, "split")
    if best[n][s] == INFEASIBLE:
        return None
    slots: list[SyllableSlot] = []
    i, j = n, s
    while i > 0:
        step = back[i][j]
        assert step is not None
        pi, pj, kind = step
        if kind == "split":
            note = notes[pi]
            k = j - pj
            part = note.duration / k
            for m in reversed(range(k)):
                slots.append(SyllableSlot(
                    (SungNote(note.pitch, note.start + m * part, part),), "split"))
        else:
            slots.append(SyllableSlot(tuple(notes[pi:i]), kind))
        i, j = pi, pj
    slots.reverse()
    return Fit(best[n][s], tuple(slots))
