"""Writing, reading and quantizing standard MIDI files."""

from __future__ import annotations

import random

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.music.encoding import NOTE_OFF, decode_drums, decode_melody
from engine.music.midi_io import (
    DRUM_CHANNEL,
    quantize,
    quantize_to_windows,
    read_midi,
    silent_steps,
    write_midi,
)
from engine.music.notes import Note

SONG = {
    "melody": [Note(0, 72, 4, 100), Note(4, 74, 6, 80), Note(6, 76, 8), Note(8, 79, 20, 127)],
    "bass": [Note(0, 36, 8, 70), Note(8, 43, 16), Note(16, 36, 32)],
    "drums": [Note(0, 36, 1), Note(0, 42, 1), Note(4, 38, 5, 110), Note(8, 36, 9),
              Note(12, 38, 14)],
}


def steps_of(content, name: str) -> list[Note]:
    return quantize(content, mapping={name: name})[name]


def build_midi(path, tracks, *, ticks_per_beat=96, midi_type=1) -> None:
    """Write a file by hand: each track is a list of (absolute tick, message)."""
    midi = mido.MidiFile(type=midi_type, ticks_per_beat=ticks_per_beat)
    for events in tracks:
        track = mido.MidiTrack()
        now = 0
        for tick, message in events:  # kept in the given order at equal ticks
            track.append(message.copy(time=tick - now))
            now = tick
        midi.tracks.append(track)
    midi.save(path)


def note_events(channel, notes, *, jitter=0, seed=0, ticks_per_step=24):
    """(tick, message) pairs for (start_step, pitch, end_step) with off-grid timing."""
    rng = random.Random(seed)
    events = []
    for start, pitch, end in notes:
        on = max(0, start * ticks_per_step + rng.randint(-jitter, jitter))
        off = end * ticks_per_step + rng.randint(-jitter, jitter)
        events.append((on, mido.Message("note_on", channel=channel, note=pitch, velocity=90)))
        events.append((off, mido.Message("note_on", channel=channel, note=pitch, velocity=0)))
    events.sort(key=lambda e: e[0])
    return events


# ---------------------------------------------------------------------------- writing


def test_write_then_read_gives_the_parts_back(tmp_path):
    path = tmp_path / "song.mid"
    write_midi(path, SONG, bpm=96, programs={"melody": 73})
    content = read_midi(path)
    assert [t.name for t in content.tracks] == ["melody", "bass", "drums"]
    assert [t.channel for t in content.tracks] == [0, 1, DRUM_CHANNEL]
    assert [t.program for t in content.tracks] == [73, 33, 0]
    assert [t.is_drum for t in content.tracks] == [False, False, True]
    assert content.tempos == ((0.0, 96.0),)
    assert content.time_signatures == ((0.0, 4, 4),)
    for name, notes in SONG.items():
        assert steps_of(content, name) == sorted(notes)
    first = content.track("melody").notes[1]
    assert (first.start_beat, first.end_beat) == (1.0, 1.5)
    assert first.start_s == pytest.approx(60 / 96) and first.end_s == pytest.approx(1.5 * 60 / 96)
    assert content.duration_beats == 8.0 and content.duration_s == pytest.approx(5.0)


def test_output_is_deterministic(tmp_path):
    write_midi(tmp_path / "a.mid", SONG, bpm=120, lyrics=[(0, "la"), (4, "di")])
    shuffled = {name: random.Random(1).sample(notes, len(notes))
                for name, notes in reversed(SONG.items())}
    write_midi(tmp_path / "b.mid", shuffled, bpm=120, lyrics=[(0, "la"), (4, "di")])
    write_midi(tmp_path / "c.mid", SONG, bpm=120, lyrics=[(0, "la"), (4, "di")])
    a = (tmp_path / "a.mid").read_bytes()
    assert a == (tmp_path / "b.mid").read_bytes() == (tmp_path / "c.mid").read_bytes()


