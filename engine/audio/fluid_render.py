"""Offline FluidSynth rendering, in process, with no audio driver; WAV writing.

:class:`FluidRenderer` owns one FluidSynth synth (pyfluidsynth) with a SoundFont loaded
and renders timestamped :class:`SynthEvent` lists to float32 stereo arrays::

    with FluidRenderer("/usr/share/sounds/sf2/TimGM6mb.sf2") as fr:
        fr.program(0, 0)                      # piano on channel 1
        audio = fr.render(note_events(notes, bpm=120, channel=0), duration_s=8.0)
    write_wav("out.wav", audio, fr.sample_rate)

How it renders: events are sorted by time and applied between blocks: the synth is asked
for exactly the frames up to the next event's sample offset (``round(time * rate)``),
then the event is sent, and so on. Samples come from ``fluid_synth_write_float`` (called
through ctypes on the library pyfluidsynth loaded, writing straight into the output
array); if that symbol were missing, pyfluidsynth's int16 ``get_samples`` / 32768 is used.

Timing resolution: FluidSynth computes audio in internal blocks of 64 frames and only
starts a voice at a block boundary, so a note sounds at the first 64-frame boundary at or
after its sample offset: never early, at most 63 frames (1.4 ms at 44.1 kHz) late, and the
same every time. Every render starts on a block boundary (the frame count of each render
is padded internally to a multiple of 64), so the alignment does not depend on what was
rendered before.

Determinism: :meth:`FluidRenderer.render` starts from a freshly created synth (nothing
sounding, controllers and effects at their defaults; the programs set with
:meth:`FluidRenderer.program` restored) with one synthesis thread and float output (no
int16 dither), so the same events give sample-identical output, in the same process and
in fresh ones.

Channels are 0-based (MIDI channel 10 = 9). Channel 9 is FluidSynth's drum channel (GM
mode): it plays bank 128 (the standard kit) unless told otherwise.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from engine.music.notes import STEPS_PER_QUARTER, Note

StrPath = str | PathLike[str]

DRUM_CHANNEL = 9
DRUM_BANK = 128
FLUID_BLOCK = 64
"""FluidSynth's internal block size (FLUID_BUFSIZE), in frames."""

DEFAULT_SOUNDFONTS = (
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
)
"""Searched in order when no SoundFont is named."""

_CHANNEL_TYPE_MELODIC = 0
_CHANNEL_TYPE_DRUM = 1


class SoundFontNotFoundError(FileNotFoundError):
    """The SoundFont file does not exist."""


def _missing_soundfont(path: str | None) -> SoundFontNotFoundError:
    what = f"SoundFont not found: {path}" if path else (
        "no SoundFont found (looked for " + ", ".join(DEFAULT_SOUNDFONTS) + ")")
    return SoundFontNotFoundError(
        f"{what}. Install the General MIDI SoundFont with "
        "`apt-get install timgm6mb-soundfont` (it gives /usr/share/sounds/sf2/TimGM6mb.sf2) "
        "or set `soundfont` in the [audio] section of the patch to an .sf2 file.")


def find_soundfont(soundfont: StrPath | None = None) -> Path:
    """The SoundFont to use: ``soundfont`` if given (it must exist), else the first of
    :data:`DEFAULT_SOUNDFONTS` that exists. Raises :class:`SoundFontNotFoundError`."""
    if soundfont is not None:
        path = Path(soundfont).expanduser()
        if not path.is_file():
            raise _missing_soundfont(str(path))
        return path
    for candidate in DEFAULT_SOUNDFONTS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise _missing_soundfont(None)


def _import_fluidsynth() -> Any:
    try:
        import fluidsynth
    except ImportError as exc:  # pyfluidsynth raises ImportError when libfluidsynth is absent
        raise RuntimeError(
            "FluidSynth is not available: install the library (`apt-get install "
            "libfluidsynth3`) and the Python binding (`pip install pyfluidsynth`)"
            f" ({exc})") from exc
    return fluidsynth


# --------------------------------------------------------------------------- events

