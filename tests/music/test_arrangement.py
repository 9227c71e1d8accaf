"""Key detection, transposition, scale snapping, chords, velocity and humanizing."""

from __future__ import annotations

import numpy as np
import pytest

from engine.music.arrangement import (
    apply_velocity,
    choose_chords,
    derive_chords,
    detect_key,
    diatonic_chords,
    humanize,
    in_key_ratio,
    key_name,
    snap_to_scale,
    transpose_to_key,
    transposition_interval,
    voice_lead,
    voice_movement,
)
from engine.music.notes import Note


def line(pitches, durations, start=0, velocity=90):
    notes, t = [], start
    for pitch, duration in zip(pitches, durations, strict=True):
        notes.append(Note(t, pitch, t + duration, velocity))
        t += duration
    return notes


C_SCALE = line([60, 62, 64, 65, 67, 69, 71, 72], [4] * 8)
A_MINOR = line([69, 72, 76, 81, 80, 81, 83, 84, 83, 81, 76, 74, 72, 71, 69],
               [4, 2, 2, 4, 2, 4, 2, 2, 2, 2, 4, 2, 2, 2, 8])
# I-IV-V-I in C: whole-bar bass roots, melody on chord tones.
BASS_1451 = [Note(0, 36, 16), Note(16, 41, 32), Note(32, 43, 48), Note(48, 36, 64)]
MELODY_1451 = line([64, 67, 69, 72, 71, 74, 72], [8, 8, 8, 8, 8, 8, 16])


# --------------------------------------------------------------------------- key


def test_detect_key_c_major_scale():
    assert detect_key(C_SCALE) == (0, "major")


def test_detect_key_a_minor_melody():
    assert detect_key(A_MINOR) == (9, "minor")
    assert key_name(*detect_key(A_MINOR)) == "A minor"


@pytest.mark.parametrize("shift", range(12))
def test_detect_key_follows_transposition(shift):
    assert detect_key([Note(n.start, n.pitch + shift, n.end) for n in C_SCALE]) == (shift, "major")
    assert detect_key([Note(n.start, n.pitch + shift, n.end) for n in A_MINOR]) == (
        (9 + shift) % 12, "minor")


def test_detect_key_no_notes():
    assert detect_key([]) == (0, "major")


# --------------------------------------------------------------------------- transposition


@pytest.mark.parametrize(("to_key", "expected"), [
    ((4, "major"), 4), ((7, "major"), -5), ((6, "major"), -6), ((5, "major"), 5),
    ((9, "minor"), 0), ((4, "minor"), -5), ((0, "major"), 0),
])
def test_transposition_interval_is_smallest(to_key, expected):
    assert transposition_interval((0, "major"), to_key) == expected


def intervals(notes):
    pitches = [n.pitch for n in sorted(notes)]
    return [b - a for a, b in zip(pitches, pitches[1:], strict=False)]


@pytest.mark.parametrize("to_tonic", range(12))
def test_transpose_keeps_intervals_registers_and_drums(to_tonic):
    parts = {"melody": MELODY_1451, "bass": BASS_1451, "drums": [Note(0, 36, 1), Note(4, 38, 5)]}
    out = transpose_to_key(parts, (0, "major"), (to_tonic, "major"))
    assert out["drums"] == parts["drums"]
    for name, (low, high) in (("melody", (60, 84)), ("bass", (28, 48))):
        assert intervals(out[name]) == intervals(parts[name])
        assert all(low <= n.pitch <= high for n in out[name])
        assert [(n.start, n.end, n.velocity) for n in out[name]] == [
            (n.start, n.end, n.velocity) for n in parts[name]]
    assert detect_key(out["melody"] + out["bass"]) == (to_tonic, "major")


def test_transpose_register_is_a_parameter():
    low_melody = [Note(0, 40, 4), Note(4, 43, 8)]
    out = transpose_to_key({"melody": low_melody, "lead": low_melody}, (0, "major"),
                           (2, "major"), registers={"melody": (72, 96)})
    assert [n.pitch for n in out["melody"]] == [78, 81]
    assert [n.pitch for n in out["lead"]] == [42, 45]  # no register: only transposed


