"""Standard MIDI files: write parts, read any file, quantize it onto the 16th grid.

- :func:`write_midi` writes parts of :class:`~engine.music.notes.Note` (absolute 16th
  steps, 4 a quarter) as a type-1 file: a conductor track (4/4, tempo), then one track per
  part with its name, a GM program change and its notes. Drums go to channel 10 (index 9)
  by default, the other parts to distinct channels. Equal input gives identical bytes.
- :func:`read_midi` reads any standard MIDI file into :class:`MidiContent`: per track and
  channel, notes in quarter-note beats and in seconds (through the tempo map), the
  program, the track name and whether it is a drum track (channel 10).
- :func:`quantize` turns that into melody / bass / drums parts on the 16th grid, and
  :func:`quantize_to_windows` slices parts into encoded training windows.

A file that cannot be parsed raises ``ValueError("<path>: not a readable MIDI file ...")``.
mido only; no torch here.
"""

from __future__ import annotations

import bisect
import io
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import mido
import numpy as np

from engine.music.encoding import NOTE_OFF, encode_drums, encode_melody
from engine.music.midi_scan import check_midi_work
from engine.music.notes import (
    BASS,
    DRUMS,
    MELODY,
    PART_NAMES,
    STEPS_PER_BAR,
    STEPS_PER_QUARTER,
    Note,
)
from engine.untrusted import MiB, MissingFileError, UntrustedFileError, read_bytes

StrPath = str | PathLike[str]

DRUM_CHANNEL = 9
"""MIDI channel 10, counted from 0."""
DEFAULT_PROGRAMS: dict[str, int] = {MELODY: 0, BASS: 33, DRUMS: 0}
"""GM programs (0-based) used when the caller names none: piano, finger bass, standard kit."""
GM_BASS_PROGRAMS = range(32, 40)
CC_VOLUME = 7
"""Channel volume: what a part's ``level`` sets (patch, tablet fader, replay)."""
UNITY_VOLUME = 100
"""The GM default channel volume: a part at level 1.0 plays at its instrument's own volume."""


def channel_volume(level: float) -> int:
    """A part's mix level (0..1) as its channel volume (CC 7): 1.0 is the GM default 100,
    0 is silent. The level never touches velocities, which stay the music's dynamics."""
    return max(0, min(127, round(UNITY_VOLUME * float(level))))
DEFAULT_TEMPO = 500_000  # microseconds a quarter (120 bpm), the MIDI default
MAX_DELTA_TICKS = 0x0FFFFFFF
"""The largest delta time a standard MIDI file can hold (a 4-byte variable-length number)."""
MAX_MIDI_BYTES = 16 * MiB
"""The largest MIDI file read (a symphony is well under 1 MB)."""
MAX_BEATS = 500_000
"""A file longer than this (about 35 hours at 240 BPM) is refused as damaged: it is what a
corrupted delta time makes, and slicing it into training windows would take hours."""
_NOTE_OFF_VELOCITY = 64


# --------------------------------------------------------------------------- writing


