"""The live set, recorded as it is played: song.mid and song.wav next to the event log,
valid up to the last complete bar whatever happens to the process (``kill -9`` included).

- MIDI: one type-0 track, every part on its own channel (the channels the patch gives),
  a tempo event wherever the tempo changed, lyric events on the sung syllables. The track
  grows bar by bar in memory; after each bar the whole file is written to a temporary
  file and renamed over ``song.mid`` (an atomic replace), so the file on disk is always a
  complete MIDI file. Notes still sounding at the bar line are closed there in that
  snapshot and carry on in the next one.
- WAV: the internal mix exactly as the audio callback hands it to the output. The callback
  copies each block into a lock-free ring (:class:`TapRing`, no allocation, no I/O); a
  writer thread drains it into ``song.wav`` and flushes the file (libsndfile rewrites the
  header) at every bar, so a reader sees the audio up to the last flushed bar.

All file I/O runs in the recorder's thread: the show's loop only hands it bytes and
numbers. Notes and lyrics are given in beats from the song's start. The file is written
with mido's encoders (delta times, meta events, chunks: the MIDI library render and replay
write with); notes and controllers are kept as the three wire bytes the MIDI sender sends
(a mido message object per note cost the show's loop ten times as long), and only the
committed part of the track is kept encoded, so a commit costs the bar, not the set.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np
from mido.midifiles.meta import encode_variable_int, meta_charset
from mido.midifiles.midifiles import write_chunk

log = logging.getLogger(__name__)

TICKS_PER_BEAT = 480
_DRAIN_S = 0.1


def _delta(ticks: int) -> bytes:
    if ticks < 0:
        raise ValueError(f"a MIDI delta time cannot be negative ({ticks})")
    return bytes(encode_variable_int(ticks))


def _meta(message: mido.MetaMessage) -> bytes:
    """A meta event as mido writes it into a file (text in UTF-8)."""
    with meta_charset("utf-8"):
        return bytes(message.bytes())


def _tempo(bpm: float) -> bytes:
    return _meta(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))


_END_OF_TRACK = _meta(mido.MetaMessage("end_of_track"))


class TapRing:
    """Single-producer (the audio callback), single-consumer (the writer thread) ring of
    stereo float32 frames. The producer never waits: when the consumer falls a whole ring
    behind, the oldest unread frames are lost and counted."""

    def __init__(self, capacity_frames: int) -> None:
        self.capacity = int(capacity_frames)
        self._ring = np.zeros((self.capacity, 2), dtype=np.float32)
        self._cursor = np.zeros(1, dtype=np.int64)  # frames written: producer only
        self._read = 0      # consumer only
        self.lost_frames = 0

    @property
    def storage(self) -> np.ndarray:
        """The ring's ``(capacity, 2)`` float32 memory (the native audio core writes it)."""
        return self._ring

    @property
    def cursor(self) -> np.ndarray:
        """int64 ``[frames written]`` (the native audio core moves it on)."""
        return self._cursor

    def push(self, block: np.ndarray) -> None:
        """Producer (audio callback): copy one block in."""
        n = len(block)
        written = int(self._cursor[0])
        start = written % self.capacity
        first = min(n, self.capacity - start)
        self._ring[start:start + first] = block[:first]
        if first < n:
            self._ring[:n - first] = block[first:]
        self._cursor[0] = written + n

    def pull(self) -> np.ndarray:
        """Consumer: every frame written since the last pull (a copy)."""
        written = int(self._cursor[0])
        if written - self._read > self.capacity:
            self.lost_frames += written - self._read - self.capacity
            self._read = written - self.capacity
        n = written - self._read
        if n <= 0:
            return np.zeros((0, 2), dtype=np.float32)
        start = self._read % self.capacity
        first = min(n, self.capacity - start)
        out = np.concatenate([self._ring[start:start + first], self._ring[:n - first]])
        self._read = written
        return out


@dataclass
class _Pending:
    tick: int
    order: int
    data: bytes


