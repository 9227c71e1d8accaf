"""Offline render: song.mid, song.wav (the real FluidSynth) and song.jsonl.

``rendered`` (tests/song/conftest.py) is one render of the short test patch with the tiny
random-weight trio; the tests here read its files and render again to compare.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from engine.music.midi_io import read_midi
from engine.music.notes import STEPS_PER_BAR, Note
from engine.patch import Patch, load_patch
from engine.song.conductor import PARTS, ArrangedBar
from engine.song.event_log import EventLog, read_bars, read_log
from engine.song.render import CHUNK_FRAMES, TAIL_SECONDS, RenderResult, render_song

REPO = Path(__file__).resolve().parents[2]
FILES = ("song.mid", "song.wav", "song.jsonl")


def digests(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILES}


def bar_seconds(patch: Patch) -> float:
    return 4 * 60.0 / patch.song.tempo


def log_notes(log: Path) -> dict[str, list[Note]]:
    """Every part's notes from the event log, in absolute steps."""
    _, records = read_bars(log)
    notes: dict[str, list[Note]] = {}
    for record in records:
        bar = ArrangedBar.from_dict(record["bar"], record["section"], record)
        for part, part_notes in bar.parts.items():
            notes.setdefault(part, []).extend(
                n.shifted(bar.index * STEPS_PER_BAR) for n in part_notes)
    return notes


def as_restruck(notes: list[Note]) -> list[tuple[int, int, int, int]]:
    """How a MIDI file can hold ``notes``: a note still sounding when the same pitch is
    struck again ends there (a note-off per note-on)."""
    out = []
    for note in notes:
        end = min([note.end] + [m.start for m in notes
                                if m.pitch == note.pitch and note.start < m.start < note.end])
        out.append((note.start, note.pitch, end, note.velocity))
    return sorted(out)


def midi_grid_notes(path: Path) -> dict[str, list[tuple[int, int, int, int]]]:
    """Per track name: (start, pitch, end, velocity) on the 16th grid, read back exactly."""
    content = read_midi(path)
    out = {}
    for track in content.tracks:
        notes = []
        for n in track.notes:
            start, end = n.start_beat * 4, n.end_beat * 4
            assert start == round(start) and end == round(end), "a note off the 16th grid"
            notes.append((round(start), n.pitch, round(end), n.velocity))
        out[track.name] = sorted(notes)
    return out


# ---- determinism ----------------------------------------------------------------------
def test_same_seed_and_patch_give_identical_files(rendered: RenderResult, short_patch: Patch,
                                                  tiny_model_dir: Path, render_args,
                                                  tmp_path: Path) -> None:
    again = render_song(short_patch, tmp_path, model_dir=tiny_model_dir, **render_args)
    assert again.wav is not None
    assert digests(tmp_path) == digests(rendered.midi.parent)