def write_midi(
    path: StrPath,
    parts: Mapping[str, Sequence[Note]],
    *,
    bpm: float,
    programs: Mapping[str, int] | None = None,
    channels: Mapping[str, int] | None = None,
    lyrics: Sequence[tuple[int, str]] | None = None,
    volumes: Mapping[str, int] | None = None,
    ticks_per_beat: int = 480,
) -> None:
    """Write ``parts`` (absolute 16th steps) to a type-1 standard MIDI file at ``path``.

    Tracks: a conductor track (4/4 time signature and ``bpm``), then one per part in the
    order melody, bass, drums, then any other part names sorted, so that equal input
    always gives identical bytes. Each part track carries its name, a program change
    (``programs``, else :data:`DEFAULT_PROGRAMS`, else 0) and its notes on its channel
    (``channels``, else 9 for ``drums`` and the lowest free channel other than 9 for the
    rest). Names in ``programs`` / ``channels`` that are not parts are ignored.

    ``volumes`` (part -> 0..127) puts a channel volume (CC 7) after the program change.

    ``lyrics`` are ``(step, text)`` lyric meta events, written to the melody track (or to
    the conductor track when there is no melody part).

    At equal ticks note-offs come before lyrics, and lyrics before note-ons. Overlapping
    notes of the same pitch in one part are written as a re-strike: the earlier note ends
    where the later one starts (a duplicate start keeps the longer note).
    """
    if not isinstance(ticks_per_beat, int) or not 0 < ticks_per_beat <= 0x7FFF:
        raise ValueError(f"ticks_per_beat must be an int in 1..32767, got {ticks_per_beat!r}")
    if ticks_per_beat % STEPS_PER_QUARTER:
        raise ValueError(
            f"ticks_per_beat must be a multiple of {STEPS_PER_QUARTER} so that every step "
            f"is a whole number of ticks, got {ticks_per_beat}"
        )
    try:
        bpm = float(bpm)
    except (TypeError, ValueError):
        raise ValueError(f"bpm must be a positive number, got {bpm!r}") from None
    if not (math.isfinite(bpm) and bpm > 0):
        raise ValueError(f"bpm must be a positive number, got {bpm!r}")
    tempo = mido.bpm2tempo(bpm)
    if not 0 < tempo <= 0xFFFFFF:
        raise ValueError(f"bpm {bpm} is outside what a MIDI file can store (about 3.6..60e6)")

    names = _ordered_part_names(parts)
    channel_of = _assign_channels(names, channels or {})
    program_of = {}
    for name in names:
        program = (programs or {}).get(name, DEFAULT_PROGRAMS.get(name, 0))
        if not (isinstance(program, int) and 0 <= program <= 127):
            raise ValueError(f"program for part {name!r} must be 0..127, got {program!r}")
        program_of[name] = program

    ticks_per_step = ticks_per_beat // STEPS_PER_QUARTER
    lyric_events: list[tuple[int, str]] = []
    for item in lyrics or ():
        step, text = item
        if not isinstance(step, int | np.integer) or step < 0:
            raise ValueError(f"lyric step must be an int >= 0, got {step!r}")
        if not isinstance(text, str):
            raise ValueError(f"lyric text must be a str, got {text!r}")
        lyric_events.append((int(step) * ticks_per_step, text))
    lyric_part = MELODY if MELODY in parts else None

    midi = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat, charset="utf-8")
    conductor: list[tuple[int, int, int, mido.Message | mido.MetaMessage]] = [
        (0, 0, 0, mido.MetaMessage("time_signature", numerator=4, denominator=4,
                                   clocks_per_click=24, notated_32nd_notes_per_beat=8)),
        (0, 0, 1, mido.MetaMessage("set_tempo", tempo=tempo)),
    ]
    if lyric_part is None:
        conductor += _lyric_events(lyric_events)
    midi.tracks.append(_to_track(conductor))

    for name in names:
        channel = channel_of[name]
        events: list[tuple[int, int, int, mido.Message | mido.MetaMessage]] = [
            (0, -2, 0, mido.MetaMessage("track_name", name=name)),
            (0, -1, 0, mido.Message("program_change", channel=channel,
                                    program=program_of[name])),
        ]
        if name in (volumes or {}):
            events.append((0, -1, 1, mido.Message("control_change", channel=channel,
                                                  control=CC_VOLUME, value=volumes[name])))
        for note in _playable(name, parts[name]):
            events.append((note.start * ticks_per_step, 2, note.pitch,
                           mido.Message("note_on", channel=channel, note=note.pitch,
                                        velocity=note.velocity)))
            events.append((note.end * ticks_per_step, 0, note.pitch,
                           mido.Message("note_off", channel=channel, note=note.pitch,
                                        velocity=_NOTE_OFF_VELOCITY)))
        if name == lyric_part:
            events += _lyric_events(lyric_events)
        midi.tracks.append(_to_track(events))

    buffer = io.BytesIO()
    midi.save(file=buffer)
    Path(path).write_bytes(buffer.getvalue())