class MidiRecording:
    """A type-0 MIDI file that grows bar by bar and is always complete on disk."""

    def __init__(self, path: Path, bpm: float, programs: dict[int, int]) -> None:
        self.path = path
        self._track = bytearray()
        self._last_tick = 0
        self._pending: list[_Pending] = []
        self._order = 0
        self._sounding: dict[tuple[int, int], int] = {}  # (channel, pitch) -> note-offs due
        self._add(0, _meta(mido.MetaMessage("time_signature", numerator=4, denominator=4,
                                            clocks_per_click=24,
                                            notated_32nd_notes_per_beat=8)))
        self._add(0, _tempo(bpm))
        for channel, program in sorted(programs.items()):
            if channel != 9:
                self._add(0, bytes([0xC0 | channel, program & 0x7F]))

    def _add(self, tick: int, data: bytes) -> None:
        self._pending.append(_Pending(max(0, tick), self._order, data))
        self._order += 1

    def tempo(self, beat: float, bpm: float) -> None:
        self._add(round(beat * TICKS_PER_BEAT), _tempo(bpm))

    def note(self, channel: int, pitch: int, velocity: int, start_beat: float,
             end_beat: float) -> None:
        on = round(start_beat * TICKS_PER_BEAT)
        off = max(on + 1, round(end_beat * TICKS_PER_BEAT))
        self._add(on, bytes([0x90 | channel, pitch & 0x7F, max(1, velocity) & 0x7F]))
        self._add(off, bytes([0x80 | channel, pitch & 0x7F, 0]))

    def control(self, channel: int, controller: int, value: int, beat: float) -> None:
        self._add(round(beat * TICKS_PER_BEAT),
                  bytes([0xB0 | channel, controller & 0x7F, value & 0x7F]))

    def lyric(self, beat: float, text: str) -> None:
        self._add(round(beat * TICKS_PER_BEAT), _meta(mido.MetaMessage("lyrics", text=text)))

    def commit(self, until_beat: float) -> bytes:
        """Move every event before ``until_beat`` into the track and return the bytes of
        a complete file up to there (notes still sounding are closed at that point)."""
        until = round(until_beat * TICKS_PER_BEAT)
        # note-offs sort before note-ons and lyrics at one tick (offs carry status 0x8n)
        self._pending.sort(key=lambda e: (e.tick, 0 if e.data[0] & 0xF0 == 0x80 else 1,
                                          e.order))
        due = [e for e in self._pending if e.tick < until]
        self._pending = [e for e in self._pending if e.tick >= until]
        for event in due:
            tick = max(event.tick, self._last_tick)  # a note nudged early past a commit
            self._track += _delta(tick - self._last_tick) + event.data
            self._last_tick = tick
            status = event.data[0] & 0xF0
            key = (event.data[0] & 0x0F, event.data[1]) if status in (0x80, 0x90) else None
            if status == 0x90:
                self._sounding[key] = self._sounding.get(key, 0) + 1
            elif status == 0x80 and self._sounding.get(key):
                self._sounding[key] -= 1
        tail = bytearray()
        at = self._last_tick
        for (channel, pitch), count in sorted(self._sounding.items()):
            for _ in range(count):
                tail += _delta(max(0, until - at)) + bytes([0x80 | channel, pitch, 0])
                at = max(at, until)
        tail += _delta(max(0, until - at)) + _END_OF_TRACK
        out = io.BytesIO()
        write_chunk(out, b"MThd", struct.pack(">hhh", 0, 1, TICKS_PER_BEAT))  # type 0, 1 track
        write_chunk(out, b"MTrk", bytes(self._track) + bytes(tail))
        return out.getvalue()


class SetRecorder:
    """Writes song.mid (and song.wav when given a tap) in its own thread."""

    def __init__(self, folder: Path, bpm: float, programs: dict[int, int], *,
                 sample_rate: int | None = None, tap: TapRing | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.midi = MidiRecording(self.folder / "song.mid", bpm, programs)
        self.tap = tap
        self.sample_rate = sample_rate
        self._jobs: queue.Queue[tuple[str, object]] = queue.Queue()
        self._wav = None
        self.frames_written = 0
        self.bars_committed = 0
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name="encore-recorder", daemon=True)
        self._thread.start()

    def bar_done(self, until_beat: float) -> None:
        """A bar's notes are all given: commit the MIDI up to ``until_beat`` and flush
        the WAV (both in the recorder's thread)."""
        self._jobs.put(("midi", self.midi.commit(until_beat)))
        self._jobs.put(("flush", None))

    def close(self, until_beat: float | None = None) -> None:
        if until_beat is not None:
            self._jobs.put(("midi", self.midi.commit(until_beat)))
        self._jobs.put(("close", None))
        self._thread.join(5.0)

    # -- the thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                kind, payload = self._jobs.get(timeout=_DRAIN_S)
            except queue.Empty:
                self._drain()
                continue
            try:
                if kind == "midi":
                    self._write_midi(payload)  # type: ignore[arg-type]
                elif kind == "flush":
                    self._drain()
                    if self._wav is not None:
                        self._wav.flush()
                elif kind == "close":
                    self._drain()
                    if self._wav is not None:
                        self._wav.close()
                        self._wav = None
                    return
            except Exception as err:  # noqa: BLE001 - a full disk must not stop the music
                self.errors.append(f"{kind}: {type(err).__name__}: {err}")
                log.warning("recorder: %s", self.errors[-1])

    def _write_midi(self, data: bytes) -> None:
        tmp = self.midi.path.with_suffix(".mid.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.midi.path)
        self.bars_committed += 1

    def _drain(self) -> None:
        if self.tap is None or self.sample_rate is None:
            return
        block = self.tap.pull()
        if not len(block):
            return
        if self._wav is None:
            import soundfile as sf

            self._wav = sf.SoundFile(str(self.folder / "song.wav"), "w",
                                     samplerate=self.sample_rate, channels=2,
                                     subtype="PCM_16")
        self._wav.write(block)
        self.frames_written += len(block)
