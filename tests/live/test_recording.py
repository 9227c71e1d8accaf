"""A live set recorded as it plays: song.mid, song.wav and song.jsonl next to each other,
readable up to the last complete bar after ``kill -9`` (the process gets no chance to
close anything). `encore live` runs as a subprocess on the JACK dummy server, with the
built-in synth playing through the real (paced) JACK audio callback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mido
import soundfile as sf

from engine.patch import load_patch
from engine.song.conductor import ArrangedBar
from engine.song.event_log import read_bars
from engine.song.stamp import played

ROOT = Path(__file__).resolve().parents[2]
TEMPO = 240.0  # a bar a second

PATCH = f"""
[song]
tempo = {TEMPO}
model = "tiny_trio"

[humanize]
timing_ms = 0.0

[lyrics]
source = "markov"

[voice]
singer = "off"

[osc]
port = 0
"""


def note_ons_by_bar(midi: mido.MidiFile) -> dict[int, list[tuple[int, int]]]:
    """(channel, pitch) of every note-on, by the bar it starts in."""
    out: dict[int, list[tuple[int, int]]] = {}
    tick = 0
    for message in midi.tracks[0]:
        tick += message.time
        if message.type == "note_on" and message.velocity > 0:
            bar = tick // (4 * midi.ticks_per_beat)
            out.setdefault(bar, []).append((message.channel, message.note))
    return out


def test_kill_9_leaves_a_recording_valid_to_the_last_complete_bar(
        jack_server: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    patch = tmp_path / "stage.toml"
    patch.write_text(PATCH)
    record = tmp_path / "set"
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "live", "--patch", str(patch), "--model-dir",
         str(tiny_model_dir), "--no-osc", "--record", str(record)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # five bars played, then the plug is pulled mid-bar
            log = record / "song.jsonl"
            if log.exists() and log.read_text().count('"type":"bar"') >= 5:
                break
            if process.poll() is not None:
                raise AssertionError(f"encore live exited early: {process.communicate()[0]}")
            assert time.monotonic() < deadline, "encore live played no 5 bars within 60 s"
            time.sleep(0.05)
        time.sleep(0.4)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    header, bars = read_bars(record / "song.jsonl")  # a torn last line is tolerated
    stage_patch = load_patch(patch)
    assert header["live"] and len(bars) >= 5

    midi = mido.MidiFile(str(record / "song.mid"))  # parses: a complete file
    assert midi.tracks[0][-1].type == "end_of_track"
    recorded = note_ons_by_bar(midi)
    complete = [b for b in recorded if b + 1 in recorded or b + 2 <= len(bars) - 1]
    assert len(complete) >= 3, recorded.keys()
    channels = {"melody": 0, "bass": 1, "drums": 9, "chords": 2}
    for record_bar in bars:
        bar = record_bar["bar"]
        if bar not in complete or bar == max(recorded):
            continue
        arranged = ArrangedBar.from_dict(bar, record_bar["section"], record_bar)
        logged = sorted((channels[part], n.pitch) for part, notes in played(
            arranged, stage_patch).items() for n in notes)  # a part may rest (rest_in)
        assert sorted(recorded[bar]) == logged, f"bar {bar}"
    # note-ons and note-offs pair up: nothing hangs in the file
    sounding = 0
    for message in midi.tracks[0]:
        if message.type == "note_on" and message.velocity > 0:
            sounding += 1
        elif message.type == "note_off" or (message.type == "note_on" and message.velocity == 0):
            sounding -= 1
    assert sounding == 0

    info = sf.info(str(record / "song.wav"))  # readable, and at least the complete bars long
    assert info.samplerate == 48000 and info.channels == 2
    assert info.duration >= len(complete) * 4 * 60 / TEMPO
    audio, _ = sf.read(str(record / "song.wav"), frames=info.frames)
    assert abs(audio).max() > 0.01  # the internal synth's mix, not silence