def _ordered_part_names(parts: Mapping[str, Sequence[Note]]) -> list[str]:
    for name in parts:
        if not isinstance(name, str):
            raise ValueError(f"part names must be str, got {name!r}")
    known = [name for name in PART_NAMES if name in parts]
    return known + sorted(name for name in parts if name not in PART_NAMES)


def _assign_channels(names: list[str], channels: Mapping[str, int]) -> dict[str, int]:
    given = {name: channels[name] for name in names if name in channels}
    for name, channel in given.items():
        if not (isinstance(channel, int) and 0 <= channel <= 15):
            raise ValueError(f"channel for part {name!r} must be 0..15, got {channel!r}")
    used = set(given.values()) | {DRUM_CHANNEL}
    free = iter([c for c in range(16) if c not in used])
    out: dict[str, int] = {}
    for name in names:
        if name in given:
            out[name] = given[name]
        elif name == DRUMS:
            out[name] = DRUM_CHANNEL
        else:
            channel = next(free, None)
            if channel is None:
                raise ValueError(f"no free MIDI channel left for part {name!r}; "
                                 "give channels explicitly")
            out[name] = channel
    return out


def _playable(part: str, notes: Iterable[Note]) -> list[Note]:
    """Validate notes and turn same-pitch overlaps into re-strikes."""
    by_pitch: dict[int, list[Note]] = {}
    for note in notes:
        if not isinstance(note, Note):
            raise ValueError(f"part {part!r}: expected Note, got {note!r}")
        if note.start < 0:
            raise ValueError(f"part {part!r}: note starts before step 0: {note!r}")
        by_pitch.setdefault(note.pitch, []).append(note)
    out: list[Note] = []
    for same in by_pitch.values():
        same.sort(key=lambda n: (n.start, n.end, n.velocity))
        for i, note in enumerate(same):
            end = note.end
            if i + 1 < len(same):
                end = min(end, same[i + 1].start)
            if end > note.start:
                out.append(Note(note.start, note.pitch, end, note.velocity))
    return sorted(out)


def _lyric_events(lyrics: list[tuple[int, str]]):
    return [(tick, 1, i, mido.MetaMessage("lyrics", text=text))
            for i, (tick, text) in enumerate(lyrics)]


def _to_track(events) -> mido.MidiTrack:
    events = sorted(events, key=lambda e: (e[0], e[1], e[2]))
    track = mido.MidiTrack()
    now = 0
    for tick, _order, _key, message in events:
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class MidiNote:
    """A note read from a file: pitch, velocity, onset and release in beats and seconds."""

    pitch: int
    velocity: int
    start_beat: float
    end_beat: float
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class TrackContent:
    """The notes of one channel of one track of a file.

    ``index`` is the position in :attr:`MidiContent.tracks`; ``source_track`` the track
    number in the file. A file track that plays on several channels (type-0 files do)
    gives one entry per channel, named ``"<name> ch<n>"`` (n counted from 1).
    """

    index: int
    source_track: int
    name: str
    channel: int
    program: int
    is_drum: bool
    notes: tuple[MidiNote, ...]

    @property
    def mean_pitch(self) -> float:
        return sum(n.pitch for n in self.notes) / len(self.notes) if self.notes else 0.0


@dataclass(frozen=True, slots=True)
class MidiContent:
    """What :func:`read_midi` found in a file.

    ``tempos`` lists ``(beat, bpm)`` from the start (a file without tempo events plays at
    120 bpm); ``time_signatures`` ``(beat, numerator, denominator)``; ``lyrics``
    ``(beat, text)``. Tracks with no channel messages (conductor tracks) are not listed.
    """

    path: str
    midi_type: int
    ticks_per_beat: int
    tracks: tuple[TrackContent, ...]
    tempos: tuple[tuple[float, float], ...]
    time_signatures: tuple[tuple[float, int, int], ...]
    lyrics: tuple[tuple[float, str], ...]
    duration_beats: float
    duration_s: float

    def track(self, name: str) -> TrackContent:
        """The first track with this name."""
        for track in self.tracks:
            if track.name == name:
                return track
        raise KeyError(f"{self.path}: no track named {name!r} "
                       f"(tracks: {[t.name for t in self.tracks]})")


