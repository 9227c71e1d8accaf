"""Band music from the Freedoom soundtrack: read the WAD files, pick melody, bass and drums.

Freedoom (https://freedoom.github.io) is a free game data set under the BSD-3-Clause
licence; Debian ships it as the ``freedoom`` package (``apt-get install freedoom``), whose
``freedoom1.wad`` and ``freedoom2.wad`` hold about 67 pieces of music (rock, metal,
ambient) as General MIDI files in lumps named ``D_*``. The files are read here at run
time and never copied into the repository; anything trained or measured on them must say
"Freedoom soundtrack, BSD-3-Clause" on its card.

A WAD is a 12-byte header (``IWAD`` or ``PWAD``, lump count, directory offset, little
endian) and a directory of 16-byte entries (offset, size, 8-byte NUL-padded name). Music
lumps are standard MIDI (``MThd``) or the game's older MUS format (``MUS\\x1a``), which is
decoded here too (MUS has no tempo: its 140 ticks per second are read as 120 beats per
minute, as the usual converters do). WADs are untrusted: sizes, counts and every offset
are checked and a bad file raises :class:`WadError` naming it.

Parts are picked per channel: channel 10 (index 9) is the drums; the bass is the busiest
channel playing a GM bass (programs 32-39), else the lowest channel whose median pitch is
under G3; the melody is, among the other channels with at least a quarter of the busiest
one's notes (pads and sound effects, programs 88-127, left out), the one with the highest
median pitch, reduced to its top line.

Run ``python -m export.freedoom_corpus`` to list the pieces and the parts picked.
"""

from __future__ import annotations

import argparse
import io
import statistics
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from export.music_eval import Hit, Song, Tone, monophonic

DEFAULT_WADS = (Path("/usr/share/games/doom/freedoom1.wad"),
                Path("/usr/share/games/doom/freedoom2.wad"))
LICENCE = "BSD-3-Clause (Freedoom project)"
INSTALL_HINT = "install Debian's freedoom package: apt-get install freedoom"

MAX_WAD_BYTES = 256 << 20
MAX_LUMPS = 100_000
MAX_MUSIC_BYTES = 1 << 20  # a music lump larger than this is refused
MAX_NOTES = 200_000  # per piece
MAX_BEATS = 20_000  # a piece longer than this (over an hour and a half) is refused
DRUM_CHANNEL = 9
MUS_TICKS_PER_BEAT = 70  # 140 Hz read as 120 BPM


class WadError(ValueError):
    """A WAD or music lump that cannot be read; the message names the file."""


@dataclass(frozen=True)
class Lump:
    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class MusicLump:
    """A music lump: its WAD, name, format ("midi" or "mus") and bytes."""

    wad: str
    name: str
    kind: str
    data: bytes


@dataclass
class Channel:
    """The notes one MIDI channel plays: program (last one set) and notes in beats."""

    program: int = 0
    tones: list[Tone] = field(default_factory=list)


# ------------------------------------------------------------------ WAD


def read_directory(data: bytes, source: str = "WAD") -> list[Lump]:
    """The lumps listed in a WAD's directory, each checked to lie inside the file."""
    if len(data) < 12:
        raise WadError(f"{source}: too short for a WAD header ({len(data)} bytes)")
    ident, count, offset = struct.unpack_from("<4sii", data, 0)
    if ident not in (b"IWAD", b"PWAD"):
        raise WadError(f"{source}: not a WAD file (starts with {ident!r}, expected IWAD/PWAD)")
    if not 0 <= count <= MAX_LUMPS:
        raise WadError(f"{source}: lump count {count} outside 0..{MAX_LUMPS}")
    if offset < 12 or offset + 16 * count > len(data):
        raise WadError(f"{source}: directory ({count} entries at {offset}) runs past the end "
                       f"of the file ({len(data)} bytes); the file is truncated or damaged")
    lumps = []
    for i in range(count):
        pos, size, raw = struct.unpack_from("<ii8s", data, offset + 16 * i)
        name = raw.split(b"\0", 1)[0].decode("ascii", "replace")
        if size < 0 or pos < 0 or pos + size > len(data):
            raise WadError(f"{source}: lump {i} ({name!r}) lies outside the file")
        lumps.append(Lump(name, pos, size))
    return lumps


