"""The section groove's fill: how strong a fill is, which one is chosen, how it is spliced."""

from __future__ import annotations

from engine.music.encoding import DRUM_PITCHES
from engine.music.groove import FILL_FROM, choose_fill, fill_strength, splice_fill
from engine.music.notes import Note

KICK, SNARE, HAT, _, LOW_TOM, MID_TOM, HIGH_TOM, CRASH, RIDE = (p[0] for p in DRUM_PITCHES)


def hits(*pairs: tuple[int, int]) -> list[Note]:
    return [Note(step, pitch, step + 1) for step, pitch in pairs]


ROCK = hits(*[(s, HAT) for s in range(0, 16, 2)], (0, KICK), (8, KICK), (4, SNARE), (12, SNARE))


def test_toms_count_double_and_only_the_last_beat_counts() -> None:
    assert FILL_FROM == 12
    assert fill_strength(ROCK) == 1  # the backbeat on 4 is the groove's own stroke
    assert fill_strength(hits((12, LOW_TOM), (13, MID_TOM), (14, SNARE))) == 5
    assert fill_strength(hits((4, HIGH_TOM), (8, SNARE), (12, HAT), (15, RIDE))) == 0
    assert fill_strength(hits((4, HIGH_TOM)), start=0) == 2


def test_the_strongest_candidate_is_chosen_the_first_on_ties() -> None:
    weak, strong = hits((12, SNARE)), hits((12, SNARE), (14, LOW_TOM))
    also_strong = hits((13, SNARE), (15, HIGH_TOM))
    assert choose_fill([weak, strong, also_strong]) == tuple(strong)
    assert choose_fill([also_strong, strong]) == tuple(also_strong)
    assert choose_fill([]) == ()


def test_the_splice_keeps_the_front_and_the_kick_and_takes_the_fills_strokes() -> None:
    fill = hits((2, HIGH_TOM), (12, SNARE), (13, SNARE), (14, LOW_TOM), (14, HAT), (15, CRASH),
                (15, KICK))
    bar = splice_fill(ROCK + hits((12, KICK)), fill)
    assert [n for n in bar if n.start < 12] == sorted(n for n in ROCK if n.start < 12)
    assert [(n.start, n.pitch) for n in bar if n.start >= 12] == [
        (12, KICK), (12, SNARE), (13, SNARE), (14, LOW_TOM), (15, CRASH)]
    assert list(bar) == sorted(bar)
    assert splice_fill(ROCK, []) == tuple(sorted(n for n in ROCK if n.start < 12))
