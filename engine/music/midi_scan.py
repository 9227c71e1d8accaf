"""How much work a MIDI file is, counted from its bytes before ``mido`` parses it.

``mido`` builds a Python object per event (some 100,000-150,000 events a second on a quiet
machine, a few times fewer on a busy one) and reads long messages (SysEx, meta text) one
byte at a time. A valid-looking 16 MiB file can hold millions of events: minutes of
parsing. :func:`check_midi_work` walks the chunk structure the way ``mido`` does (chunk
headers, then each event's delta time, status and length), without building anything,
and refuses a file past :data:`MAX_MIDI_WORK` after at most that much walking, so any MIDI
file is read or refused within a few seconds.

The walk stops quietly where ``mido`` itself would refuse the file (a missing chunk, an
undefined status byte, a message over ``mido``'s own length limit, the end of the data):
``mido`` then says what is wrong.
"""

from __future__ import annotations

import struct
from os import PathLike

__all__ = ["MAX_MIDI_WORK", "MidiTooLargeError", "check_midi_work"]

MAX_MIDI_WORK = 150_000
"""Events one MIDI file may hold, each 16 bytes of a long message (SysEx, text) counted as
one more event: some 1.5 s of reading on a quiet machine. A long orchestral file holds a few
tens of thousands of events; a whole album in one file may not fit."""
BYTES_PER_WORK = 16  # mido reads long messages a byte at a time: ~16 bytes cost one event
MIDO_MAX_MESSAGE = 1_000_000  # mido refuses longer messages itself
MAX_VARLEN_BYTES = 4  # the MIDI file format's variable-length numbers are at most 4 bytes

# data bytes after the status byte, for the status bytes mido knows (meta and SysEx apart)
_DATA_BYTES = {**{status: 2 for status in range(0x80, 0xC0)},
               **{status: 1 for status in range(0xC0, 0xE0)},
               **{status: 2 for status in range(0xE0, 0xF0)},
               0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0,
               **{status: 0 for status in (0xF8, 0xFA, 0xFB, 0xFC, 0xFE)}}


class MidiTooLargeError(ValueError):
    """A MIDI file of more events than Encore reads (the message names the file and the fix)."""


class _MidoRefusesError(Exception):
    """The walk cannot go on: mido refuses the file too, with its own reason."""


def check_midi_work(data: bytes, path: str | PathLike[str]) -> int:
    """The work (events, long messages by size) of the standard MIDI file in ``data``;
    :class:`MidiTooLargeError` as soon as it passes :data:`MAX_MIDI_WORK`, and a
    ValueError for a variable-length number longer than the format allows."""
    walk = _Walk(data, path)
    try:
        walk.file()
    except _MidoRefusesError:
        pass
    return walk.work


class _Walk:
    def __init__(self, data: bytes, path: str | PathLike[str]) -> None:
        self.data = data
        self.path = path
        self.pos = 0
        self.work = 0

    def file(self) -> None:
        data = self.data
        if len(data) < 14 or data[:4] != b"MThd":
            raise _MidoRefusesError
        (size,) = struct.unpack_from(">L", data, 4)
        (tracks,) = struct.unpack_from(">h", data, 10)
        self.pos = 8 + size  # mido reads the whole header chunk
        for _ in range(tracks):
            self.track()

    def track(self) -> None:
        data, end = self.data, len(self.data)
        if self.pos + 8 > end or data[self.pos:self.pos + 4] != b"MTrk":
            raise _MidoRefusesError
        (size,) = struct.unpack_from(">L", data, self.pos + 4)
        self.pos += 8
        start, last_status = self.pos, None
        self.spend(1, 0)
        while self.pos - start != size:  # as mido: a message may run past the chunk's end
            began = self.pos
            self.number()  # the delta time
            if self.pos >= end:
                raise _MidoRefusesError
            status = data[self.pos]
            self.pos += 1
            peeked = 0
            if status < 0x80:  # running status: this byte is the first data byte
                if last_status is None:
                    raise _MidoRefusesError
                status, peeked = last_status, 1
            elif status != 0xFF:  # meta events do not set the running status
                last_status = status
            if status == 0xFF:
                self.pos += 1  # the meta type
                self.skip(self.number())
            elif status in (0xF0, 0xF7):
                self.skip(self.number())
            elif status in _DATA_BYTES:
                self.skip(max(_DATA_BYTES[status] - peeked, 0))
            else:
                raise _MidoRefusesError
            self.spend(1, self.pos - began)

    def number(self) -> int:
        """A variable-length number (at most 4 bytes, as the format allows)."""
        data, value = self.data, 0
        for _ in range(MAX_VARLEN_BYTES):
            if self.pos >= len(data):
                raise _MidoRefusesError
            byte = data[self.pos]
            self.pos += 1
            value = (value << 7) | (byte & 0x7F)
            if byte < 0x80:
                return value
        raise ValueError(f"{self.path}: not a readable MIDI file (variable-length number): "
                         f"one at byte {self.pos - MAX_VARLEN_BYTES} is longer than the "
                         f"{MAX_VARLEN_BYTES} bytes the format allows; the file is damaged")

    def skip(self, length: int) -> None:
        if length > MIDO_MAX_MESSAGE or self.pos + length > len(self.data):
            raise _MidoRefusesError
        self.pos += length

    def spend(self, events: int, nbytes: int) -> None:
        self.work += events + nbytes // BYTES_PER_WORK
        if self.work > MAX_MIDI_WORK:
            raise MidiTooLargeError(
                f"{self.path}: not a readable MIDI file (too many events): it holds more than "
                f"{MAX_MIDI_WORK:,} events (long SysEx or text messages counted by size), more "
                "than Encore reads from one file within its time limit; split it into shorter "
                "files (by tracks or by sections, in a sequencer) and give those")