def music_lumps(path: Path) -> list[MusicLump]:
    """The ``D_*`` lumps of a WAD that hold MIDI or MUS music."""
    try:
        size = path.stat().st_size
        if size > MAX_WAD_BYTES:
            raise WadError(f"{path}: {size} bytes, more than the {MAX_WAD_BYTES} a WAD may have")
        data = path.read_bytes()
    except OSError as exc:
        raise WadError(f"{path}: cannot read ({exc.strerror}); {INSTALL_HINT}") from exc
    found = []
    for lump in read_directory(data, str(path)):
        if not lump.name.upper().startswith("D_") or lump.size > MAX_MUSIC_BYTES:
            continue
        body = data[lump.offset:lump.offset + lump.size]
        kind = {b"MThd": "midi", b"MUS\x1a": "mus"}.get(body[:4])
        if kind is not None:
            found.append(MusicLump(path.name, lump.name, kind, body))
    return found


# ------------------------------------------------------------------ notes per channel


def _close(channels: dict[int, Channel], sounding: dict[tuple[int, int], float], channel: int,
           pitch: int, beat: float) -> None:
    start = sounding.pop((channel, pitch), None)
    if start is not None:
        end = beat if beat > start else start + 0.25  # zero-length (drum) notes: a 16th
        channels.setdefault(channel, Channel()).tones.append(Tone(start, end, pitch))


def midi_channels(data: bytes, source: str = "MIDI") -> dict[int, Channel]:
    """Notes per channel of a standard MIDI file, times in beats."""
    import mido

    try:
        midi = mido.MidiFile(file=io.BytesIO(data))
        tpb = midi.ticks_per_beat
        if not tpb or tpb <= 0:
            raise WadError(f"{source}: SMPTE or zero time division is not supported")
        tracks = [list(track) for track in midi.tracks]
    except WadError:
        raise
    except Exception as exc:  # noqa: BLE001 - mido raises many types on damaged files
        raise WadError(f"{source}: not a readable MIDI file ({exc})") from exc
    channels: dict[int, Channel] = {}
    notes = 0
    for track in tracks:
        tick = 0
        sounding: dict[tuple[int, int], float] = {}
        for msg in track:
            tick += msg.time
            beat = tick / tpb
            if msg.type == "program_change":
                channels.setdefault(msg.channel, Channel()).program = msg.program
            elif msg.type == "note_on" and msg.velocity > 0:
                _close(channels, sounding, msg.channel, msg.note, beat)
                sounding[(msg.channel, msg.note)] = beat
                notes += 1
                if notes > MAX_NOTES:
                    raise WadError(f"{source}: more than {MAX_NOTES} notes")
            elif msg.type in ("note_on", "note_off"):
                _close(channels, sounding, msg.channel, msg.note, beat)
        for channel, pitch in list(sounding):
            _close(channels, sounding, channel, pitch, tick / tpb)
    return channels


def _mus_bytes(data: bytes, pos: int, end: int, source: str) -> Iterator[int]:
    while pos < end:
        yield data[pos]
        pos += 1
    raise WadError(f"{source}: MUS score ends in the middle of an event")


def mus_channels(data: bytes, source: str = "MUS") -> dict[int, Channel]:
    """Notes per (MIDI) channel of a MUS lump; MUS channel 15 is the drums (MIDI 9)."""
    if len(data) < 16 or data[:4] != b"MUS\x1a":
        raise WadError(f"{source}: not a MUS lump")
    length, start = struct.unpack_from("<HH", data, 4)
    end = min(len(data), start + length)
    if start < 16 or start >= len(data):
        raise WadError(f"{source}: MUS score offset {start} lies outside the lump")
    stream = _mus_bytes(data, start, end, source)
    channels: dict[int, Channel] = {}
    sounding: dict[tuple[int, int], float] = {}
    volume = [100] * 16
    tick = notes = 0
    for descriptor in stream:
        kind, mus_channel = (descriptor >> 4) & 7, descriptor & 15
        channel = DRUM_CHANNEL if mus_channel == 15 else (
            mus_channel if mus_channel < DRUM_CHANNEL else mus_channel + 1) % 16
        beat = tick / MUS_TICKS_PER_BEAT
        if kind == 0:  # release note
            _close(channels, sounding, channel, next(stream) & 127, beat)
        elif kind == 1:  # play note, volume follows when bit 7 is set
            note = next(stream)
            if note & 128:
                volume[channel] = next(stream) & 127
            _close(channels, sounding, channel, note & 127, beat)
            sounding[(channel, note & 127)] = beat
            notes += 1
            if notes > MAX_NOTES:
                raise WadError(f"{source}: more than {MAX_NOTES} notes")
        elif kind in (2, 3):  # pitch bend, system event: one byte
            next(stream)
        elif kind == 4:  # controller: number, value; controller 0 changes the instrument
            number, value = next(stream), next(stream)
            if number == 0:
                channels.setdefault(channel, Channel()).program = value & 127
        elif kind == 6:  # score end
            break
        else:
            raise WadError(f"{source}: unknown MUS event type {kind}")
        if descriptor & 128:  # a delay follows, 7 bits a byte, high bit = more
            delay = 0
            for _ in range(5):
                byte = next(stream)
                delay = (delay << 7) | (byte & 127)
                if not byte & 128:
                    break
            else:
                raise WadError(f"{source}: MUS delay longer than 5 bytes")
            tick += delay
    for channel, pitch in list(sounding):
        _close(channels, sounding, channel, pitch, tick / MUS_TICKS_PER_BEAT)
    return channels