EVENT_ORDER = {"program": 0, "cc": 1, "pitch_bend": 1, "note_off": 2, "note_on": 3}
"""Kinds of event, with their order among events at the same sample: programs, then
controllers, then note-offs (so a re-struck note ends before it starts again), then
note-ons. (Shared with the live engine, :mod:`engine.live.audio_out`.)"""
_KINDS = EVENT_ORDER
_DATA_RANGES = {"note_on": (0, 127, 0, 127), "note_off": (0, 127, 0, 127),
                "cc": (0, 127, 0, 127), "program": (0, 127, -1, 16383),
                "pitch_bend": (-8192, 8191, 0, 0)}


def check_message(kind: str, channel: int, data1: int, data2: int) -> None:
    """Raise ValueError unless ``kind`` / ``channel`` / data make a valid synth message
    (the rules of :class:`SynthEvent`, without its time)."""
    if kind not in _KINDS:
        raise ValueError(f"unknown event kind {kind!r}; one of {sorted(_KINDS)}")
    if not 0 <= channel <= 15:
        raise ValueError(f"channel must be 0..15, got {channel}")
    low1, high1, low2, high2 = _DATA_RANGES[kind]
    if not (low1 <= data1 <= high1 and low2 <= data2 <= high2):
        raise ValueError(f"{kind} data out of range: {data1}, {data2} "
                         f"(want {low1}..{high1}, {low2}..{high2})")


@dataclass(frozen=True, slots=True)
class SynthEvent:
    """One timestamped synth message.

    ``kind`` and its data: ``note_on`` (pitch, velocity), ``note_off`` (pitch, -),
    ``cc`` (controller, value), ``program`` (program, bank; bank -1 = the channel's
    default: 128 on channel 9, else 0), ``pitch_bend`` (value -8192..8191, -).
    ``time`` is in seconds from the start of the render; ``channel`` is 0-based.
    """

    time: float
    kind: str
    channel: int
    data1: int = 0
    data2: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}; one of {sorted(_KINDS)}")
        if not (math.isfinite(self.time) and self.time >= 0):
            raise ValueError(f"event time must be a finite number >= 0, got {self.time!r}")
        check_message(self.kind, self.channel, self.data1, self.data2)

    @classmethod
    def note_on(cls, time: float, channel: int, pitch: int, velocity: int) -> SynthEvent:
        return cls(time, "note_on", channel, pitch, velocity)

    @classmethod
    def note_off(cls, time: float, channel: int, pitch: int) -> SynthEvent:
        return cls(time, "note_off", channel, pitch)

    @classmethod
    def cc(cls, time: float, channel: int, controller: int, value: int) -> SynthEvent:
        return cls(time, "cc", channel, controller, value)

    @classmethod
    def program(cls, time: float, channel: int, program: int, bank: int = -1) -> SynthEvent:
        return cls(time, "program", channel, program, bank)


EventLike = SynthEvent | tuple


def _as_event(event: EventLike) -> SynthEvent:
    if isinstance(event, SynthEvent):
        return event
    return SynthEvent(*event)


def note_events(
    notes: Iterable[Note | tuple[Note, float]],
    bpm: float,
    channel: int,
    *,
    start_s: float = 0.0,
) -> list[SynthEvent]:
    """Grid notes (absolute 16th steps) -> note_on / note_off events in seconds.

    Items may be plain notes or ``(note, offset_s)`` pairs from
    :func:`engine.music.arrangement.humanize`; the offset moves the whole note. Times
    before 0 are clamped to 0.
    """
    if bpm <= 0:
        raise ValueError(f"bpm must be > 0, got {bpm}")
    step_s = 60.0 / bpm / STEPS_PER_QUARTER
    out = []
    for item in notes:
        note, offset = (item, 0.0) if isinstance(item, Note) else item
        on = max(0.0, start_s + note.start * step_s + offset)
        off = max(on, start_s + note.end * step_s + offset)
        out.append(SynthEvent.note_on(on, channel, note.pitch, note.velocity))
        out.append(SynthEvent.note_off(off, channel, note.pitch))
    return out


# --------------------------------------------------------------------------- renderer


