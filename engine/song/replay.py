"""Replay a recorded set: song.mid and song.wav made again from its event log alone.

    result = replay_set("sets/2025-05-01_213000/song.jsonl", "sets/2025-05-01_213000/replay")

A set's ``song.jsonl`` (from ``encore render`` or ``encore live``) holds everything that
was played: the patch (in the header), every bar's arranged notes (``bar`` records, also
the fallback bars a live show played when generation fell behind, ``"fresh": false``)
and every line of words (``lyric`` records). No model runs here: the notes are the ones
logged, so the MIDI file has exactly the notes and lyric events of the set, and the WAV
is rendered by FluidSynth with the patch's humanizing, as ``encore render`` does it.

What is replayed from ``control`` records (a tablet's OSC changes during a live set):

- ``parts.<part>.mute``: from the bar after the one playing when it was applied
  (``after_bar + 1``), as the live show does;
- ``song.tempo``: from bar ``after_bar + 1`` (where the live show puts it, unless its
  loop was already late for that bar line; an ``at_bar`` key, when a log has one, wins);
  a ``set_tempo`` in the MIDI file, the audio timed by the tempo map;
- ``parts.<part>.level``: a channel volume (CC 7) at the bar line after ``after_bar``, in
  the MIDI file and in the audio; live sends it on the next beat, so it may have sounded
  up to a bar earlier;
- ``voice.level`` and ``voice.mute``: for the phrases logged after them.

Not replayed: ``master.level`` (the live output's volume), ``panic`` (notes cut at
that moment), and a tempo followed from MIDI clock in or Ableton Link (the live show
does not log it). Walk, section, form and lyrics controls need no replay: their effect
is in the logged notes and lines. :attr:`ReplayResult.skipped` counts what was left out.

Vocals are sung again when a singer is available (``vocals=True``, the patch's
``[voice] singer``); a live set's voice may have been a different singer or have missed
phrases, so a replay's vocals are what the phrases should have sounded like.

A torn last line (a set killed mid-write) is left out; the set replays up to its last
complete bar. A log that is not an event log, has no header, or has a bar record
without its notes is refused with a message naming the line.

For a log from ``encore render`` the replay's song.mid is the render's byte for byte,
and its song.wav sample for sample (vocals included when the same singer sings).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mido

from engine.audio.fluid_render import SynthEvent
from engine.clock import BEATS_PER_BAR, Clock, TempoSegment
from engine.lyrics.phrase import PhrasePlan
from engine.music.midi_io import CC_VOLUME, channel_volume, write_midi
from engine.music.notes import STEPS_PER_BAR, STEPS_PER_QUARTER, Note
from engine.output_files import staged
from engine.patch import Patch, build_patch
from engine.song.conductor import PARTS, ArrangedBar
from engine.song.event_log import LOG_VERSION, read_records
from engine.song.lyrics_track import lyric_events
from engine.song.render import SAFETY_SECONDS, VocalStats, _StreamingAudio, part_volumes
from engine.song.stamp import played, synth_events
from engine.untrusted import excerpt
from engine.voice.choose import load_singer, resample
from engine.voice.singer import Singer

__all__ = ["LoggedSet", "ReplayResult", "read_set", "replay_set"]

IN_THE_NOTES = ("walk.", "section.", "lyrics.", "form")  # their effect is in the log already


@dataclass(frozen=True)
class ReplayResult:
    """What a replay wrote and what it found in the log."""

    midi: Path
    wav: Path | None
    log: Path
    bars: int                       # bar records replayed
    lines: int                      # lyric lines (phrases) in the MIDI file
    audio_seconds: float            # length of the music (tempo map), without the tail
    wall_seconds: float
    live: bool                      # the log came from `encore live`
    torn: bool                      # a torn last line was left out
    fallback_bars: int              # bars a live show played from its last good bar
    controls: int                   # control records replayed
    skipped: dict[str, int]         # control targets not replayed -> how many
    tempo_changes: tuple[tuple[int, float], ...]  # (bar, bpm) after the first tempo
    singer: str = ""
    vocals: VocalStats | None = None

    @property
    def speed(self) -> float:
        """How many times faster than real time the replay ran."""
        return self.audio_seconds / max(self.wall_seconds, 1e-9)


@dataclass
class LoggedSet:
    """An event log read and checked: the header's patch, the bars, lines and controls in
    log order (``items`` holds ``("bar", ArrangedBar)``, ``("lyric", PhrasePlan)`` and
    ``("control", dict)``)."""

    path: Path
    header: dict[str, Any]
    patch: Patch
    items: list[tuple[str, Any]]
    torn: bool
    fallback_bars: int = 0

    @property
    def bars(self) -> list[ArrangedBar]:
        return [item for kind, item in self.items if kind == "bar"]

    @property
    def live(self) -> bool:
        return bool(self.header.get("live", False))


# ---- reading ----------------------------------------------------------------------------
def read_set(log_path: str | Path) -> LoggedSet:
    """Read and check an event log; raises ValueError saying what is wrong and where."""
    path = Path(log_path)
    records, torn = read_records(path)
    header: dict[str, Any] | None = None
    patch: Patch | None = None
    items: list[tuple[str, Any]] = []
    last_bar = -1
    fallback = 0
    for where, record in records:
        kind = record["type"]
        if header is None:
            if kind != "header":
                raise ValueError(f"{where}: the first record is {kind!r}, not the header; the "
                                 "log's first line was lost, or this is not an event log")
            header, patch = record, _header_patch(record, where)
            continue
        assert patch is not None
        if kind == "header":
            raise ValueError(f"{where}: a second header; two sets were written into one "
                             "log, replay each from its own file")
        if kind == "bar":
            bar = _bar(record, patch, where)
            last_bar = bar.index
            fallback += record.get("fresh", True) is False
            items.append(("bar", bar))
        elif kind == "lyric":
            try:
                items.append(("lyric", PhrasePlan.from_dict(record)))
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{where}: a lyric record that cannot be read "
                                 f"({type(err).__name__}: {err})") from None
        elif kind == "control":
            items.append(("control", _control(record, where)))
    if header is None:
        raise ValueError(f"{path}: no header line; is this an Encore event log (song.jsonl)?")
    if last_bar < 0:
        raise ValueError(f"{path}: no bar records; the set stopped before its first bar was "
                         "logged, so there is nothing to replay")
    assert patch is not None
    return LoggedSet(path, header, patch, items, torn, fallback)


def _header_patch(header: dict[str, Any], where: str) -> Patch:
    version = header.get("version")
    if type(version) is not int or version < 1:
        raise ValueError(f"{where}: event log version {excerpt(version)}; a log's version is "
                         "a whole number from 1 (the header is damaged)")
    if version > LOG_VERSION:
        raise ValueError(f"{where}: event log version {version!r}; this Encore reads version "
                         f"{LOG_VERSION} and older: update Encore to replay it")
    if not isinstance(header.get("patch"), dict):
        raise ValueError(f"{where}: the header has no patch; replay needs the patch the set "
                         "was played with (`encore render` and `encore live` log it)")
    try:
        return build_patch(header["patch"], f"{where} (the header's patch)")
    except ValueError as err:
        raise ValueError(f"the patch in the log's header cannot be used: {err}") from None


def _bar(record: dict[str, Any], patch: Patch, where: str) -> ArrangedBar:
    index = record.get("bar")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError(f"{where}: a bar record without its bar number (\"bar\": {index!r})")
    notes = record.get("notes")
    if not isinstance(notes, dict):
        raise ValueError(f"{where}: bar {index} has no notes (\"notes\": {{part: [[pitch, "
                         "velocity, start, end], ...]}}); the log is damaged there")
    unknown = sorted(set(notes) - set(PARTS))
    if unknown:
        raise ValueError(f"{where}: bar {index} has notes for {unknown}; a patch has the "
                         f"parts {', '.join(PARTS)}")
    parts: dict[str, tuple[Note, ...]] = {}
    for part in PARTS:  # the composer's order, which the humanizing's draws follow
        if part not in notes:
            continue
        try:
            parts[part] = tuple(_note(item) for item in notes[part])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: bar {index}, part {part}: a note that cannot be "
                             f"played ({err}); notes are [pitch, velocity, start, end]") from None
    key_shift = record.get("key_shift", 0)
    return ArrangedBar(index, str(record.get("section", "")), parts,
                       key_shift if isinstance(key_shift, int) else 0)


def _note(item: Any) -> Note:
    if not isinstance(item, list) or len(item) != 4 or \
            not all(isinstance(v, int) and not isinstance(v, bool) for v in item):
        raise ValueError(f"{item!r} is not four whole numbers")
    pitch, velocity, start, end = item
    if start < 0:
        raise ValueError(f"start step {start} is before the bar")
    return Note(start, pitch, end, velocity)


def _control(record: dict[str, Any], where: str) -> dict[str, Any]:
    target, values, after = record.get("target"), record.get("values"), record.get("after_bar")
    if not isinstance(target, str) or not isinstance(values, list) or \
            not isinstance(after, int) or isinstance(after, bool):
        raise ValueError(f"{where}: a control record needs target, values and after_bar; "
                         f"got {json.dumps(record)[:120]}")
    return record


# ---- the timeline -----------------------------------------------------------------------
def _tempo_runs(tempo: Clock) -> list[TempoSegment]:
    """The tempo map's segments, a change to the tempo already playing left out."""
    runs: list[TempoSegment] = []
    for segment in tempo.tempo_map:
        if not runs or segment.bpm != runs[-1].bpm:
            runs.append(segment)
    return runs