class _TempoMap:
    def __init__(self, changes: list[tuple[int, int]], ticks_per_beat: int) -> None:
        self.ticks_per_beat = ticks_per_beat
        self.ticks, self.tempos, self.seconds_at = [0], [DEFAULT_TEMPO], [0.0]
        for tick, tempo in sorted(changes, key=lambda c: c[0]):
            if tick == self.ticks[-1]:
                self.tempos[-1] = tempo
                continue
            self.seconds_at.append(self._advance(len(self.ticks) - 1, tick))
            self.ticks.append(tick)
            self.tempos.append(tempo)

    def _advance(self, segment: int, tick: int) -> float:
        elapsed = tick - self.ticks[segment]
        return self.seconds_at[segment] + elapsed * self.tempos[segment] / 1e6 / self.ticks_per_beat

    def seconds(self, tick: int) -> float:
        return self._advance(bisect.bisect_right(self.ticks, tick) - 1, tick)


def read_midi(path: StrPath) -> MidiContent:
    """Read a standard MIDI file (type 0 or 1, RIFF-wrapped .rmi too; the tracks of a type-2
    file are read as if they played together).

    Notes are paired per track, channel and pitch, first in first out: a note-off (or a
    note-on with velocity 0) ends the oldest note of that pitch begun at an earlier tick,
    so legato playing where the next note-on comes just before the previous note-off reads
    right, and so do files that write note-on before note-off at equal ticks. A second
    note-on of a pitch at the same tick is ignored. Notes still on at the end of their
    track end there (at least one tick long).
    Missing files raise the usual ``OSError``; anything unparsable raises ``ValueError``, and
    so does a damaged file: a delta time beyond :data:`MAX_DELTA_TICKS`, a tempo of 0, or
    more than :data:`MAX_BEATS` beats of music, and a file of more events than
    :data:`engine.music.midi_scan.MAX_MIDI_WORK` (counted before parsing: read or refused
    within seconds).
    """
    midi = _load(path)
    tpb = midi.ticks_per_beat
    tempo_changes: list[tuple[int, int]] = []
    signatures: list[tuple[int, int, int]] = []
    lyric_ticks: list[tuple[int, str]] = []
    raw_tracks = []  # (source track, name, split?, channel, notes in ticks, program changes)
    all_programs: dict[int, list[tuple[int, int]]] = {}
    end_tick = 0

    for source, track in enumerate(midi.tracks):
        tick = 0
        name: str | None = None
        channels: list[int] = []  # in order of first channel message
        # FIFO per key (first on, first off); a deque, so a file of many overlapping
        # same-pitch notes is paired in linear time (list.pop(0) made it quadratic)
        open_notes: dict[tuple[int, int], deque[tuple[int, int]]] = {}
        notes: dict[int, list[tuple[int, int, int, int]]] = {}
        programs: dict[int, list[tuple[int, int]]] = {}

        def close(key: tuple[int, int], at: int, notes=notes, open_notes=open_notes) -> None:
            queue = open_notes.get(key)
            if queue and queue[0][0] < at:
                start, velocity = queue.popleft()
                notes.setdefault(key[0], []).append((start, at, key[1], velocity))

        for message in track:
            if message.time > MAX_DELTA_TICKS:
                raise ValueError(f"{path}: not a readable MIDI file (delta time): track {source} "
                                 f"has a delta time of more than the {MAX_DELTA_TICKS} ticks a "
                                 "MIDI file can hold; the file is damaged")
            tick += message.time
            if message.is_meta:
                if message.type == "track_name" and name is None:
                    name = _fix_text(message.name)
                elif message.type == "set_tempo":
                    if message.tempo <= 0:
                        raise ValueError(f"{path}: not a readable MIDI file (tempo): track "
                                         f"{source} sets a tempo of {message.tempo} microseconds "
                                         f"a beat at tick {tick}; the file is damaged")
                    tempo_changes.append((tick, message.tempo))
                elif message.type == "time_signature":
                    signatures.append((tick, message.numerator, message.denominator))
                elif message.type == "lyrics":
                    lyric_ticks.append((tick, _fix_text(message.text)))
                continue
            channel = getattr(message, "channel", None)
            if channel is None:
                continue
            if channel not in channels:
                channels.append(channel)
            if message.type == "note_on" and message.velocity > 0:
                queue = open_notes.setdefault((channel, message.note), deque())
                if not queue or queue[-1][0] != tick:
                    queue.append((tick, message.velocity))
            elif message.type in ("note_on", "note_off"):
                close((channel, message.note), tick)
            elif message.type == "program_change":
                programs.setdefault(channel, []).append((tick, message.program))
                all_programs.setdefault(channel, []).append((tick, message.program))
        end_tick = max(end_tick, tick)
        for (channel, pitch), still in open_notes.items():
            for start, velocity in still:
                notes.setdefault(channel, []).append((start, max(tick, start + 1), pitch,
                                                      velocity))
        for channel in channels:
            raw_tracks.append((source, name or "", len(channels) > 1, channel,
                               sorted(notes.get(channel, [])), programs.get(channel, [])))

    if end_tick / tpb > MAX_BEATS:
        raise ValueError(f"{path}: not a readable MIDI file (length): it claims "
                         f"{end_tick / tpb:.0f} beats of music, more than {MAX_BEATS} (about "
                         f"35 hours at 240 BPM); its delta times are damaged")
    tempo_map = _TempoMap(tempo_changes, tpb)
    tracks = []
    for source, name, split, channel, notes, programs in raw_tracks:
        first_tick = notes[0][0] if notes else (programs[0][0] if programs else 0)
        program = _program_at(programs, first_tick)
        if program is None:
            program = _program_at(sorted(all_programs.get(channel, []),
                                         key=lambda p: p[0]), first_tick)
        tracks.append(TrackContent(
            index=len(tracks),
            source_track=source,
            name=f"{name} ch{channel + 1}".strip() if split else name,
            channel=channel,
            program=program if program is not None else 0,
            is_drum=channel == DRUM_CHANNEL,
            notes=tuple(MidiNote(pitch, velocity, start / tpb, end / tpb,
                                 tempo_map.seconds(start), tempo_map.seconds(end))
                        for start, end, pitch, velocity in notes),
        ))
        end_tick = max([end_tick] + [end for _, end, _, _ in notes])

    return MidiContent(
        path=str(path),
        midi_type=midi.type,
        ticks_per_beat=tpb,
        tracks=tuple(tracks),
        tempos=tuple((tick / tpb, mido.tempo2bpm(tempo))
                     for tick, tempo in zip(tempo_map.ticks, tempo_map.tempos, strict=True)),
        time_signatures=tuple((tick / tpb, num, den)
                              for tick, num, den in sorted(signatures, key=lambda s: s[0])),
        lyrics=tuple((tick / tpb, text) for tick, text in sorted(lyric_ticks,
                                                                  key=lambda item: item[0])),
        duration_beats=end_tick / tpb,
        duration_s=tempo_map.seconds(end_tick),
    )