def test_note_offs_come_before_note_ons_at_equal_ticks(tmp_path):
    path = tmp_path / "legato.mid"
    parts = {"melody": [Note(0, 60, 4), Note(4, 60, 8), Note(8, 62, 12), Note(8, 55, 12),
                        Note(12, 60, 16)]}
    write_midi(path, parts, bpm=120)
    track = mido.MidiFile(path).tracks[1]
    tick, seen = 0, {}
    for message in track:
        tick += message.time
        if message.type in ("note_on", "note_off"):
            kinds = seen.setdefault(tick, [])
            kinds.append(message.type)
            assert kinds == sorted(kinds, key=lambda k: k == "note_on"), (tick, kinds)
    assert seen[4 * 120] == ["note_off", "note_on"]
    assert steps_of(read_midi(path), "melody") == sorted(parts["melody"])


def test_same_pitch_overlaps_become_re_strikes(tmp_path):
    path = tmp_path / "overlap.mid"
    parts = {"bass": [Note(0, 40, 8), Note(4, 40, 12), Note(10, 40, 11), Note(10, 40, 14)]}
    write_midi(path, parts, bpm=120)
    assert steps_of(read_midi(path), "bass") == [Note(0, 40, 4), Note(4, 40, 10),
                                                 Note(10, 40, 14)]


def test_channels_programs_and_extra_parts(tmp_path):
    path = tmp_path / "parts.mid"
    parts = {"pad": [Note(0, 60, 16)], "drums": [Note(0, 36, 1)], "melody": [Note(0, 72, 4)],
             "bass": [], "arp": [Note(2, 67, 3)]}
    write_midi(path, parts, bpm=120, channels={"melody": 1, "nothing": 5},
               programs={"pad": 89, "arp": 81, "nothing": 3})
    content = read_midi(path)
    found = {t.name: (t.channel, t.program, len(t.notes)) for t in content.tracks}
    assert [t.name for t in content.tracks] == ["melody", "bass", "drums", "arp", "pad"]
    assert found == {"melody": (1, 0, 1), "bass": (0, 33, 0), "drums": (9, 0, 1),
                     "arp": (2, 81, 1), "pad": (3, 89, 1)}


def test_lyrics_round_trip(tmp_path):
    path = tmp_path / "sung.mid"
    write_midi(path, SONG, bpm=120, lyrics=[(4, "fa "), (0, "héllo "), (8, "ça")])
    assert read_midi(path).lyrics == ((0.0, "héllo "), (1.0, "fa "), (2.0, "ça"))
    track = mido.MidiFile(path).tracks[1]
    assert [m.type for m in track[:4]] == ["track_name", "program_change", "lyrics", "note_on"]


@pytest.mark.parametrize("kwargs", [
    {"bpm": 0}, {"bpm": float("nan")}, {"bpm": 120, "ticks_per_beat": 100 + 1},
    {"bpm": 120, "programs": {"melody": 128}}, {"bpm": 120, "channels": {"bass": 16}},
    {"bpm": 120, "lyrics": [(-1, "x")]},
])
def test_bad_arguments_raise_value_error(tmp_path, kwargs):
    with pytest.raises(ValueError):
        write_midi(tmp_path / "bad.mid", SONG, **kwargs)


def test_notes_before_step_zero_are_refused(tmp_path):
    with pytest.raises(ValueError, match="before step 0"):
        write_midi(tmp_path / "bad.mid", {"melody": [Note(-1, 60, 2)]}, bpm=120)


