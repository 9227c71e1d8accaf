"""Laying syllables on notes: plain notes, melismas, split notes and stresses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.lyrics.fitting import beat_strength, fit_line
from engine.lyrics.phrase import SungNote


def legato(*durations: float, start: float = 0.0, pitch: int = 60) -> list[SungNote]:
    notes, t = [], start
    for k, d in enumerate(durations):
        notes.append(SungNote(pitch + k, t, d))
        t += d
    return notes


def test_beat_strengths_rank_downbeat_then_beat_three_then_beats_then_offbeats() -> None:
    assert beat_strength(0.0) == beat_strength(8.0) == 1.0
    assert beat_strength(2.0) == 0.75
    assert beat_strength(1.0) == beat_strength(3.0) == 0.5
    assert beat_strength(0.5) == 0.25
    assert beat_strength(0.25) == 0.0


def test_one_syllable_per_note_is_an_exact_fit() -> None:
    fit = fit_line("1x1x", legato(1, 1, 1, 1))
    assert fit is not None and fit.exact
    assert [slot.notes[0].pitch for slot in fit.slots] == [60, 61, 62, 63]


def test_fewer_syllables_sing_a_melisma_over_legato_notes() -> None:
    fit = fit_line("11", legato(1, 1, 1))
    assert fit is not None and not fit.exact
    assert sorted(len(slot.notes) for slot in fit.slots) == [1, 2]
    assert [n for slot in fit.slots for n in slot.notes] == legato(1, 1, 1)


def test_a_melisma_is_not_held_through_a_rest() -> None:
    notes = [SungNote(60, 0, 1), SungNote(62, 2, 1), SungNote(64, 4, 1)]  # rests between
    assert fit_line("11", notes) is None
    assert fit_line("111", notes) is not None


def test_more_syllables_split_long_notes_but_never_below_a_sixteenth() -> None:
    fit = fit_line("1x1x", [SungNote(60, 0, 4.0)])
    assert fit is not None
    assert all(slot.kind == "split" for slot in fit.slots)
    assert [slot.notes[0].start for slot in fit.slots] == [0, 1, 2, 3]
    assert fit_line("11", [SungNote(60, 0, 0.25)]) is None  # a sixteenth cannot be split


def test_stressed_syllables_prefer_strong_beats() -> None:
    pickup = [SungNote(60, 3.5, 0.5), SungNote(62, 4.0, 2.0)]  # an upbeat, then a downbeat
    again = fit_line("01", pickup)   # a-GAIN: stress on the downbeat
    never = fit_line("10", pickup)   # NEV-er: stress on the upbeat
    assert again is not None and never is not None
    assert again.cost < never.cost


def test_nothing_to_sing_on_or_nothing_to_sing() -> None:
    assert fit_line("", legato(1)) is None
    assert fit_line("1", []) is None


@settings(max_examples=60, deadline=None)
@given(durations=st.lists(st.sampled_from([0.25, 0.5, 1.0, 2.0]), min_size=1, max_size=8),
       stresses=st.text(alphabet="01x", min_size=1, max_size=12))
def test_a_fit_covers_every_note_once_in_order(durations, stresses) -> None:
    notes = legato(*durations)
    fit = fit_line(stresses, notes)
    if fit is None:
        return
    assert len(fit.slots) == len(stresses)
    sung = [n for slot in fit.slots for n in slot.notes]
    assert sung[0].start == pytest.approx(notes[0].start)
    assert sum(n.duration for n in sung) == pytest.approx(sum(durations))
    starts = [n.start for n in sung]
    assert starts == sorted(starts)
    for slot in fit.slots:
        assert all(n.duration >= 0.25 - 1e-9 for n in slot.notes)