def _tempo_changes(tempo: Clock) -> tuple[tuple[int, float], ...]:
    return tuple((segment.bar, segment.bpm) for segment in _tempo_runs(tempo)[1:])


def _beat_shift(tempo: Clock, beat: float) -> float:
    """Seconds to add to a time computed at the tempo of ``beat``'s bar as if that tempo
    had held from the start (how a singer places a phrase)."""
    bar = math.floor(beat / BEATS_PER_BAR)
    runs = _tempo_runs(tempo)
    run = next((r for r in reversed(runs) if r.bar <= bar), runs[0])
    if run is runs[0]:
        return 0.0
    return tempo.seconds_at_bar(run.bar) - run.bar * (
        60.0 / run.bpm * STEPS_PER_BAR / STEPS_PER_QUARTER)


@dataclass
class _Mix:
    mute: dict[str, bool]
    voice_level: float
    voice_mute: bool


# ---- the replay -------------------------------------------------------------------------
def replay_set(log_path: str | Path, out_dir: str | Path, *, audio: bool = True,
               vocals: bool = True, model_dir: str | Path | None = None) -> ReplayResult:
    """Write ``out_dir``/song.mid (and song.wav unless ``audio`` is False) from the event
    log at ``log_path``. ``vocals`` sings the lines again with the patch's singer (found
    in ``model_dir`` too) when one is available. Raises ValueError for a log that cannot
    be replayed, saying why, and for ``out_dir`` being the log's own folder (where the
    set's recorded song.mid and song.wav are)."""
    started = time.perf_counter()
    out = Path(out_dir)
    if out.resolve() == Path(log_path).resolve().parent:
        raise ValueError(f"{out}: the set's own folder; a replay there would overwrite the "
                         "song.mid and song.wav recorded with the set: give another folder "
                         "(-o DIR)")
    logged = read_set(log_path)
    names = ("song.mid", "song.wav") if audio else ("song.mid",)
    with staged(out, names, fix="a replay or set is there; give another folder (-o DIR)") \
            as stage:
        result = _replay(logged, stage, audio=audio, vocals=vocals, model_dir=model_dir,
                         started=started)
    return replace(result, midi=out / "song.mid", wav=out / "song.wav" if audio else None)