@st.composite
def songs(draw):
    """Parts whose same-pitch notes do not overlap (what a re-strike would change)."""
    parts = {}
    for name in draw(st.sets(st.sampled_from(["melody", "bass", "drums", "pad"]), min_size=1)):
        notes = []
        for pitch in draw(st.sets(st.integers(0, 127), max_size=4)):
            step = 0
            for gap, length, velocity in draw(st.lists(st.tuples(
                    st.integers(0, 9), st.integers(1, 9), st.integers(1, 127)), max_size=4)):
                notes.append(Note(step + gap, pitch, step + gap + length, velocity))
                step += gap + length
        parts[name] = notes
    return parts


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(songs(), st.sampled_from([96, 480, 960]), st.floats(30, 300))
def test_any_song_round_trips(tmp_path, parts, ticks_per_beat, bpm):
    path = tmp_path / "any.mid"
    write_midi(path, parts, bpm=bpm, ticks_per_beat=ticks_per_beat)
    content = read_midi(path)
    assert content.ticks_per_beat == ticks_per_beat
    assert content.tempos[0][1] == pytest.approx(bpm, rel=1e-5)
    for name, notes in parts.items():
        assert steps_of(content, name) == sorted(notes)
        assert content.track(name).is_drum == (name == "drums")


# ---------------------------------------------------------------------------- reading


def test_tempo_map_and_type_0_files(tmp_path):
    path = tmp_path / "type0.mid"
    events = [
        (0, mido.MetaMessage("track_name", name="piano")),
        (0, mido.MetaMessage("set_tempo", tempo=500_000)),
        (0, mido.Message("program_change", channel=0, program=5)),
        (0, mido.Message("program_change", channel=9, program=0)),
        (0, mido.Message("note_on", channel=0, note=60, velocity=64)),
        (0, mido.Message("note_on", channel=9, note=36, velocity=64)),
        (10, mido.Message("note_off", channel=9, note=36)),
        (96, mido.Message("note_off", channel=0, note=60)),
        (384, mido.MetaMessage("set_tempo", tempo=1_000_000)),
        (576, mido.Message("note_on", channel=0, note=62, velocity=64)),
        (768, mido.Message("note_off", channel=0, note=62)),
    ]
    build_midi(path, [events], midi_type=0)
    content = read_midi(path)
    assert content.midi_type == 0
    assert [(t.name, t.channel, t.program, t.is_drum) for t in content.tracks] == [
        ("piano ch1", 0, 5, False), ("piano ch10", 9, 0, True)]
    late = content.tracks[0].notes[1]
    assert (late.start_beat, late.end_beat) == (6.0, 8.0)
    # 4 beats at 120 bpm, then 2 (4) beats at 60 bpm.
    assert (late.start_s, late.end_s) == (pytest.approx(4.0), pytest.approx(6.0))
    assert content.tempos == ((0.0, 120.0), (4.0, 60.0))
    assert content.duration_s == pytest.approx(6.0)


def test_note_pairing_of_sloppy_files(tmp_path):
    path = tmp_path / "sloppy.mid"
    on = lambda p: mido.Message("note_on", note=p, velocity=80)  # noqa: E731
    off = lambda p: mido.Message("note_off", note=p)  # noqa: E731
    events = [
        (0, on(60)), (96, on(60)), (96, off(60)),  # note-on before note-off at tick 96
        (192, off(60)),
        (192, on(64)), (192, on(64)), (288, off(64)),  # a doubled note-on
        (384, on(67)),  # never released: ends with its track
        (480, mido.MetaMessage("end_of_track")),
    ]
    build_midi(path, [events])
    notes = [(n.pitch, n.start_beat, n.end_beat) for n in read_midi(path).tracks[0].notes]
    assert notes == [(60, 0.0, 1.0), (60, 1.0, 2.0), (64, 2.0, 3.0), (67, 4.0, 5.0)]


def test_unreadable_files_raise_value_error_with_the_path(tmp_path):
    good = tmp_path / "good.mid"
    write_midi(good, SONG, bpm=120)
    data = good.read_bytes()
    cut = tmp_path / "cut.mid"
    for size in range(len(data)):
        cut.write_bytes(data[:size])
        with pytest.raises(ValueError, match="not a readable MIDI file") as caught:
            read_midi(cut)
        assert str(caught.value).startswith(f"{cut}: ")
    text = tmp_path / "notes.txt"
    text.write_text("this is not a MIDI file, just words\n")
    with pytest.raises(ValueError, match=r"notes\.txt: not a readable MIDI file"):
        read_midi(text)
    bad_status = tmp_path / "bad.mid"
    bad_status.write_bytes(data[:22] + b"\x00\xf4" + data[24:])  # undefined status byte
    with pytest.raises(ValueError, match=r"bad\.mid: not a readable MIDI file"):
        read_midi(bad_status)
    with pytest.raises(FileNotFoundError):
        read_midi(tmp_path / "missing.mid")


