"""`encore replay`: song.mid and song.wav made again from a set's event log alone.

A render's log replays to the render's files byte for byte; a torn log replays up to its
last complete bar; a live set (a real Show, its MIDI caught by in-memory ports, steered
over real OSC datagrams) replays to the notes its ports were sent, with the tablet's mute,
level and tempo where the show put them; bad logs are refused with a reason.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from engine.cli import main
from engine.live.midi_ports import MemoryPort
from engine.live.osc_control import encode_message
from engine.live.show import Show
from engine.lyrics.phrase import PhrasePlan
from engine.music.notes import STEPS_PER_BAR, STEPS_PER_QUARTER
from engine.patch import parse_patch
from engine.song.lyrics_track import lyric_events
from engine.song.render import SAFETY_SECONDS, RenderResult
from engine.song.replay import replay_set

TICKS_PER_STEP = 480 // STEPS_PER_QUARTER
BAR_TICKS = STEPS_PER_BAR * TICKS_PER_STEP


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def write_log(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))
    return path


def midi_events(path: Path) -> dict[str, list[tuple[int, str, tuple]]]:
    """Per track name (the first track is "conductor"): (absolute tick, type, fields) of
    every message but the end of track, parsed with mido."""
    out = {}
    for n, track in enumerate(mido.MidiFile(str(path)).tracks):
        name = next((m.name for m in track if m.type == "track_name"), "conductor" if n == 0
                    else f"track {n}")
        tick, events = 0, []
        for message in track:
            tick += message.time
            if message.type != "end_of_track":
                fields = message.dict()
                fields.pop("time")
                events.append((tick, message.type, tuple(sorted(fields.items()))))
        out[name] = events
    return out


def note_ons(path: Path) -> set[tuple[int, int, int, int]]:
    """(channel, step, pitch, velocity) of every note-on in a MIDI file."""
    out = set()
    for events in midi_events(path).values():
        for tick, kind, fields in events:
            f = dict(fields)
            if kind == "note_on" and f["velocity"] > 0:
                assert tick % TICKS_PER_STEP == 0
                out.add((f["channel"], tick // TICKS_PER_STEP, f["note"], f["velocity"]))
    return out


def lyrics_of(path: Path) -> list[tuple[int, str]]:
    return [(tick, dict(fields)["text"]) for events in midi_events(path).values()
            for tick, kind, fields in events if kind == "lyrics"]


# ---- a render's log ---------------------------------------------------------------------
def test_a_render_replays_to_its_files_byte_for_byte(rendered: RenderResult,
                                                     tmp_path: Path) -> None:
    result = replay_set(rendered.log, tmp_path)
    assert (result.bars, result.lines) == (rendered.bars, rendered.lines)
    assert rendered.lines > 0 and lyrics_of(result.midi), "the render has no words to replay"
    assert not result.live and not result.torn and result.controls == 0
    assert result.midi.read_bytes() == rendered.midi.read_bytes()
    assert result.singer == rendered.singer  # the same voice sings the same lines again
    assert result.wav is not None and result.wav.read_bytes() == rendered.wav.read_bytes()
    assert result.audio_seconds == pytest.approx(rendered.audio_seconds)


def test_the_cli_replays_and_says_what_it_did(rendered: RenderResult, tmp_path: Path,
                                              capsys) -> None:
    assert main(["replay", str(rendered.log), "-o", str(tmp_path), "--no-audio"]) == 0
    out = capsys.readouterr().out
    assert f"replayed {rendered.bars} bars of a render" in out
    assert (tmp_path / "song.mid").read_bytes() == rendered.midi.read_bytes()
    assert not (tmp_path / "song.wav").exists()


def test_a_replay_never_writes_over_the_sets_own_recording(rendered: RenderResult,
                                                           tmp_path: Path) -> None:
    """A live set's folder holds the song.mid and song.wav recorded as it played."""
    folder = tmp_path / "set"
    folder.mkdir()
    log = folder / "song.jsonl"
    log.write_bytes(rendered.log.read_bytes())
    (folder / "song.wav").write_bytes(b"the recording")
    with pytest.raises(ValueError, match="the set's own folder"):
        replay_set(log, folder / ".." / "set")
    assert main(["replay", str(log), "--no-audio"]) == 0  # into set/replay/
    assert (folder / "song.wav").read_bytes() == b"the recording"
    assert not (folder / "song.mid").exists()
    assert (folder / "replay" / "song.mid").read_bytes() == rendered.midi.read_bytes()