def test_a_subprocess_render_gives_identical_files(rendered: RenderResult,
                                                   short_patch_file: Path,
                                                   tiny_model_dir: Path, render_args,
                                                   tmp_path: Path) -> None:
    command = [sys.executable, "-m", "engine.cli", "render", "--patch", str(short_patch_file),
               "--bars", str(render_args["bars"]), "--seed", str(render_args["seed"]),
               "-o", str(tmp_path), "--model-dir", str(tiny_model_dir)]
    env = {k: v for k, v in os.environ.items() if k != "ENCORE_MODELS"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "song.wav" in done.stdout
    assert digests(tmp_path) == digests(rendered.midi.parent)


def test_another_seed_gives_another_song(rendered: RenderResult, short_patch: Patch,
                                         tiny_model_dir: Path, render_args,
                                         tmp_path: Path) -> None:
    other = render_song(short_patch, tmp_path, bars=render_args["bars"],
                        seed=render_args["seed"] + 1, audio=False, model_dir=tiny_model_dir)
    assert other.wav is None and not (tmp_path / "song.wav").exists()
    assert other.midi.read_bytes() != rendered.midi.read_bytes()


def test_audio_off_writes_the_same_midi_and_log(rendered: RenderResult, short_patch: Patch,
                                                tiny_trio, render_args,
                                                tmp_path: Path) -> None:
    render_song(short_patch, tmp_path, runner=tiny_trio, audio=False, **render_args)
    same = digests(rendered.midi.parent)
    assert (tmp_path / "song.mid").read_bytes() == rendered.midi.read_bytes()
    assert hashlib.sha256((tmp_path / "song.jsonl").read_bytes()).hexdigest() == \
        same["song.jsonl"]


# ---- the WAV --------------------------------------------------------------------------
def test_the_wav_is_stereo_at_the_patch_rate_and_lasts_the_song(
        rendered: RenderResult, short_patch: Patch, render_args) -> None:
    info = sf.info(str(rendered.wav))
    assert info.samplerate == short_patch.audio.sample_rate == 44100
    assert info.channels == 2
    assert info.subtype == "PCM_16"
    music = render_args["bars"] * bar_seconds(short_patch)
    assert rendered.audio_seconds == pytest.approx(music)
    assert music + TAIL_SECONDS <= info.duration < music + TAIL_SECONDS + 2 * CHUNK_FRAMES / 44100
    assert info.frames % CHUNK_FRAMES == 0


def test_the_wav_sounds_in_every_bar_and_does_not_clip(rendered: RenderResult,
                                                       short_patch: Patch, render_args) -> None:
    audio, rate = sf.read(str(rendered.wav), dtype="float32")
    assert np.abs(audio).max() <= 0.99  # the soft clipper's ceiling is 0.98
    bar = round(bar_seconds(short_patch) * rate)
    for index in range(render_args["bars"]):
        chunk = audio[index * bar:(index + 1) * bar]
        rms = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2)))
        assert rms > 1e-3, f"bar {index} is silent (rms {rms})"
    assert not np.array_equal(audio[:, 0], audio[:, 1])  # stereo, not doubled mono


def test_a_48k_patch_renders_at_48k(tiny_trio, tmp_path: Path) -> None:
    patch = load_patch("night_drive", validate_files=True)
    result = render_song(patch, tmp_path, bars=1, runner=tiny_trio)
    info = sf.info(str(result.wav))
    assert info.samplerate == 48000 and info.channels == 2
    assert info.duration >= bar_seconds(patch) + TAIL_SECONDS


# ---- the MIDI file ----------------------------------------------------------------------
def test_the_midi_has_a_track_per_part_with_the_patch_programs(rendered: RenderResult,
                                                               short_patch: Patch) -> None:
    midi = mido.MidiFile(str(rendered.midi))
    assert midi.type == 1
    tempos = [m.tempo for m in midi.tracks[0] if m.type == "set_tempo"]
    assert tempos == [mido.bpm2tempo(short_patch.song.tempo)]
    parts = midi.tracks[1:]
    assert [t.name for t in parts] == ["melody", "bass", "drums", "chords"]
    for track in parts:
        settings = getattr(short_patch.parts, track.name)
        programs = [m.program for m in track if m.type == "program_change"]
        assert programs == [settings.program], track.name
        channels = {m.channel for m in track if m.type in ("note_on", "note_off",
                                                           "program_change")}
        assert channels == {settings.channel - 1}, track.name
        assert sum(m.type == "note_on" for m in track) > 0, track.name
    drums = next(t for t in parts if t.name == "drums")
    assert {m.channel for m in drums if m.type == "note_on"} == {9}  # channel 10


def test_the_midi_holds_the_notes_of_the_log(rendered: RenderResult) -> None:
    from_log = log_notes(rendered.log)
    from_midi = midi_grid_notes(rendered.midi)
    assert set(from_midi) == set(PARTS)
    for part in PARTS:
        assert from_midi[part] == as_restruck(from_log[part]), part


def test_a_muted_part_is_left_out_of_the_midi_but_logged(short_patch: Patch, tiny_trio,
                                                         tmp_path: Path) -> None:
    parts = short_patch.parts
    patch = dataclasses.replace(short_patch, parts=dataclasses.replace(
        parts, chords=dataclasses.replace(parts.chords, mute=True)))
    render_song(patch, tmp_path, bars=4, seed=1, runner=tiny_trio, audio=False)
    names = [t.name for t in mido.MidiFile(str(tmp_path / "song.mid")).tracks[1:]]
    assert names == ["melody", "bass", "drums"]
    assert log_notes(tmp_path / "song.jsonl")["chords"]  # still played, silently