def _load(path: StrPath) -> mido.MidiFile:
    if Path(path).exists() and not Path(path).is_file():  # a folder, or a device that never ends
        raise ValueError(f"{path}: not a readable MIDI file (not a file): give a .mid file")
    try:
        data = read_bytes(path, MAX_MIDI_BYTES)
    except MissingFileError:
        raise
    except UntrustedFileError as err:
        raise ValueError(f"{path}: not a readable MIDI file ({err.what}): give a .mid "
                         "file") from None
    if data[:4] == b"RIFF" and b"MThd" in data:  # RIFF MIDI (.rmi)
        data = data[data.index(b"MThd"):]
    if not data:
        raise ValueError(f"{path}: not a readable MIDI file (empty): the file is empty")
    if not data.startswith(b"MThd"):
        raise ValueError(f"{path}: not a readable MIDI file (no MThd header): it starts with "
                         f"{data[:8]!r}, not with a standard MIDI file header")
    check_midi_work(data, path)  # refuses a file of more events than we read in time
    try:
        midi = mido.MidiFile(file=io.BytesIO(data), clip=True)
    except EOFError as exc:
        raise ValueError(f"{path}: not a readable MIDI file (EOFError): the file ends in the "
                         "middle of a chunk (truncated?)") from exc
    except Exception as exc:  # mido raises OSError, ValueError, KeyError, struct.error, ...
        raise ValueError(f"{path}: not a readable MIDI file ({type(exc).__name__}): "
                         f"{exc}") from exc
    if midi.ticks_per_beat <= 0:
        raise ValueError(f"{path}: not a readable MIDI file (time division): SMPTE time "
                         f"division ({midi.ticks_per_beat}) is not supported")
    return midi