@pytest.mark.parametrize("cut", ["mid-line", "one byte in", "all but the newline"])
def test_a_torn_last_line_replays_up_to_the_last_complete_bar(
        rendered: RenderResult, tmp_path: Path, cut: str) -> None:
    """The log as a process killed (kill -9) while writing bar 5's line leaves it."""
    text = rendered.log.read_bytes()
    lines = text.splitlines(keepends=True)
    at = next(n for n, line in enumerate(lines) if json.loads(line).get("bar") == 5
              and json.loads(line)["type"] == "bar")
    line = lines[at]
    kept = {"mid-line": len(line) // 2, "one byte in": 1, "all but the newline": len(line) - 1}
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(b"".join(lines[:at]) + line[:kept[cut]])
    whole = cut == "all but the newline"  # the JSON is complete: bar 5 stands
    bars = 6 if whole else 5
    result = replay_set(torn, tmp_path / "out", audio=False)
    assert (result.bars, result.torn) == (bars, not whole)
    end = bars * BAR_TICKS
    original, replayed = note_ons(rendered.midi), note_ons(result.midi)
    assert replayed == {n for n in original if n[1] * TICKS_PER_STEP < end}
    # a line is logged after its phrase's last bar: the lines logged before the tear
    logged = [json.loads(line) for line in lines[:at + whole]]
    syllables = sum(len(r["syllables"]) for r in logged if r["type"] == "lyric")
    assert syllables, "no words before the tear"
    assert lyrics_of(result.midi) == lyrics_of(rendered.midi)[:syllables]


# ---- a live-style log, made from the render's ---------------------------------------------
def test_tablet_controls_in_a_live_log_land_from_the_bar_after_them(
        rendered: RenderResult, tmp_path: Path) -> None:
    """Mute melody after bar 1 and unmute it after bar 3, 150 BPM from bar 3, bass level
    0.25 from bar 5; master level and panic are not replayed, a jump is in the notes."""
    log = records(rendered.log)
    header = log[0] | {"live": True}

    def control(target: str, value: float | None, after_bar: int) -> dict:
        return {"type": "control", "address": "/encore/" + target.replace(".", "/"),
                "target": target, "values": [] if value is None else [value],
                "lands": "bar", "after_bar": after_bar}

    extra = {1: [control("parts.melody.mute", 1, 1), control("master.level", 0.5, 1)],
             2: [control("song.tempo", 150.0, 2), control("walk.jump", None, 2)],
             3: [control("parts.melody.mute", 0, 3), control("panic", None, 3)],
             4: [control("parts.bass.level", 0.25, 4)]}
    lines = [header]
    for record in log[1:]:
        lines.append(record | ({"fresh": True} if record["type"] == "bar" else {}))
        if record["type"] == "bar":
            lines += extra.get(record["bar"], [])
    live = write_log(tmp_path / "live.jsonl", lines)
    result = replay_set(live, tmp_path / "out")
    assert result.live and result.controls == 5  # mute x2, tempo, level, jump (in the notes)
    assert result.skipped == {"master.level": 1, "panic": 1}
    assert result.tempo_changes == ((3, 150.0),)

    original, replayed = note_ons(rendered.midi), note_ons(result.midi)
    melody = 0  # channel 1
    silenced = {n for n in original if n[0] == melody and 2 <= n[1] // STEPS_PER_BAR < 4}
    assert silenced and replayed == original - silenced
    events = midi_events(result.midi)
    tempos = [(t, dict(f)["tempo"]) for t, kind, f in events["conductor"] if kind == "set_tempo"]
    assert tempos == [(0, mido.bpm2tempo(120.0)), (3 * BAR_TICKS, mido.bpm2tempo(150.0))]
    volume = [(t, dict(f)["value"]) for t, kind, f in events["bass"]
              if kind == "control_change" and dict(f)["control"] == 7]
    assert volume == [(0, 100), (5 * BAR_TICKS, 25)]  # the patch's level, then the fader
    assert lyrics_of(result.midi) == lyrics_of(rendered.midi)

    # the audio is the render's up to bar 2's line (the first change), then it is not
    a, rate = sf.read(str(rendered.wav), dtype="int16")
    b, _ = sf.read(str(result.wav), dtype="int16")
    first_change = int((2 * 2.0 - SAFETY_SECONDS) * rate)  # 2 s bars at 120 BPM
    assert np.array_equal(a[:first_change], b[:first_change])
    assert not np.array_equal(a[first_change:first_change + 2 * rate],
                              b[first_change:first_change + 2 * rate])
    # bars 3 to 7 at 150 BPM: each 0.4 s shorter than the render's
    assert result.audio_seconds == pytest.approx(rendered.audio_seconds - 5 * 0.4)


# ---- a live set, really played ------------------------------------------------------------
LIVE_PATCH = """
[song]
tempo = 200.0
model = "tiny_trio"

[humanize]
timing_ms = 0.0
velocity = 0

[midi]
backend = "memory"

[live]
internal_synth = false

[osc]
port = 0

[form]
sections = ["verse", "chorus"]
loop_from = 0

[form.lengths]
verse = 2
chorus = 2

[lyrics]
source = "markov"
phrase_bars = 1

[voice]
singer = "off"

[parts.melody]
channel = 1
port = "rx"

[parts.bass]
channel = 2
port = "rx"

[parts.drums]
channel = 10
port = "rx"

[parts.chords]
channel = 3
port = "rx"
"""


def test_a_live_set_replays_to_the_notes_its_ports_were_sent(tiny_model_dir: Path,
                                                             tmp_path: Path) -> None:
    port = MemoryPort("rx")
    show = Show(parse_patch(LIVE_PATCH), model_dir=tiny_model_dir, record_dir=tmp_path / "set",
                audio=False, osc=True, bars=6, ports={"rx": port})

    async def scenario() -> None:
        task = asyncio.ensure_future(show.run())
        deadline = time.monotonic() + 60
        while show.bar_index < 1:
            assert not task.done() and time.monotonic() < deadline, "the show did not start"
            await asyncio.sleep(0.01)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tablet:
            for datagram in (encode_message("/encore/part/bass/mute", "i", [1]),
                             encode_message("/encore/part/drums/level", "f", [0.5]),
                             encode_message("/encore/tempo", "f", [160.0])):
                tablet.sendto(datagram, show.osc_server.address)
        await task

    asyncio.run(scenario())
    assert show.health.commands_applied == 3
    result = replay_set(tmp_path / "set" / "song.jsonl", tmp_path / "out")
    assert result.live and result.bars == 6 and result.controls == 3 and not result.skipped

    # every note-on the ports were sent, at its step under the live tempo map: the sender
    # is never early and drops a note-on rather than send it over 50 ms (2/3 step) late
    clock = show.clock
    sent = set()
    for t_ns, data in port.messages:
        if len(data) == 3 and data[0] & 0xF0 == 0x90 and data[2] > 0:
            step = clock.ns_to_beat(t_ns) * STEPS_PER_QUARTER
            sent.add((data[0] & 0x0F, math.floor(step + 0.05), data[1], data[2]))
    replayed = note_ons(result.midi)
    dropped = show.health.midi["dropped"]  # too late to play on a loaded machine: not logged
    assert sent and sent <= replayed and len(replayed - sent) <= dropped, \
        (sorted(replayed - sent), sorted(sent - replayed), dropped)
    # the tempo change where the live clock put it
    changes = [(s.bar, s.bpm) for s in clock.tempo_map[1:]]
    assert result.tempo_changes == tuple(changes) and changes[0][1] == 160.0
    tempos = [t for t, kind, _ in midi_events(result.midi)["conductor"] if kind == "set_tempo"]
    assert tempos == [0, changes[0][0] * BAR_TICKS]
    # the drums' level: the CC 7 value the port was sent, from the bar after it was applied
    live_cc = [data[2] for _, data in port.messages if data[:2] == bytes((0xB9, 7))]
    controls = {r["target"]: r for r in records(result.log) if r["type"] == "control"}
    volume = [(t, dict(f)["value"]) for t, kind, f in midi_events(result.midi)["drums"]
              if kind == "control_change" and dict(f)["control"] == 7]
    assert live_cc == [100, 50] and volume == [  # the patch's level, then the fader's
        (0, 100), ((controls["parts.drums.level"]["after_bar"] + 1) * BAR_TICKS, 50)]
    # the words: every line logged, at its syllables
    phrases = [PhrasePlan.from_dict(r) for r in records(result.log) if r["type"] == "lyric"]
    played = [p for p in phrases if p.bar < 6]
    assert played and result.lines == len(played)
    ticks = [(step * TICKS_PER_STEP, text) for step, text in lyric_events(played)
             if step < 6 * STEPS_PER_BAR]
    assert lyrics_of(result.midi) == ticks
    # and the audio, timed by the tempo map
    info = sf.info(str(result.wav))
    assert info.duration >= result.audio_seconds + 2.0


# ---- bad logs -----------------------------------------------------------------------------
def good_lines(rendered: RenderResult) -> list[dict]:
    return records(rendered.log)[:6]


BAD_LOGS = {
    "binary": (lambda lines: b"RIFF\xff\xfe\x00\x81WAVE", "not a text file"),
    "text": (lambda lines: b"hello\nworld\n", ":1: not JSON"),
    "empty": (lambda lines: b"", "no header line"),
    "not a record": (lambda lines: b"[1, 2, 3]\n", ":1: not an event-log record"),
    "no header": (lambda lines: lines[1:], ":1: the first record is 'bar', not the header"),
    "header without a patch": (lambda lines: [{k: v for k, v in lines[0].items()
                                               if k != "patch"}] + lines[1:],
                               "the header has no patch"),
    "a bad patch": (lambda lines: [lines[0] | {"patch": {"song": {"tempo": "fast"}}}]
                    + lines[1:], "tempo"),
    "newer log": (lambda lines: [lines[0] | {"version": 99}] + lines[1:],
                  "update Encore"),
    "bar missing notes": (lambda lines: lines[:2] + [{k: v for k, v in lines[2].items()
                                                      if k != "notes"}],
                          ":3: bar 1 has no notes"),
    "a bad note": (lambda lines: lines[:2] + [lines[2] | {"notes": {"melody": [[60, 0, 0, 4]]}}],
                   ":3: bar 1, part melody: a note that cannot be played"),
    "bars out of order": (lambda lines: [lines[0], lines[1], lines[3], lines[2]],
                          ":3: bar 2 after bar 0"),
    "a bar twice": (lambda lines: [lines[0], lines[1], lines[2], lines[2]],
                    ":4: bar 1 after bar 1"),
    "only a header": (lambda lines: lines[:1], "no bar records"),
    "a bad line before the last": (lambda lines: b"".join(
        [json.dumps(lines[0]).encode() + b"\n", b"{oops\n", json.dumps(lines[1]).encode()]),
        ":2: not JSON"),
}


@pytest.mark.parametrize("name", list(BAD_LOGS))
def test_a_bad_log_is_refused_saying_what_is_wrong(rendered: RenderResult, tmp_path: Path,
                                                   name: str, capsys) -> None:
    make, message = BAD_LOGS[name]
    lines = [r for r in good_lines(rendered) if r["type"] in ("header", "bar")]
    content = make(lines)
    log = tmp_path / "bad.jsonl"
    if isinstance(content, bytes):
        log.write_bytes(content)
    else:
        write_log(log, content)
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        replay_set(log, tmp_path / "out", audio=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", str(log), "-o", str(tmp_path / "out"), "--no-audio"])
    assert exit_info.value.code == 2
    assert "encore: error:" in capsys.readouterr().err
    assert not (tmp_path / "out" / "song.mid").exists()