# ------------------------------------------------------------------ parts


def _median_pitch(channel: Channel) -> float:
    return statistics.median(t.pitch for t in channel.tones)


def pick_parts(channels: dict[int, Channel], name: str = "piece") -> Song:
    """Melody, bass and drums of one piece (see the module text for the rules)."""
    drums = tuple(sorted(Hit(t.start, t.pitch)
                         for t in channels.get(DRUM_CHANNEL, Channel()).tones))
    pitched = {c: ch for c, ch in channels.items() if c != DRUM_CHANNEL and ch.tones}
    bass_channel = None
    gm_bass = [c for c, ch in pitched.items() if 32 <= ch.program <= 39]
    if gm_bass:
        bass_channel = max(gm_bass, key=lambda c: len(pitched[c].tones))
    else:
        low = [c for c in pitched if _median_pitch(pitched[c]) < 55]
        if low:
            bass_channel = min(low, key=lambda c: _median_pitch(pitched[c]))
    rest = {c: ch for c, ch in pitched.items() if c != bass_channel and ch.program < 88}
    melody_channel = None
    if rest:
        busiest = max(len(ch.tones) for ch in rest.values())
        busy = [c for c, ch in rest.items() if len(ch.tones) >= busiest / 4]
        melody_channel = max(busy, key=lambda c: _median_pitch(rest[c]))
    melody = monophonic(pitched[melody_channel].tones) if melody_channel is not None else ()
    bass = (monophonic(pitched[bass_channel].tones, keep="low")
            if bass_channel is not None else ())
    return Song(name, melody, bass, drums)


def lump_song(lump: MusicLump) -> Song:
    """A music lump read into a song of melody, bass and drums."""
    source = f"{lump.wad}:{lump.name}"
    reader = midi_channels if lump.kind == "midi" else mus_channels
    song = pick_parts(reader(lump.data, source), source)
    if song.length_beats > MAX_BEATS:
        raise WadError(f"{source}: {song.length_beats:.0f} beats long, more than {MAX_BEATS}")
    return song


def load_songs(wads: tuple[Path, ...] = DEFAULT_WADS, limit: int | None = None) -> list[Song]:
    """All distinct pieces of the WADs as songs (pieces that cannot be read are skipped,
    with a line on stderr), or the first ``limit``; raises :class:`WadError` when no WAD
    exists."""
    present = [w for w in wads if w.is_file()]
    if not present:
        raise WadError(f"no Freedoom WAD found ({', '.join(map(str, wads))}); {INSTALL_HINT}")
    songs, seen = [], set()
    for wad in present:
        for lump in music_lumps(wad):
            if lump.data in seen:  # the same piece under another name
                continue
            seen.add(lump.data)
            if limit is not None and len(songs) >= limit:
                return songs
            try:
                songs.append(lump_song(lump))
            except WadError as exc:
                print(f"skipped {exc}", file=sys.stderr)
    return songs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("wads", nargs="*", type=Path, help="WAD files (default: Debian's)")
    args = parser.parse_args(argv)
    try:
        songs = load_songs(tuple(args.wads) or DEFAULT_WADS)
    except WadError as exc:
        print(f"encore: error: {exc}", file=sys.stderr)
        return 2
    for song in songs:
        print(f"{song.name:28s} melody {len(song.melody):5d}  bass {len(song.bass):5d}  "
              f"drums {len(song.drums):5d}  beats {song.length_beats:7.1f}")
    print(f"{len(songs)} pieces; licence: {LICENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