def _fix_text(text: str) -> str:
    """Text meta events are read as latin-1; re-read as UTF-8 where that is valid."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def _program_at(changes: list[tuple[int, int]], tick: int) -> int | None:
    program = None
    for at, value in changes:
        if at > tick and program is not None:
            break
        program = value
    return program


# --------------------------------------------------------------------------- quantizing


def quantize(
    content: MidiContent,
    *,
    steps_per_quarter: int = STEPS_PER_QUARTER,
    mapping: Mapping[str | int, str] | None = None,
) -> dict[str, list[Note]]:
    """Put a file's notes onto a grid of ``steps_per_quarter`` steps a beat, as parts.

    Onsets and releases are rounded to the nearest step (halves up); every note keeps at
    least one step; duplicates (same part, step and pitch) keep the longest. Bar 0 starts
    at beat 0.

    With ``mapping`` (track name or index into ``content.tracks`` -> part name) only the
    mapped tracks are used; several tracks may feed one part. Without it the parts are
    ``melody``, ``bass`` and ``drums`` (each possibly empty):

    - drums: every track on channel 10;
    - bass: the non-drum track with a GM bass program (32..39) and the lowest mean pitch,
      else the non-drum track with the lowest mean pitch, when there are at least two
      non-drum tracks with notes;
    - melody: among the other non-drum tracks, the "upper" ones (mean pitch within an
      octave of the highest mean pitch), the one with the most distinct onset steps (so
      that chords do not count extra), then the higher mean pitch.

    The parts may still be polyphonic; :func:`~engine.music.encoding.encode_melody` keeps
    the highest note where melody or bass notes overlap.
    """
    if not (isinstance(steps_per_quarter, int) and steps_per_quarter > 0):
        raise ValueError(f"steps_per_quarter must be a positive int, got {steps_per_quarter!r}")
    if mapping is None:
        chosen = _auto_parts(content, steps_per_quarter)
    else:
        chosen = {}
        for key, part in mapping.items():
            feeding = chosen.setdefault(part, [])
            seen = {t.index for t in feeding}
            feeding.extend(t for t in _find_tracks(content, key) if t.index not in seen)
    return {part: _quantize_notes((n for t in tracks for n in t.notes), steps_per_quarter)
            for part, tracks in chosen.items()}


def _find_tracks(content: MidiContent, key: str | int) -> list[TrackContent]:
    if isinstance(key, int) and not isinstance(key, bool):
        if 0 <= key < len(content.tracks):
            return [content.tracks[key]]
        raise ValueError(f"{content.path}: no track index {key} "
                         f"(the file has {len(content.tracks)} tracks)")
    tracks = [t for t in content.tracks if t.name == key]
    if not tracks:
        raise ValueError(f"{content.path}: no track named {key!r} "
                         f"(tracks: {[t.name for t in content.tracks]})")
    return tracks


def _auto_parts(content: MidiContent, steps_per_quarter: int) -> dict[str, list[TrackContent]]:
    drums = [t for t in content.tracks if t.is_drum and t.notes]
    pitched = [t for t in content.tracks if not t.is_drum and t.notes]
    bass: list[TrackContent] = []
    if len(pitched) >= 2:
        gm_bass = [t for t in pitched if t.program in GM_BASS_PROGRAMS]
        bass = [min(gm_bass or pitched, key=lambda t: (t.mean_pitch, t.index))]
    rest = [t for t in pitched if t not in bass]
    melody: list[TrackContent] = []
    if rest:
        top = max(t.mean_pitch for t in rest)
        upper = [t for t in rest if t.mean_pitch >= top - 12]
        def onsets(track: TrackContent) -> int:
            return len({_round_half_up(n.start_beat * steps_per_quarter) for n in track.notes})

        melody = [max(upper, key=lambda t: (onsets(t), t.mean_pitch, -t.index))]
    return {MELODY: melody, BASS: bass, DRUMS: drums}


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _quantize_notes(notes: Iterable[MidiNote], steps_per_quarter: int) -> list[Note]:
    best: dict[tuple[int, int], Note] = {}
    for note in notes:
        start = _round_half_up(note.start_beat * steps_per_quarter)
        end = max(_round_half_up(note.end_beat * steps_per_quarter), start + 1)
        quantized = Note(start, note.pitch, end, note.velocity)
        old = best.get((start, note.pitch))
        if old is None or (end, note.velocity) > (old.end, old.velocity):
            best[(start, note.pitch)] = quantized
    return sorted(best.values())


def quantize_to_windows(
    parts: Mapping[str, Sequence[Note]],
    bars: int,
    hop_bars: int,
    *,
    max_silent_fraction: float = 0.5,
) -> list[dict[str, np.ndarray]]:
    """Slice parts (absolute 16th steps, 4/4) into encoded windows of ``bars`` bars.

    Windows start every ``hop_bars`` bars from bar 0 and lie wholly inside the music
    (up to the bar holding the last note's end). Each window maps every given part
    (``melody``, ``bass``, ``drums``) to ``(bars * 16,)`` int64 classes: melody and bass
    through :func:`encode_melody`, drums through :func:`encode_drums`. Only notes that start
    inside a window count for it. Windows whose encoded melody is silent in more than
    ``max_silent_fraction`` of the steps are skipped (when a melody part is given).
    """
    if not (isinstance(bars, int) and bars > 0 and isinstance(hop_bars, int) and hop_bars > 0):
        raise ValueError(f"bars and hop_bars must be positive ints, got {bars!r}, {hop_bars!r}")
    unknown = [name for name in parts if name not in PART_NAMES]
    if unknown:
        raise ValueError(f"unknown parts {unknown}: windows hold {', '.join(PART_NAMES)}")
    n_steps = bars * STEPS_PER_BAR
    ordered = {name: sorted(parts[name]) for name in PART_NAMES if name in parts}
    starts = {name: [n.start for n in notes] for name, notes in ordered.items()}
    last = max((n.end for notes in ordered.values() for n in notes), default=0)
    total_bars = -(-last // STEPS_PER_BAR)

    windows = []
    for first_bar in range(0, total_bars - bars + 1, hop_bars):
        offset = first_bar * STEPS_PER_BAR
        window: dict[str, np.ndarray] = {}
        for name, notes in ordered.items():
            lo = bisect.bisect_left(starts[name], offset)
            hi = bisect.bisect_left(starts[name], offset + n_steps)
            inside = [n.shifted(-offset) for n in notes[lo:hi]]
            encode = encode_drums if name == DRUMS else encode_melody
            window[name] = encode(inside, n_steps)
        if MELODY in window and silent_steps(window[MELODY]) > max_silent_fraction * n_steps:
            continue
        windows.append(window)
    return windows


def silent_steps(events: Sequence[int] | np.ndarray) -> int:
    """How many steps of a 90-class melody sequence have no note sounding."""
    sounding, silent = False, 0
    for event in events:
        if event >= 2:
            sounding = True
        elif event == NOTE_OFF:
            sounding = False
        silent += not sounding
    return silent