def _replay(logged: LoggedSet, out: Path, *, audio: bool, vocals: bool,
            model_dir: str | Path | None, started: float) -> ReplayResult:
    patch = logged.patch
    tempo = Clock.offline(patch.song.tempo)
    mix = _Mix({name: part.mute for name, part in patch.parts.items()}, patch.voice.level,
               patch.voice.mute)
    bars = logged.bars
    end_bar = bars[-1].index + 1
    at_bar, skipped = _schedule(logged, tempo, end_bar)
    singer = load_singer(patch.voice, model_dir) if (
        audio and vocals and patch.lyrics.source != "off") else None
    lag_bars = patch.lyrics.phrase_bars + 1 if singer is not None else 0
    stream = _StreamingAudio(out / "song.wav", patch) if audio else None
    midi_notes: dict[str, list[Note]] = {p: [] for p in PARTS}
    audible: set[str] = set()
    levels: list[tuple[int, str, int]] = []  # (bar, part, CC 7 value)
    phrases: list[PhrasePlan] = []
    sung = VocalStats()
    try:
        for kind, item in logged.items:
            if kind == "control" and item["target"].startswith("voice."):
                _voice_control(item, mix)
            elif kind == "lyric":
                if item.bar < end_bar:
                    phrases.append(item)
                    if singer is not None and stream is not None:
                        _sing(singer, item, patch, stream, sung, tempo, mix)
            elif kind == "bar":
                bar: ArrangedBar = item
                changes = [c for b in sorted(at_bar) if b <= bar.index for c in at_bar.pop(b)]
                for part, value in _apply(changes, mix):
                    levels.append((bar.index, part, value))
                    if stream is not None:
                        channel = getattr(patch.parts, part).channel - 1
                        stream.add([SynthEvent(tempo.seconds_at_bar(bar.index), "cc", channel,
                                               CC_VOLUME, value)])
                offset = bar.index * STEPS_PER_BAR
                audible |= {part for part in PARTS if not mix.mute[part]}
                for part, notes in played(bar, patch).items():
                    if not mix.mute[part]:
                        midi_notes[part].extend(n.shifted(offset) for n in notes)
                if stream is not None:
                    stream.add(synth_events(bar, patch, tempo, mix.mute))
                    stream.render_until(tempo.seconds_at_bar(bar.index + 1 - lag_bars)
                                        - SAFETY_SECONDS)
    finally:
        if stream is not None:
            stream.close(tempo.seconds_at_bar(end_bar))
    _write_midi(out / "song.mid", patch, {p: n for p, n in midi_notes.items() if p in audible},
                phrases, end_bar, tempo, levels)
    return ReplayResult(
        out / "song.mid", out / "song.wav" if audio else None, logged.path, len(bars),
        len(phrases), tempo.seconds_at_bar(end_bar), time.perf_counter() - started, logged.live,
        logged.torn, logged.fallback_bars,
        sum(kind == "control" for kind, _ in logged.items) - sum(skipped.values()),
        dict(skipped), _tempo_changes(tempo), singer.name if singer is not None else "",
        sung if singer is not None else None)


