"""Property tests for the 90-class melody and 512-class drum encodings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.music.encoding import (
    DRUM_CLASSES,
    DRUM_PITCHES,
    MELODY_CLASSES,
    MELODY_MAX_PITCH,
    MELODY_MIN_PITCH,
    NO_EVENT,
    NOTE_OFF,
    PITCH_TO_DRUM,
    decode_drums,
    decode_melody,
    encode_drums,
    encode_melody,
    fold_pitch,
    one_hot,
)
from engine.music.notes import Note


def on(pitch: int) -> int:
    return pitch - MELODY_MIN_PITCH + 2


def canonical(events: list[int]) -> list[int]:
    """The canonical form of a melody sequence: a NOTE_OFF while nothing sounds means nothing.

    Such NOTE_OFFs (at the start, or after another NOTE_OFF with only holds between) decode
    to no note, so no encoder can give them back; every other sequence is canonical.
    """
    out, sounding = [], False
    for event in events:
        out.append(NO_EVENT if event == NOTE_OFF and not sounding else event)
        if event >= 2:
            sounding = True
        elif event == NOTE_OFF:
            sounding = False
    return out


melody_events = st.lists(st.integers(0, MELODY_CLASSES - 1), min_size=1, max_size=64)
# Biased towards realistic sequences: mostly holds, some note-offs.
sparse_melody_events = st.lists(
    st.one_of(st.just(NO_EVENT), st.just(NO_EVENT), st.just(NOTE_OFF),
              st.integers(2, MELODY_CLASSES - 1)),
    min_size=1, max_size=64)
in_range_pitch = st.integers(MELODY_MIN_PITCH, MELODY_MAX_PITCH)


@st.composite
def monophonic_notes(draw):
    """Non-overlapping notes in range, and a window length."""
    n_steps = draw(st.integers(1, 64))
    notes, step = [], 0
    for gap, length, pitch in draw(st.lists(
            st.tuples(st.integers(0, 6), st.integers(1, 12), in_range_pitch), max_size=12)):
        start = step + gap
        notes.append(Note(start, pitch, start + length))
        step = start + length
    return notes, n_steps


@st.composite
def overlapping_notes(draw):
    n_steps = draw(st.integers(1, 48))
    notes = draw(st.lists(
        st.builds(lambda s, d, p: Note(s, p, s + d),
                  st.integers(0, 47), st.integers(1, 16), in_range_pitch),
        max_size=12))
    return notes, n_steps


# ----------------------------------------------------------------------------- melody


@given(melody_events | sparse_melody_events)
def test_encode_decode_gives_canonical_form(events):
    encoded = encode_melody(decode_melody(events), len(events))
    assert encoded.dtype == np.int64
    assert encoded.tolist() == canonical(events)


@given(melody_events | sparse_melody_events)
def test_canonical_sequences_round_trip_exactly(events):
    events = canonical(events)
    assert canonical(events) == events
    assert encode_melody(decode_melody(events), len(events)).tolist() == events


@given(monophonic_notes())
def test_monophonic_notes_round_trip(case):
    notes, n_steps = case
    expected = [Note(n.start, n.pitch, min(n.end, n_steps)) for n in notes if n.start < n_steps]
    assert decode_melody(encode_melody(notes, n_steps)) == expected


def test_decode_runs_a_note_to_the_next_event():
    events = [on(60), 0, 0, on(62), 0, NOTE_OFF, 0, on(64)]
    assert decode_melody(events, velocity=70) == [
        Note(0, 60, 3, 70), Note(3, 62, 5, 70), Note(7, 64, 8, 70)]


def test_notes_starting_together_keep_the_highest():
    notes = [Note(0, 60, 4), Note(0, 67, 4), Note(0, 64, 8)]
    assert encode_melody(notes, 8).tolist() == [on(67), 0, 0, 0, NOTE_OFF, 0, 0, 0]


def test_a_later_lower_note_is_dropped_while_a_higher_one_sounds():
    notes = [Note(0, 72, 8), Note(2, 60, 12)]
    assert encode_melody(notes, 12).tolist() == [on(72)] + [0] * 7 + [NOTE_OFF] + [0] * 3


def test_a_later_higher_note_cuts_the_sounding_one_and_it_does_not_resume():
    notes = [Note(0, 60, 8), Note(4, 72, 6)]
    assert encode_melody(notes, 8).tolist() == [on(60), 0, 0, 0, on(72), 0, NOTE_OFF, 0]


def test_a_repeated_pitch_is_re_struck():
    notes = [Note(0, 60, 4), Note(4, 60, 8)]
    assert encode_melody(notes, 8).tolist() == [on(60), 0, 0, 0, on(60), 0, 0, 0]


def test_notes_outside_the_window_are_ignored():
    notes = [Note(-2, 70, 3), Note(8, 72, 9)]
    assert encode_melody(notes, 8).tolist() == [NO_EVENT] * 8


@given(overlapping_notes())
def test_overlaps_keep_the_highest_note(case):
    notes, n_steps = case
    decoded = decode_melody(encode_melody(notes, n_steps))
    for out in decoded:
        # Every output note is an input note (possibly cut short) and the highest of
        # those starting on its step.
        starting = [n for n in notes if n.start == out.start]
        assert out.pitch == max(n.pitch for n in starting)
        assert out.end <= max(n.end for n in starting if n.pitch == out.pitch)
        # Nothing higher started while it sounded (it would have cut it short).
        assert not [n for n in notes if out.start < n.start < out.end and n.pitch > out.pitch]
    # An input note that does not sound was beaten by a note at least as high.
    onsets = {n.start for n in decoded}
    for note in notes:
        if note.start < n_steps and note.start not in onsets:
            covering = [d for d in decoded if d.start < note.start < d.end]
            assert covering and covering[0].pitch >= note.pitch


@pytest.mark.parametrize("pitch", range(128))
def test_fold_pitch_moves_by_octaves_into_range(pitch):
    folded = fold_pitch(pitch)
    assert MELODY_MIN_PITCH <= folded <= MELODY_MAX_PITCH
    assert (folded - pitch) % 12 == 0
    if MELODY_MIN_PITCH <= pitch <= MELODY_MAX_PITCH:
        assert folded == pitch
    elif pitch < MELODY_MIN_PITCH:  # the nearest octave inside the range
        assert folded - 12 < MELODY_MIN_PITCH
    else:
        assert folded + 12 > MELODY_MAX_PITCH


def test_encode_folds_pitches_out_of_range():
    notes = [Note(0, 10, 2), Note(2, 120, 4), Note(4, 127, 6)]
    assert encode_melody(notes, 6).tolist() == [on(22), 0, on(108), 0, on(103), 0]
    assert [n.pitch for n in decode_melody(encode_melody(notes, 6))] == [22, 108, 103]


def test_melody_class_layout():
    assert MELODY_CLASSES == 90
    assert encode_melody([Note(0, 21, 1)], 1).tolist() == [2]
    assert encode_melody([Note(0, 108, 1)], 1).tolist() == [89]


# ------------------------------------------------------------------------------ drums


@given(st.lists(st.integers(0, DRUM_CLASSES - 1), min_size=1, max_size=64))
def test_drums_round_trip(events):
    assert encode_drums(decode_drums(events), len(events)).tolist() == events


def test_every_mapped_drum_pitch_encodes_to_its_class():
    assert DRUM_CLASSES == 512
    assert len(PITCH_TO_DRUM) == sum(len(p) for p in DRUM_PITCHES)  # no pitch in two classes
    for drum, pitches in enumerate(DRUM_PITCHES):
        for pitch in pitches:
            assert encode_drums([Note(1, pitch, 2)], 3).tolist() == [0, 1 << drum, 0]


def test_drums_sum_the_classes_struck_and_ignore_unmapped_pitches():
    assert 100 not in PITCH_TO_DRUM
    notes = [Note(0, 36, 1), Note(0, 42, 1), Note(0, 35, 1), Note(0, 100, 1), Note(2, 51, 3),
             Note(5, 38, 6)]
    assert encode_drums(notes, 4).tolist() == [1 + 4, 0, 256, 0]
    assert decode_drums([5], velocity=80) == [Note(0, 36, 1, 80), Note(0, 42, 1, 80)]


def test_one_hot():
    hot = one_hot(np.array([[0, 3, 89]]), MELODY_CLASSES)
    assert hot.shape == (1, 3, 90) and hot.dtype == np.float32
    assert hot.sum() == 3 and hot[0, 1, 3] == 1