def test_a_part_on_channel_16_is_written_on_channel_16(short_patch: Patch, tiny_trio,
                                                       tmp_path: Path) -> None:
    parts = short_patch.parts
    patch = dataclasses.replace(short_patch, parts=dataclasses.replace(
        parts, chords=dataclasses.replace(parts.chords, channel=16)))
    render_song(patch, tmp_path, bars=1, runner=tiny_trio, audio=False)
    chords = mido.MidiFile(str(tmp_path / "song.mid")).tracks[4]
    assert chords.name == "chords"
    assert {m.channel for m in chords if m.type == "note_on"} == {15}


def test_a_muted_part_is_not_heard(short_patch: Patch, tiny_trio, tmp_path: Path) -> None:
    parts = short_patch.parts
    silent = dataclasses.replace(short_patch, parts=dataclasses.replace(
        parts, **{name: dataclasses.replace(getattr(parts, name), mute=True)
                  for name in PARTS}))
    result = render_song(silent, tmp_path, bars=1, seed=1, runner=tiny_trio)
    audio, _ = sf.read(str(result.wav), dtype="float32")
    assert np.abs(audio).max() < 1e-3


# ---- the event log ----------------------------------------------------------------------
def test_the_log_has_a_header_and_a_line_per_bar(rendered: RenderResult, short_patch: Patch,
                                                 render_args) -> None:
    lines = rendered.log.read_text(encoding="utf-8").splitlines()
    everything = [json.loads(line) for line in lines]
    assert {r["type"] for r in everything[1:]} <= {"bar", "lyric"}
    records = [r for r in everything if r["type"] != "lyric"]  # lyrics: test_render_lyrics
    assert len(records) == 1 + render_args["bars"]
    header = records[0]
    assert header["type"] == "header" and header["version"] == 1
    assert header["seed"] == render_args["seed"] and header["bars"] == render_args["bars"]
    assert header["bpm"] == short_patch.song.tempo
    assert header["model"] == "tiny_trio" and header["model_bars"] == 4
    assert header["patch"] == short_patch.to_dict()
    assert [r["type"] for r in records[1:]] == ["bar"] * render_args["bars"]
    assert [r["bar"] for r in records[1:]] == list(range(render_args["bars"]))
    assert [r["section"] for r in records[1:]] == ["verse", "verse", "chorus", "chorus"] * 2
    for record in records[1:]:
        assert set(record["notes"]) == set(PARTS)
        assert len(record["z"]) == header["z_size"]


def test_a_torn_last_line_is_tolerated(rendered: RenderResult, render_args,
                                       tmp_path: Path) -> None:
    text = rendered.log.read_text(encoding="utf-8")
    torn = tmp_path / "torn.jsonl"
    torn.write_text(text[:len(text) - len(text.splitlines()[-1]) // 2 - 1], encoding="utf-8")
    header, bars = read_bars(torn)
    assert header["seed"] == render_args["seed"]
    whole = [json.loads(line) for line in text.splitlines()[:-1]]
    assert [b["bar"] for b in bars] == [r["bar"] for r in whole if r.get("type") == "bar"]
    assert len(bars) >= render_args["bars"] - 1


def test_a_bad_line_before_the_end_is_an_error(rendered: RenderResult, tmp_path: Path) -> None:
    lines = rendered.log.read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], lines[1][:20], *lines[2:]]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        list(read_log(bad))


def test_a_log_without_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "song.jsonl"
    with EventLog(path) as log:
        log.write({"type": "bar", "bar": 0})
    with pytest.raises(ValueError, match="no header line"):
        read_bars(path)


def test_a_closed_log_refuses_writes(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "x.jsonl")
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.write({"type": "bar"})


# ---- arguments ------------------------------------------------------------------------
@pytest.mark.parametrize("bars", [0, -1])
def test_bars_must_be_positive(short_patch: Patch, tiny_trio, tmp_path: Path,
                               bars: int) -> None:
    with pytest.raises(ValueError, match="bars must be at least 1"):
        render_song(short_patch, tmp_path, bars=bars, runner=tiny_trio)