def _schedule(logged: LoggedSet, tempo: Clock, end_bar: int
              ) -> tuple[dict[int, list[dict[str, Any]]], Counter[str]]:
    """Mutes and levels by the bar they land on; tempo changes into the map (those landing
    after the last bar are dropped: never heard); what is not replayed, counted by target."""
    at_bar: dict[int, list[dict[str, Any]]] = {}
    skipped: Counter[str] = Counter()
    for kind, record in logged.items:
        if kind != "control":
            continue
        target = record["target"]
        lands = record.get("at_bar", record["after_bar"] + 1)
        if target == "song.tempo" and _number(record, 40.0, 240.0) is not None:
            if int(lands) < end_bar:
                tempo.set_tempo(_number(record, 40.0, 240.0), max(0, int(lands)))
        elif target.startswith("parts.") and target.endswith((".mute", ".level")) and \
                target.split(".")[1] in PARTS and \
                _number(record, 0.0, 1.0) is not None:
            at_bar.setdefault(max(0, int(lands)), []).append(record)
        elif target in ("voice.level", "voice.mute") and _number(record, 0.0, 1.0) is not None:
            continue  # in log order, with the phrases
        elif not target.startswith(IN_THE_NOTES):
            skipped[target] += 1
    return at_bar, skipped


def _number(record: dict[str, Any], low: float, high: float) -> float | None:
    """The record's single value when it is a number in range, else None (not replayed)."""
    values = record["values"]
    if len(values) != 1 or isinstance(values[0], bool) or \
            not isinstance(values[0], int | float):
        return None
    value = float(values[0])
    return value if math.isfinite(value) and low <= value <= high else None