# --------------------------------------------------------------------------- snapping


CHROMATIC = line([60, 61, 62, 63, 64, 66, 67, 68, 69, 70, 71, 72, 73, 74],
                 [1, 1, 2, 1, 4, 1, 4, 2, 4, 1, 2, 8, 1, 4])


def test_snap_strength_zero_without_goal_keeps_everything():
    assert snap_to_scale(CHROMATIC, 0, "major", 0.0, rng=1, min_ratio=None) == sorted(CHROMATIC)


def test_snap_strength_one_puts_every_note_in_key_by_a_semitone():
    out = snap_to_scale(CHROMATIC, 0, "major", 1.0, rng=1)
    assert in_key_ratio(out, 0, "major") == 1.0
    for before, after in zip(sorted(CHROMATIC), out, strict=True):
        assert abs(before.pitch - after.pitch) <= 1
        assert (before.start, before.end) == (after.start, after.end)


def test_snap_meets_goal_and_keeps_short_chromatic_notes():
    assert in_key_ratio(CHROMATIC, 0, "major") < 0.9
    out = snap_to_scale(CHROMATIC, 0, "major", 0.0, rng=3, min_ratio=0.9)
    assert in_key_ratio(out, 0, "major") >= 0.9
    changed = [(a, b) for a, b in zip(sorted(CHROMATIC), out, strict=True) if a != b]
    # only as many as needed (13 of 14 notes in key: 5 of the 6 out-of-key ones), the
    # longest first; in-key notes never move
    assert len(changed) == 5
    kept = [n for n in out if n.pitch % 12 in (1, 3, 6, 8, 10)]
    assert all(n.duration == 1 for n in kept)
    assert all(a.pitch % 12 in (1, 3, 6, 8, 10) for a, _ in changed)


def test_snap_is_seeded():
    a = snap_to_scale(CHROMATIC, 0, "major", 0.5, rng=7, min_ratio=None)
    b = snap_to_scale(CHROMATIC, 0, "major", 0.5, rng=7, min_ratio=None)
    assert a == b
    results = {tuple(snap_to_scale(CHROMATIC, 0, "major", 0.5, rng=s, min_ratio=None))
               for s in range(10)}
    assert len(results) > 1


def test_snap_avoids_repeating_a_neighbour():
    # C# between C and E: D (not C, a repeat of the previous note)
    out = snap_to_scale(line([60, 61, 64], [4, 4, 4]), 0, "major", 1.0)
    assert [n.pitch for n in out] == [60, 62, 64]


# --------------------------------------------------------------------------- chords


def test_chords_for_i_iv_v_i_in_c():
    spans = choose_chords(MELODY_1451, BASS_1451, 0, "major")
    assert [s.chord.name for s in spans] == ["C", "F", "G", "C"]
    assert [(s.start, s.end) for s in spans] == [(0, 16), (16, 32), (32, 48), (48, 64)]


def test_chords_follow_the_bass_without_melody():
    spans = choose_chords([], BASS_1451, 0, "major")
    assert [s.chord.name for s in spans] == ["C", "F", "G", "C"]


def test_two_chords_in_a_bar_when_the_bass_moves_at_the_half():
    bass = [Note(0, 45, 8), Note(8, 38, 16), Note(16, 43, 32)]
    melody = line([72, 76, 74, 77, 74, 71], [4, 4, 4, 4, 8, 8])
    names = [(s.start, s.chord.name) for s in choose_chords(melody, bass, 0, "major")]
    assert names == [(0, "Am"), (8, "Dm"), (16, "G")]


def test_sevenths_and_minor_key():
    bass = [Note(0, 43, 16)]
    melody = line([71, 77, 74, 77], [4, 4, 4, 4])  # B F D F over G: G7
    assert [s.chord.name for s in choose_chords(melody, bass, 0, "major", sevenths=True)] == [
        "G7"]
    assert [s.chord.name for s in choose_chords(melody, bass, 0, "major")] == ["G"]
    # A minor: i - iv - V (harmonic-minor dominant, the melody has G#) - i
    bass = [Note(0, 45, 16), Note(16, 38, 32), Note(32, 40, 48), Note(48, 45, 64)]
    melody = line([72, 76, 74, 77, 68, 71, 69], [8, 8, 8, 8, 8, 8, 16])
    assert [s.chord.name for s in choose_chords(melody, bass, 9, "minor")] == [
        "Am", "Dm", "E", "Am"]


