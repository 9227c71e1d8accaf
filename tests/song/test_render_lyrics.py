"""Lyrics in a render: lines in the event log, laid on the melody, lyric events in the MIDI."""

from __future__ import annotations

import itertools
from pathlib import Path

import mido
import pytest

from engine.lyrics.phrase import PhrasePlan
from engine.lyrics.syllables import words
from engine.music.notes import STEPS_PER_BAR, STEPS_PER_QUARTER
from engine.patch import Patch, build_patch
from engine.song.event_log import read_log
from engine.song.render import RenderResult, render_song


def lyric_plans(log: Path) -> list[PhrasePlan]:
    return [PhrasePlan.from_dict(r) for r in read_log(log) if r.get("type") == "lyric"]


def melody_notes(log: Path) -> list[tuple[int, float, float]]:
    """(pitch, start beat, end beat) of every logged melody note."""
    out = []
    for record in read_log(log):
        if record.get("type") == "bar":
            offset = record["bar"] * STEPS_PER_BAR
            for pitch, _vel, start, end in record["notes"]["melody"]:
                out.append((pitch, (offset + start) / STEPS_PER_QUARTER,
                            (offset + end) / STEPS_PER_QUARTER))
    return out


@pytest.fixture(scope="module")
def long_render(short_patch: Patch, tiny_model_dir: Path, tmp_path_factory) -> RenderResult:
    return render_song(short_patch, tmp_path_factory.mktemp("lyrics"), bars=16, seed=5,
                       audio=False, model_dir=tiny_model_dir)


def test_the_log_has_lines_laid_on_the_melody(long_render: RenderResult) -> None:
    plans = lyric_plans(long_render.log)
    assert len(plans) >= 3
    melody = melody_notes(long_render.log)
    for plan in plans:
        assert plan.text and plan.syllables
        for syllable in plan.syllables:
            for note in syllable.notes:  # inside a melody note of the same pitch
                assert any(p == note.pitch and s - 1e-6 <= note.start and note.end <= e + 1e-6
                           for p, s, e in melody), (plan.text, note)


def test_the_chorus_is_sung_again_with_its_words(long_render: RenderResult) -> None:
    chorus = {}
    for record in read_log(long_render.log):
        if record.get("type") == "lyric" and record["section"] == "chorus":
            chorus.setdefault(record["bar"] % 4, []).append(record)
    repeated = [records for records in chorus.values() if len(records) >= 2]
    assert repeated, "no chorus phrase came back in 16 bars"
    for records in repeated:
        assert {r["text"].split()[0] for r in records} == {records[0]["text"].split()[0]}
        assert all(r["fit"]["reused"] for r in records[1:])


def test_the_midi_carries_a_lyric_event_per_syllable_at_its_note(
        long_render: RenderResult) -> None:
    midi = mido.MidiFile(str(long_render.midi))
    events, tick = [], 0
    for message in midi.tracks[1]:
        tick += message.time
        if message.type == "lyrics":
            events.append((tick, message.text))
    plans = lyric_plans(long_render.log)
    expected = [round(s.start * STEPS_PER_QUARTER) * midi.ticks_per_beat // STEPS_PER_QUARTER
                for plan in plans for s in plan.syllables]
    assert [t for t, _ in events] == expected
    sung = "".join(text for _, text in events).replace("-", "").split()
    assert sung == [w for plan in plans for w in words(plan.text)]


def test_lyrics_off_renders_an_instrumental(short_patch: Patch, tiny_model_dir: Path,
                                            tmp_path: Path) -> None:
    patch = build_patch(short_patch.to_dict() | {"lyrics": {"source": "off"}})
    result = render_song(patch, tmp_path, bars=4, seed=5, audio=False,
                         model_dir=tiny_model_dir)
    assert lyric_plans(result.log) == []
    assert not any(m.type == "lyrics" for t in mido.MidiFile(str(result.midi)).tracks
                   for m in t)


