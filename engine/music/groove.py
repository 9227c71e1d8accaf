"""A section's groove and the fill that leads out of it, from the model's own drum bars.

A drummer keeps one groove through a section and plays a fill in the bar before the next
one. The MusicVAE decodes a 4-bar drum phrase whose bars each may lean to another style
(a half-time bar, then a rock bar, then a ballad bar), so playing the phrase as decoded
sounds like a drummer who cannot settle.

The conductor (``engine.song.conductor``) plays the first bar of the section's anchor
decode as the groove through the section. Here:

- :func:`choose_fill` picks, among a few decodes of the section's last bar (other noise
  draws of the same z), the one whose last beat is busiest on snare and toms;
- :func:`splice_fill` plays the groove up to that beat, then the groove's kick under the
  fill's snare, tom and crash strokes: the groove keeps time, the model's own strokes
  lead into the change. The end of an inner 4-bar phrase is spliced the same way with
  the anchor phrase's own last beat, a smaller variation.

Pure functions of note lists (drum notes as written by ``encoding.decode_drums``).
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.music.encoding import PITCH_TO_DRUM
from engine.music.notes import STEPS_PER_BAR, Note

KICK, SNARE, CRASH = 0, 1, 7
TOMS = (4, 5, 6)
FILL_DRUMS = (SNARE, *TOMS, CRASH)
FILL_FROM = STEPS_PER_BAR - 4  # a fill takes the bar's last beat


def fill_strength(notes: Sequence[Note], start: int = FILL_FROM) -> int:
    """How much of a fill the bar's back half is: snare strokes count 1, tom strokes 2
    (toms are what says "fill"; a lone backbeat snare is the groove)."""
    score = 0
    for note in notes:
        drum = PITCH_TO_DRUM.get(note.pitch)
        if note.start >= start and drum is not None:
            score += 2 if drum in TOMS else 1 if drum == SNARE else 0
    return score


def choose_fill(candidates: Sequence[Sequence[Note]]) -> tuple[Note, ...]:
    """The candidate bar with the strongest fill (the first on ties); () when none."""
    if not candidates:
        return ()
    best = max(range(len(candidates)), key=lambda i: (fill_strength(candidates[i]), -i))
    return tuple(candidates[best])


def splice_fill(groove: Sequence[Note], fill: Sequence[Note], at: int = FILL_FROM
                ) -> tuple[Note, ...]:
    """The groove up to step ``at``; from there the groove's kick (the foot keeps time)
    under the fill's snare, tom and crash strokes (the hands leave the hats for the fill)."""
    kept = [n for n in groove if n.start < at or PITCH_TO_DRUM.get(n.pitch) == KICK]
    played = [n for n in fill if n.start >= at and PITCH_TO_DRUM.get(n.pitch) in FILL_DRUMS]
    return tuple(sorted(set(kept + played)))