# -------------------------------------------------------------------------- quantizing


def sloppy_band(path) -> None:
    """Four bars, ticks_per_beat 96, played slightly off the grid."""
    melody = [(0, 76, 2), (2, 79, 4), (4, 81, 8), (8, 79, 10), (10, 76, 12), (12, 74, 16),
              (16, 72, 24), (24, 74, 26), (26, 76, 28), (28, 77, 32), (32, 79, 48),
              (48, 81, 52), (52, 79, 64)]
    pad = [(s, p, s + 8) for s in range(0, 64, 8) for p in (67, 71, 74)]  # half-bar chords
    bass = [(s, 36 + (s // 16) % 2 * 7, s + 8) for s in range(0, 64, 8)]
    drums = [(s, 36 if s % 8 == 0 else 38, s + 1) for s in range(0, 64, 4)]
    build_midi(path, [
        [(0, mido.MetaMessage("set_tempo", tempo=450_000))],
        [(0, mido.MetaMessage("track_name", name="strings")),
         (0, mido.Message("program_change", channel=2, program=48))]
        + note_events(2, pad, jitter=4, seed=2),
        [(0, mido.MetaMessage("track_name", name="flute")),
         (0, mido.Message("program_change", channel=0, program=73))]
        + note_events(0, melody, jitter=7, seed=1),
        [(0, mido.MetaMessage("track_name", name="drum kit"))]
        + note_events(9, drums, jitter=5, seed=4),
        [(0, mido.MetaMessage("track_name", name="bass")),
         (0, mido.Message("program_change", channel=1, program=33))]
        + note_events(1, bass, jitter=9, seed=3),
    ])
    return melody, pad, bass, drums


def test_quantize_finds_the_parts_and_snaps_them_to_the_grid(tmp_path):
    path = tmp_path / "band.mid"
    melody, pad, bass, drums = sloppy_band(path)
    content = read_midi(path)
    assert [t.name for t in content.tracks] == ["strings", "flute", "drum kit", "bass"]
    parts = quantize(content)
    assert list(parts) == ["melody", "bass", "drums"]
    as_tuples = {name: [(n.start, n.pitch, n.end) for n in notes] for name, notes in parts.items()}
    assert as_tuples["melody"] == melody
    assert as_tuples["bass"] == bass
    assert as_tuples["drums"] == drums
    # The pad is higher on average than the bass and has more notes than the melody, but
    # fewer onsets, so it is not taken for the melody.
    assert len(content.track("strings").notes) > len(content.track("flute").notes)


def test_quantize_with_a_mapping(tmp_path):
    path = tmp_path / "band.mid"
    _, pad, _, drums = sloppy_band(path)
    content = read_midi(path)
    parts = quantize(content, mapping={"strings": "melody", 2: "drums"})
    assert list(parts) == ["melody", "drums"]
    assert [(n.start, n.pitch, n.end) for n in parts["melody"]] == sorted(pad)
    assert [(n.start, n.pitch) for n in parts["drums"]] == [(s, p) for s, p, _ in drums]
    with pytest.raises(ValueError, match="no track named 'violin'"):
        quantize(content, mapping={"violin": "melody"})
    with pytest.raises(ValueError, match="no track index 9"):
        quantize(content, mapping={9: "melody"})


def test_quantize_single_track_is_melody_and_rounds_half_up(tmp_path):
    path = tmp_path / "solo.mid"
    build_midi(path, [[
        (0, mido.Message("note_on", note=50, velocity=90)),
        (12, mido.Message("note_off", note=50)),  # half a step: rounds up to step 1
        (36, mido.Message("note_on", note=52, velocity=90)),  # 1.5 steps -> step 2
        (37, mido.Message("note_off", note=52)),  # would be empty: one step long
    ]])
    parts = quantize(read_midi(path))
    assert parts == {"melody": [Note(0, 50, 1), Note(2, 52, 3)], "bass": [], "drums": []}


# ---------------------------------------------------------------------------- windows


def test_windows_encode_parts_and_skip_silent_melody():
    bar = 16
    melody = [Note(0, 72, bar), Note(bar, 74, 2 * bar),  # bars 0 and 1 sound
              Note(3 * bar, 76, 3 * bar + 8),  # bar 2 silent, half of bar 3 sounds
              Note(4 * bar, 77, 4 * bar + 4)]  # a quarter of bar 4
    bass = [Note(b * bar, 36, b * bar + 8) for b in range(5)]
    drums = [Note(b * bar + 4, 38, b * bar + 5) for b in range(5)]
    windows = quantize_to_windows({"melody": melody, "bass": bass, "drums": drums}, 2, 1)
    # Windows start at bars 0..3 (bar 4 holds the last note): their melodies are silent
    # in 0, 16, 24 and 20 of 32 steps; more than half is too much.
    assert len(windows) == 2
    first, second = windows
    assert list(first) == ["melody", "bass", "drums"]
    for window in windows:
        for events in window.values():
            assert events.shape == (32,) and events.dtype == np.int64
    assert decode_melody(first["melody"]) == [Note(0, 72, 16), Note(16, 74, 32)]
    assert decode_melody(second["melody"]) == [Note(0, 74, 16)]
    assert second["melody"][16] == NOTE_OFF
    assert decode_melody(first["bass"]) == [Note(0, 36, 8), Note(16, 36, 24)]
    assert decode_drums(first["drums"]) == [Note(4, 38, 5, 100), Note(20, 38, 21, 100)]

    loose = quantize_to_windows({"melody": melody, "bass": bass}, 2, 1, max_silent_fraction=0.8)
    assert len(loose) == 4 and list(loose[0]) == ["melody", "bass"]
    # A note begun before a window does not count in it.
    assert decode_melody(loose[2]["melody"]) == [Note(16, 76, 24)]
    assert len(quantize_to_windows({"melody": melody}, 1, 1)) == 3  # bars 0, 1 and 3
    assert len(quantize_to_windows({"melody": melody}, 1, 2)) == 1  # bars 0, 2, 4: only 0
    assert quantize_to_windows({"melody": melody}, 8, 1) == []
    assert len(quantize_to_windows({"drums": drums}, 4, 1)) == 2  # no melody, no filter


def test_windows_refuse_unknown_parts_and_bad_sizes():
    with pytest.raises(ValueError, match="unknown parts"):
        quantize_to_windows({"pad": []}, 2, 1)
    with pytest.raises(ValueError):
        quantize_to_windows({"melody": []}, 0, 1)


def test_silent_steps():
    assert silent_steps([0, 0, 40, 0, NOTE_OFF, 0, 41, 0]) == 4
    assert silent_steps([]) == 0


def test_a_user_midi_folder_becomes_training_windows(tmp_path):
    path = tmp_path / "band.mid"
    sloppy_band(path)
    windows = quantize_to_windows(quantize(read_midi(path)), 2, 1)
    assert len(windows) == 3
    assert all(w["melody"][0] >= 2 for w in windows)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_files_read_or_raise_value_error(tmp_path, flips):
    good = tmp_path / "good.mid"
    write_midi(good, SONG, bpm=120, lyrics=[(0, "la")])
    data = bytearray(good.read_bytes())
    for position, value in flips:
        data[position % len(data)] = value
    bad = tmp_path / "flipped.mid"
    bad.write_bytes(bytes(data))
    try:
        content = read_midi(bad)
    except ValueError as error:
        assert str(error).startswith(f"{bad}: not a readable MIDI file (")
    else:
        quantize(content)