def test_unsung_sections_have_no_words(short_patch: Patch, tiny_model_dir: Path,
                                       tmp_path: Path) -> None:
    patch = build_patch(short_patch.to_dict() | {"lyrics": {"source": "markov",
                                                            "sections": ["chorus"]}})
    result = render_song(patch, tmp_path, bars=8, seed=5, audio=False,
                         model_dir=tiny_model_dir)
    assert {p.section for p in lyric_plans(result.log)} <= {"chorus"}


def test_the_voice_sings_the_lines_into_the_wav_at_their_notes(
        short_patch: Patch, tiny_model_dir: Path, tmp_path: Path) -> None:
    """The fallback singer (real espeak-ng and WORLD) mixed into song.wav: the render with
    the voice differs from the one without it where lines are sung, and nowhere before."""
    import numpy as np
    import soundfile as sf

    data = short_patch.to_dict() | {"form": {"sections": ["intro", "verse", "chorus"],
                                             "loop_from": 1,
                                             "lengths": {"intro": 2, "verse": 2, "chorus": 2}}}
    sung = render_song(build_patch(data | {"voice": {"singer": "fallback"}}), tmp_path / "on",
                       bars=6, seed=5, model_dir=tiny_model_dir)
    dry = render_song(build_patch(data | {"voice": {"singer": "off"}}), tmp_path / "off",
                      bars=6, seed=5, model_dir=tiny_model_dir)
    assert sung.singer == "fallback" and dry.singer == ""
    assert sung.vocals.sung == len(lyric_plans(sung.log)) > 0 and sung.vocals.failed == 0
    a, rate = sf.read(str(sung.wav))
    b, _ = sf.read(str(dry.wav))
    n = min(len(a), len(b))
    voice = np.abs(a[:n] - b[:n]).mean(axis=1)
    seconds = 60.0 / short_patch.song.tempo
    first = min(p.start for p in lyric_plans(sung.log)) * seconds
    assert voice[: int((first - 1.0) * rate)].max() < 1e-3  # silent a second before
    for plan in lyric_plans(sung.log):
        span = voice[int(plan.start * seconds * rate): int(plan.end * seconds * rate)]
        assert np.sqrt(np.mean(span ** 2)) > 0.01, plan.text


def test_a_note_held_over_the_bar_line_ends_where_the_next_bar_begins_singing(
        short_patch: Patch) -> None:
    """The melody part may hold a note past its bar while the next bar starts its own (a
    soak found it: "heard" held from beat 2 over the bar line, "cold" on the next bar's
    downbeat, sung out of order and refused by the voice). The line the lyricist sees is
    one note at a time, in order, so every phrase it writes can be sung."""
    from engine.music.notes import Note
    from engine.song.conductor import ArrangedBar, Conductor
    from engine.song.lyrics_track import LyricsTrack, build_writer
    from engine.voice.choose import load_singer

    conductor = Conductor(short_patch, 8, seed=3)
    track = LyricsTrack(build_writer(short_patch.lyrics, 3), short_patch.lyrics)
    bars = [[Note(start=0, pitch=71, end=4), Note(start=4, pitch=69, end=8),
             Note(start=8, pitch=71, end=32)],  # held on into the next bar
            [Note(start=0, pitch=72, end=8), Note(start=4, pitch=74, end=6),  # overlapping
             Note(start=8, pitch=67, end=16)]]
    written = None
    for notes in bars:
        plan = conductor.plan()
        written = track.feed(plan, ArrangedBar(plan.index, plan.position.section,
                                               {"melody": tuple(notes)}, 0)) or written
    assert written is not None
    phrase = written[0]
    sung = [n for s in phrase.syllables for n in s.notes]
    assert all(a.start + a.duration <= b.start + 1e-9 for a, b in itertools.pairwise(sung)), sung
    starts = [s.notes[0].start for s in phrase.syllables]
    assert starts == sorted(set(starts)), starts
    singer = load_singer(short_patch.voice)  # the shipped voice sings it (it refused before)
    assert singer is not None and singer.render(phrase, 120.0).duration > 0