def _apply(changes: list[dict[str, Any]], mix: _Mix) -> list[tuple[str, int]]:
    """Apply mutes; return the level changes as (part, CC 7 value)."""
    levels = []
    for record in changes:
        _, part, what = record["target"].split(".")
        value = float(record["values"][0])
        if what == "mute":
            mix.mute[part] = bool(value)
        else:
            levels.append((part, channel_volume(value)))
    return levels


def _voice_control(record: dict[str, Any], mix: _Mix) -> None:
    value = _number(record, 0.0, 1.0)
    if value is None:
        return
    if record["target"] == "voice.level":
        mix.voice_level = value
    else:
        mix.voice_mute = bool(value)


def _sing(singer: Singer, phrase: PhrasePlan, patch: Patch, stream: _StreamingAudio,
          stats: VocalStats, tempo: Clock, mix: _Mix) -> None:
    """render.py's ``_sing`` at the phrase's tempo and the voice level of that moment."""
    first_beat = min((n.start for s in phrase.syllables for n in s.notes), default=0.0)
    bar = math.floor(first_beat / BEATS_PER_BAR)
    began = time.perf_counter()
    try:
        sung = singer.render(phrase.transposed(patch.voice.transpose),
                             tempo.bpm_at(bar * BEATS_PER_BAR))
    except Exception as err:  # noqa: BLE001 - one bad phrase must not stop the replay
        stats.failed += 1
        stats.last_error = f"bar {phrase.bar}: {type(err).__name__}: {err}"
        return
    stats.sung += 1
    stats.rtf.append((time.perf_counter() - began) / max(sung.duration, 1e-9))
    if not mix.voice_mute:
        stream.add_vocal(sung.start_seconds + _beat_shift(tempo, first_beat),
                         resample(sung, stream.rate), mix.voice_level)


def _write_midi(path: Path, patch: Patch, notes: dict[str, list[Note]],
                phrases: list[PhrasePlan], end_bar: int, tempo: Clock,
                levels: list[tuple[int, str, int]]) -> None:
    """write_midi as render_song calls it, then the tempo changes and levels, if any."""
    end_step = end_bar * STEPS_PER_BAR
    write_midi(path, notes, bpm=patch.song.tempo,
               programs={name: part.program for name, part in patch.parts.items()},
               channels={name: part.channel - 1 for name, part in patch.parts.items()},
               lyrics=[e for e in lyric_events(phrases) if e[0] < end_step],
               volumes=part_volumes(patch))
    levels = [item for item in levels if item[1] in notes]
    changes = _tempo_changes(tempo)
    if not changes and not levels:
        return  # the render's bytes
    midi = mido.MidiFile(str(path))
    bar_ticks = BEATS_PER_BAR * midi.ticks_per_beat
    tracks = {_track_name(track): track for track in midi.tracks[1:]}
    _insert(midi.tracks[0], [(bar * bar_ticks, mido.MetaMessage(
        "set_tempo", tempo=mido.bpm2tempo(bpm))) for bar, bpm in changes])
    for part in {part for _, part, _ in levels}:
        channel = getattr(patch.parts, part).channel - 1
        _insert(tracks[part], [(bar * bar_ticks, mido.Message(
            "control_change", channel=channel, control=CC_VOLUME, value=value))
            for bar, name, value in levels if name == part])
    midi.save(str(path))


def _track_name(track: mido.MidiTrack) -> str:
    return next((m.name for m in track if m.type == "track_name"), "")


def _insert(track: mido.MidiTrack, new: list[tuple[int, Any]]) -> None:
    """Put messages at absolute ticks into a track: after what is at the same tick
    already, but before that tick's note-ons (a level applies to the notes it meets)."""
    events: list[tuple[int, int, int, Any]] = []
    tick = 0
    for n, message in enumerate(track):
        tick += message.time
        if message.type != "end_of_track":
            events.append((tick, 2 if message.type == "note_on" else 0, n, message))
    events += [(at, 1, len(track) + n, message) for n, (at, message) in enumerate(new)]
    events.sort(key=lambda e: e[:3])
    track.clear()
    previous = 0
    for at, _, _, message in events:
        track.append(message.copy(time=at - previous))
        previous = at
    track.append(mido.MetaMessage("end_of_track", time=0))