class FluidRenderer:
    """A FluidSynth synth with one SoundFont, rendering offline (no audio driver).

    Use as a context manager (the synth is deleted on exit) or call :meth:`close`.
    ``gain`` is FluidSynth's master gain; ``reverb`` / ``chorus`` switch its effects.
    """

    def __init__(self, soundfont: StrPath | None = None, sample_rate: int = 44100,
                 gain: float = 0.8, reverb: bool = True, chorus: bool = False) -> None:
        self.soundfont = find_soundfont(soundfont)
        if not (isinstance(sample_rate, int) and 8000 <= sample_rate <= 96000):
            raise ValueError(f"sample_rate must be an int in 8000..96000, got {sample_rate!r}")
        self.sample_rate = sample_rate
        fluidsynth = _import_fluidsynth()
        self._lib = ctypes.CDLL(fluidsynth.lib)
        self._write_float = getattr(self._lib, "fluid_synth_write_float", None)
        if self._write_float is not None:
            self._write_float.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                          ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                          ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
            self._write_float.restype = ctypes.c_int
        self._set_channel_type = getattr(self._lib, "fluid_synth_set_channel_type", None)
        if self._set_channel_type is not None:
            self._set_channel_type.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
            self._set_channel_type.restype = ctypes.c_int
        self._fluidsynth = fluidsynth
        self._settings = {"gain": float(gain), "reverb": bool(reverb), "chorus": bool(chorus)}
        self._programs: dict[int, tuple[int, int]] = {}
        self._synth: Any = None
        self._sfid = -1
        self._new_synth()

    def _new_synth(self) -> None:
        """(Re)create the synth: fresh voices, controllers and effects, SoundFont loaded
        (FluidSynth caches the sample data, so a reload is cheap: ~25 ms)."""
        self.close()
        synth = self._fluidsynth.Synth(
            gain=self._settings["gain"], samplerate=self.sample_rate, channels=16,
            **{"synth.reverb.active": int(self._settings["reverb"]),
               "synth.chorus.active": int(self._settings["chorus"]),
               "synth.cpu-cores": 1})
        sfid = synth.sfload(str(self.soundfont), 1)
        if sfid < 0:
            synth.delete()
            raise ValueError(f"{self.soundfont}: FluidSynth could not load it as a SoundFont")
        synth.program_reset()
        self._synth, self._sfid = synth, sfid

    @property
    def float_output(self) -> bool:
        """True when samples come from ``fluid_synth_write_float`` (else int16 / 32768)."""
        return self._write_float is not None

    @property
    def synth(self) -> Any:
        """The live pyfluidsynth ``Synth`` (RuntimeError once closed)."""
        return self._live()

    def active_voices(self) -> int:
        """How many voices are sounding (or releasing) now."""
        return int(self._live().get_active_voice_count())

    # -- lifecycle

    def close(self) -> None:
        synth, self._synth = getattr(self, "_synth", None), None
        if synth is not None:
            synth.delete()

    def __enter__(self) -> FluidRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self) -> Any:
        if self._synth is None:
            raise RuntimeError("the FluidRenderer is closed")
        return self._synth

    # -- messages

    def program(self, channel: int, program: int, bank: int | None = None) -> None:
        """Select ``program`` (0-based GM number) from ``bank`` on ``channel`` (0-based).

        ``bank`` None means the channel's default: 128 (the drum kits) on channel 9, 0
        elsewhere. Bank 128 on another channel makes it a drum channel, a melodic bank on
        channel 9 makes that melodic. The choice is kept across renders (a ``program``
        event inside a render lasts for that render only).
        """
        self._select(channel, program, bank)
        self._programs[channel] = (program, -1 if bank is None else bank)

    def _select(self, channel: int, program: int, bank: int | None) -> None:
        synth = self._live()
        if not 0 <= channel <= 15:
            raise ValueError(f"channel must be 0..15, got {channel}")
        if not 0 <= program <= 127:
            raise ValueError(f"program must be 0..127, got {program}")
        if bank is None or bank < 0:
            bank = DRUM_BANK if channel == DRUM_CHANNEL else 0
        if self._set_channel_type is not None:
            kind = _CHANNEL_TYPE_DRUM if bank == DRUM_BANK else _CHANNEL_TYPE_MELODIC
            self._set_channel_type(synth.synth, channel, kind)
        if synth.program_select(channel, self._sfid, bank, program) != 0:
            raise ValueError(f"{self.soundfont.name} has no preset bank {bank} program "
                             f"{program} (channel {channel})")

    def _send(self, event: SynthEvent) -> None:
        self.send(event.kind, event.channel, event.data1, event.data2)

    def send(self, kind: str, channel: int, data1: int, data2: int = 0) -> None:
        """Send one message now, unchecked (see :func:`check_message`): ``kind`` and data
        as in :class:`SynthEvent`. Used between blocks by :meth:`render` and by the live
        audio callback."""
        synth = self._synth
        if kind == "note_on":
            if data2 > 0:
                synth.noteon(channel, data1, data2)
            else:
                synth.noteoff(channel, data1)
        elif kind == "note_off":
            synth.noteoff(channel, data1)
        elif kind == "cc":
            synth.cc(channel, data1, data2)
        elif kind == "program":
            self._select(channel, data1, data2)
        elif kind == "pitch_bend":
            synth.pitch_bend(channel, data1)

    def reset(self) -> None:
        """Start again from a fresh synth (nothing sounding, controllers and effects at
        their defaults, no leftover block), keeping the programs set with :meth:`program`.

        A new synth rather than FluidSynth's system reset: that leaves releasing voices
        sounding and some voice state behind, so a second render would differ slightly.
        """
        self._live()
        self._new_synth()
        for channel, (program, bank) in sorted(self._programs.items()):
            self._select(channel, program, bank)

    # -- rendering

    def render_into(self, address: int, start: int, frames: int) -> None:
        """Render the next ``frames`` frames into the C-contiguous ``(n, 2)`` float32
        buffer at memory ``address`` (``array.ctypes.data``), from frame ``start``.
        Unchecked and allocation-free: for the live audio callback. Needs
        :attr:`float_output`."""
        self._write_float(self._synth.synth, frames, address, 2 * start, 2, address,
                          2 * start + 1, 2)

    def callback_functions(self) -> tuple[Callable[[int, int, int], None],
                                          Callable[[str, int, int, int], None],
                                          Callable[[], int]]:
        """``(render_into, send, active_voices)`` for the live audio callback: the same
        as the methods, but the FluidSynth calls keep the GIL (ctypes ``PyDLL``).

        Through ``CDLL`` every call releases the GIL and takes it back; when another
        thread of the process wants the GIL just then, the callback waits for its turn
        (up to the switch interval, longer when that thread is preempted), several
        times a block. Rendering a block or sending a note takes microseconds, so the
        callback is better off keeping the GIL: other threads wait a little more, the
        audio does not. Valid while this renderer is open and its synth not reset.
        """
        synth = self._live()
        handle = synth.synth
        lib = ctypes.PyDLL(self._fluidsynth.lib)
        write = lib.fluid_synth_write_float
        write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                          ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        write.restype = ctypes.c_int
        calls = {}
        for kind, name, nargs in (("note_on", "fluid_synth_noteon", 3),
                                  ("note_off", "fluid_synth_noteoff", 2),
                                  ("cc", "fluid_synth_cc", 3),
                                  ("pitch_bend", "fluid_synth_pitch_bend", 2)):
            function = getattr(lib, name)
            function.argtypes = [ctypes.c_void_p] + [ctypes.c_int] * nargs
            function.restype = ctypes.c_int
            calls[kind] = function
        voices = lib.fluid_synth_get_active_voice_count
        voices.argtypes = [ctypes.c_void_p]
        voices.restype = ctypes.c_int
        note_on, note_off, cc, bend = (calls["note_on"], calls["note_off"], calls["cc"],
                                       calls["pitch_bend"])
        fallback = self.send

        def render_into(address: int, start: int, frames: int) -> None:
            write(handle, frames, address, 2 * start, 2, address, 2 * start + 1, 2)

        def send(kind: str, channel: int, data1: int, data2: int = 0) -> None:
            if kind == "note_on" and data2 > 0:
                note_on(handle, channel, data1, data2)
            elif kind == "note_on" or kind == "note_off":
                note_off(handle, channel, data1)
            elif kind == "cc":
                cc(handle, channel, data1, data2)
            elif kind == "pitch_bend":
                bend(handle, channel, max(0, min(data1 + 8192, 16383)))  # as pyfluidsynth
            else:  # program changes: rare, through the checked path
                fallback(kind, channel, data1, data2)

        def active_voices() -> int:
            return int(voices(handle))

        return render_into, send, active_voices

    def _write(self, out: np.ndarray, start: int, frames: int) -> None:
        if frames <= 0:
            return
        if self._write_float is not None:
            self.render_into(out.ctypes.data, start, frames)
        else:  # pragma: no cover - every FluidSynth 2.x has write_float
            samples = self._synth.get_samples(frames).reshape(frames, 2)
            out[start:start + frames] = samples.astype(np.float32) / 32768.0

    def render(self, events: Iterable[EventLike], duration_s: float, *,
               reset: bool = True) -> np.ndarray:
        """Render ``events`` for ``duration_s`` seconds: ``(frames, 2)`` float32, unclipped.

        Each render starts from a fresh synth (see :meth:`reset`). Events
        (:class:`SynthEvent` or ``(time, kind, channel, data1, data2)`` tuples) are
        applied at ``round(time * sample_rate)``, those at the same sample in the order
        programs, controllers, note-offs, note-ons, else as given; events at or after the
        end are dropped. Notes still sounding at the end are cut off by the next render's
        reset; ``reset=False`` continues from the current state instead (to render a long
        piece in chunks: pass each chunk's events with times relative to its start).
        """
        self._live()
        if not (math.isfinite(duration_s) and duration_s >= 0):
            raise ValueError(f"duration_s must be a finite number >= 0, got {duration_s!r}")
        frames = round(duration_s * self.sample_rate)
        padded = -(-frames // FLUID_BLOCK) * FLUID_BLOCK
        if reset:
            self.reset()
        timed = sorted(
            ((round(e.time * self.sample_rate), _KINDS[e.kind], i, e)
             for i, e in enumerate(map(_as_event, events))),
            key=lambda item: item[:3])
        out = np.zeros((padded, 2), dtype=np.float32)
        position = 0
        for offset, _order, _index, event in timed:
            if offset >= frames:
                break
            self._write(out, position, offset - position)
            position = max(position, offset)
            self._send(event)
        self._write(out, position, padded - position)
        return out[:frames].copy() if padded != frames else out


# --------------------------------------------------------------------------- WAV


def soft_clip(audio: np.ndarray, knee: float = 0.9, ceiling: float = 0.98) -> np.ndarray:
    """Leave ``|x| <= knee`` untouched; above it bend smoothly (tanh, slope 1 at the knee)
    towards, never past, ``ceiling`` (0.98 = -0.18 dBFS). Peak-safe for any input; float32."""
    if not 0.0 < knee < ceiling <= 1.0:
        raise ValueError(f"need 0 < knee < ceiling <= 1, got knee={knee} ceiling={ceiling}")
    x = np.asarray(audio, dtype=np.float64)
    magnitude = np.abs(x)
    head = ceiling - knee
    bent = knee + head * np.tanh((magnitude - knee) / head)
    return np.where(magnitude > knee, np.sign(x) * bent, x).astype(np.float32)


def write_wav(path: StrPath, audio: np.ndarray, sample_rate: int, *,
              subtype: str = "PCM_16", knee: float = 0.9, ceiling: float = 0.98) -> None:
    """Write ``audio`` (``(frames,)`` or ``(frames, channels)`` float) as a WAV file.

    Peak safety: a soft clipper (:func:`soft_clip`), not a limiter, is applied before
    quantisation: samples within +-``knee`` (0.9) are written unchanged, louder ones are
    bent smoothly to stay below ``ceiling`` (0.98), so nothing wraps or hard-clips. It is
    memoryless (no gain riding); keep the mix's level sensible (FluidRenderer's ``gain``)
    so that it only catches peaks. Non-finite samples raise.
    ``subtype`` is soundfile's (PCM_16 default; PCM_24, FLOAT, ...).
    """
    import soundfile

    data = np.asarray(audio)
    if data.ndim not in (1, 2):
        raise ValueError(f"audio must be (frames,) or (frames, channels), got {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("audio holds NaN or infinite samples")
    soundfile.write(str(path), soft_clip(data, knee, ceiling), int(sample_rate), subtype=subtype,
                    format="WAV")