def test_diatonic_chords_of_c_major():
    names = [c.name for c in diatonic_chords(0, "major")]
    assert names == ["C", "Dm", "Em", "F", "G", "Am", "Bdim"]


def test_derive_chords_voicing_range_span_and_smoothness():
    notes = derive_chords(MELODY_1451, BASS_1451, 0, "major")
    assert all(48 <= n.pitch <= 72 for n in notes)
    by_span: dict[tuple[int, int], list[int]] = {}
    for n in notes:
        by_span.setdefault((n.start, n.end), []).append(n.pitch)
    assert list(by_span) == [(0, 16), (16, 32), (32, 48), (48, 64)]
    voiced = [tuple(sorted(p)) for p in by_span.values()]
    assert [sorted({p % 12 for p in v}) for v in voiced] == [[0, 4, 7], [0, 5, 9], [2, 7, 11],
                                                             [0, 4, 7]]
    smooth = sum(voice_movement(a, b) for a, b in zip(voiced, voiced[1:], strict=False))
    roots = [48, 53, 55, 48]  # naive root position: C3 E3 G3, F3 A3 C4, G3 B3 D4, C3 E3 G3
    naive = [(r, r + 4, r + 7) for r in roots]
    naive_move = sum(voice_movement(a, b) for a, b in zip(naive, naive[1:], strict=False))
    assert smooth < naive_move
    assert smooth <= 12


def test_voice_lead_keeps_common_tones():
    chords = [c for c in diatonic_chords(0, "major") if c.name in ("C", "Am")]
    first, second = voice_lead(chords)
    assert len(set(first) & set(second)) == 2  # C-E shared, G moves to A


def test_derive_chords_absolute_steps_and_n_bars():
    melody = [n.shifted(32) for n in MELODY_1451[:2]]
    bass = [n.shifted(32) for n in BASS_1451[:1]]
    notes = derive_chords(melody, bass, 0, "major", n_bars=3)
    assert min(n.start for n in notes) == 0 and max(n.end for n in notes) == 48
    assert {n.pitch % 12 for n in notes if n.start >= 32} == {0, 4, 7}


# --------------------------------------------------------------------------- dynamics


def test_apply_velocity_accents():
    notes = [Note(s, 60, s + 1, 100) for s in (0, 4, 8, 2, 1, 16)]
    v = {n.start: n.velocity for n in apply_velocity(notes, base=80)}
    assert v[0] > v[8] > v[4] > v[2] > v[1]
    assert v[16] == v[0]
    own = apply_velocity(notes, base=None)
    assert own[0].velocity == 112
    assert apply_velocity([Note(0, 60, 1, 127)], base=None)[0].velocity == 127


def test_humanize_is_seeded_and_bounded():
    notes = [Note(s, 60 + s % 5, s + 2, 90) for s in range(0, 64, 2)]
    a = humanize(notes, timing_ms=10, velocity=8, bpm=120, rng=42)
    b = humanize(notes, timing_ms=10, velocity=8, bpm=120, rng=np.random.default_rng(42))
    assert a == b
    assert a != humanize(notes, timing_ms=10, velocity=8, bpm=120, rng=43)
    offsets = [o for _, o in a]
    assert max(abs(o) for o in offsets) <= 0.010
    assert np.std(offsets) > 0.001
    for (note, _), original in zip(a, notes, strict=True):
        assert (note.start, note.pitch, note.end) == (original.start, original.pitch,
                                                       original.end)
        assert abs(note.velocity - original.velocity) <= 8
    # at a fast tempo the jitter stays within a quarter of a 16th step
    fast = humanize(notes, timing_ms=50, velocity=0, bpm=240, rng=1)
    assert max(abs(o) for _, o in fast) <= 0.25 * 60 / 240 / 4 + 1e-12
    assert all(n.velocity == 90 for n, _ in fast)
