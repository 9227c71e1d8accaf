"""Live audio out: FluidSynth, the vocal ring and a limiter in one audio callback.

:class:`AudioEngine` owns a FluidSynth synth with no audio driver of its own (a
:class:`~engine.audio.fluid_render.FluidRenderer`) and a PortAudio output stream
(float32, stereo, fixed block size). Two callbacks can make the blocks, the same samples
either way: the native core (:mod:`engine.live.audio_core`, C, called by PortAudio
directly; it never waits for the interpreter: the default wherever it builds) or this
module's Python callback in a ``sounddevice.OutputStream`` (the reference renderer the
core is tested against, and the fallback; :attr:`AudioEngine.path` says which). For
each block of ``n`` frames starting at output frame ``F`` the callback:

1. applies the synth events stamped for frames ``F .. F+n-1`` at their sample offsets:
   FluidSynth renders (``fluid_synth_write_float``, straight into a preallocated buffer)
   up to an event's offset, the event is sent, and so on. An event stamped before ``F``
   (it came too late) is applied at the block start and counted as late;
2. mixes in the :class:`VocalRing` (phrases placed at absolute output frames);
3. applies the master level (ramped over a block, no zipper noise) and the
   :class:`Limiter` (peaks never pass its ceiling, 0.98);
4. counts underruns (``status.output_underflow``) and callbacks that took longer than
   the block lasts, and records its own duration;
5. never raises (sounddevice stops a stream for good when its callback raises: an
   internal error gives a silent block and is counted) and creates no arrays or
   containers: every buffer is made in ``__init__``; events arrive through a
   ``collections.deque`` (``append`` / ``popleft`` are atomic in CPython) and wait in a
   heap ordered by frame.

All synth calls happen on the audio thread while the stream runs, so FluidSynth's own
mutex is never contended; other threads only queue (:meth:`AudioEngine.schedule`,
:meth:`AudioEngine.panic`, :meth:`AudioEngine.set_master`).

The output frame counter is the show's audio clock: :attr:`AudioEngine.frames_played`,
and :meth:`AudioEngine.ns_to_frame` maps a ``time.monotonic_ns()`` (the show's
:class:`~engine.clock.Clock` gives every note one) to the output frame that leaves the
output (the DAC) then, :meth:`AudioEngine.frame_to_ns` back: the show's one ns <-> frame
estimator. Each callback
records ``(monotonic_ns on entry, its first frame, outputBufferDacTime, currentTime)``;
the mapping takes the lower envelope of ``entry_ns - frame * 1e9 / rate`` over the last
128 callbacks (a callback can wake late, never early) plus the output latency that
PortAudio reports (``outputBufferDacTime - currentTime``; 2 periods on JACK).

FluidSynth starts a voice only at its internal 64-frame block boundaries (counted from
the engine's first frame), so a note sounds at the first such boundary at or after its
frame: never early, at most 63 frames (1.3 ms at 48 kHz) late, the same every time.

On JACK, PortAudio's client is named ``encore`` (``jack_name``); its ports ``out_0`` and
``out_1`` are connected to the system playback ports when the stream starts.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import heapq
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from engine.audio.fluid_render import EVENT_ORDER, FluidRenderer, StrPath, check_message
from engine.live import audio_core

NO_DEVICE_MESSAGE = ("no audio output device; start JACK (`jackd -d dummy` for a silent test) "
                     "or plug in a sound card")
MAX_MASTER = 4.0
"""The loudest master level (+12 dB); the limiter keeps the peaks in check."""

_CLOCK_WINDOW = 128
_DURATION_WINDOW = 4096
_INT64_MAX = np.iinfo(np.int64).max
_PY_COUNTERS = {"frame": "_frame", "callbacks": "_callbacks", "underruns": "_underruns",
                "overruns": "_overruns", "max_ns": "_max_ns", "applied": "_applied",
                "late": "_late", "max_late": "_max_late", "cancelled": "_cancelled",
                "event_errors": "_event_errors", "errors": "_errors", "voices": "_voices",
                "last_callback_ns": "_last_callback_ns", "last_frames": "_last_frames",
                "latency_ns": "_latency_ns"}
"""The reference callback's counters, by the native core's names for them."""


class NoAudioOutputError(OSError):
    """No audio output device could be found or opened."""


# --------------------------------------------------------------------------- vocal ring


class VocalRing:
    """Single-producer, single-consumer ring of float32 stereo frames addressed by
    absolute output frame.

    The producer (a vocal synthesis thread) places audio at absolute frames with
    :meth:`write_at` (or continues where its last write ended with :meth:`write`); the
    consumer (the audio callback) adds frames ``[frame, frame + n)`` to its block with
    :meth:`mix_into`, zeroes them in the ring and moves the read position on. Writes add
    to what is there, so overlapping phrases mix.

    No locks: only the producer moves ``write_end``, only the consumer moves
    ``read_frame``. The producer may write frames in ``[read_frame, read_frame +
    capacity)``: the part of a write beyond that is dropped and counted as an overflow
    (producer too far ahead), the part before ``read_frame`` (already played) is dropped
    and counted as an underflow (producer late).
    """

    def __init__(self, capacity_frames: int, channels: int = 2) -> None:
        if capacity_frames < 1:
            raise ValueError(f"capacity_frames must be >= 1, got {capacity_frames}")
        self.capacity = int(capacity_frames)
        self.channels = int(channels)
        self._ring = np.zeros((self.capacity, self.channels), dtype=np.float32)
        # [next frame to play (consumer), discard requests (producer), discards done
        # (consumer)]: one array, so that the native core can share it
        self._state = np.zeros(3, dtype=np.int64)
        self._write_end = 0       # producer only: end of the latest write
        # producer-side counters
        self.overflows = 0
        self.overflow_frames = 0
        self.underflows = 0
        self.late_frames = 0
        self.frames_written = 0

    # -- state

    @property
    def read_frame(self) -> int:
        """The next frame the consumer will play."""
        return int(self._state[0])

    @property
    def storage(self) -> np.ndarray:
        """The ring's ``(capacity, channels)`` float32 memory (for the native core)."""
        return self._ring

    @property
    def state(self) -> np.ndarray:
        """int64 ``[read frame, discard requests, discards done]`` (for the native core)."""
        return self._state

    @property
    def write_end(self) -> int:
        """The frame after the end of the latest write."""
        return self._write_end

    def headroom(self) -> int:
        """Frames the producer may still write after :attr:`write_end` before it overflows."""
        return max(0, self.read_frame + self.capacity - self._write_end)

    # -- producer

    def write_at(self, frame: int, samples: np.ndarray) -> int:
        """Add ``samples`` (``(n,)`` mono, played on both channels, or ``(n, channels)``)
        to the ring so that ``samples[0]`` plays at absolute output frame ``frame``.
        Returns the frames accepted (the rest is counted as underflow / overflow)."""
        frame = int(frame)
        data = np.asarray(samples, dtype=np.float32)
        if data.ndim == 1:
            data = data[:, None]
        if data.ndim != 2 or data.shape[1] not in (1, self.channels):
            raise ValueError(f"samples must be (n,) or (n, {self.channels}), got {data.shape}")
        n = data.shape[0]
        end = frame + n
        self._write_end = max(self._write_end, end)
        if n == 0:
            return 0
        read = self.read_frame
        limit = read + self.capacity
        lo = max(frame, read)
        hi = min(end, limit)
        if frame < read:
            self.underflows += 1
            self.late_frames += min(read, end) - frame
        if end > limit:
            self.overflows += 1
            self.overflow_frames += end - max(limit, frame)
        if hi <= lo:
            return 0
        src = data[lo - frame:hi - frame]
        start = lo % self.capacity
        first = min(hi - lo, self.capacity - start)
        self._ring[start:start + first] += src[:first]
        if first < hi - lo:
            self._ring[:hi - lo - first] += src[first:]
        self.frames_written += hi - lo
        return hi - lo

    def write(self, samples: np.ndarray) -> int:
        """Continue at :attr:`write_end` (streaming a phrase in chunks)."""
        return self.write_at(self._write_end, samples)

    def discard(self) -> None:
        """Ask the consumer to drop everything written (panic). Asynchronous: it happens
        at the consumer's next :meth:`mix_into`."""
        self._state[1] += 1

    # -- consumer

    def mix_into(self, out: np.ndarray, frame: int) -> None:
        """Consumer: add frames ``[frame, frame + len(out))`` to ``out`` (in place), zero
        them in the ring, and move the read position to ``frame + len(out)``. No
        allocation beyond numpy views."""
        ring = self._ring
        cap = self.capacity
        state = self._state
        if state[1] != state[2]:
            state[2] = state[1]
            ring.fill(0.0)
        read = int(state[0])
        if frame > read:  # frames skipped: clear their slots
            gap = min(frame - read, cap)
            s = read % cap
            k = min(gap, cap - s)
            ring[s:s + k] = 0.0
            if k < gap:
                ring[:gap - k] = 0.0
        n = out.shape[0]
        s = frame % cap
        k = min(n, cap - s)
        part = ring[s:s + k]
        np.add(out[:k], part, out=out[:k])
        part.fill(0.0)
        if k < n:
            part = ring[:n - k]
            np.add(out[k:n], part, out=out[k:n])
            part.fill(0.0)
        state[0] = frame + n

    def reset(self, frame: int = 0) -> None:
        """Empty the ring and set the read position (only while no consumer runs)."""
        self._ring.fill(0.0)
        self._state[0] = int(frame)
        self._state[2] = self._state[1]
        self._write_end = int(frame)


# --------------------------------------------------------------------------- limiter


class Limiter:
    """A peak limiter without look-ahead, then a soft clipper; in place, preallocated.

    Per block: the gain needed to bring the block's peak down to ``threshold`` is
    reached within ``attack_frames`` samples (a short ramp, no click); when less
    reduction is needed the gain recovers towards 1 with time constant ``release_s``.
    Whatever the gain ramp lets through above ``threshold`` (only in the first
    ``attack_frames`` of a block that gets suddenly louder) is bent smoothly by a tanh
    soft clipper towards, never past, ``ceiling``. Quiet signals pass bit-exactly. A
    block with NaN or infinite samples becomes silence (counted).
    """

    def __init__(self, max_frames: int, channels: int = 2, *, sample_rate: int = 48000,
                 threshold: float = 0.89, ceiling: float = 0.98, attack_frames: int = 32,
                 release_s: float = 0.15) -> None:
        if not 0.0 < threshold < ceiling <= 1.0:
            raise ValueError(f"need 0 < threshold < ceiling <= 1, got {threshold}, {ceiling}")
        if max_frames < 1 or attack_frames < 1 or release_s <= 0:
            raise ValueError("max_frames and attack_frames must be >= 1, release_s > 0")
        self.max_frames = int(max_frames)
        self.threshold = float(threshold)
        self.ceiling = float(ceiling)
        self.sample_rate = int(sample_rate)
        self.release_s = float(release_s)
        self.attack_frames = int(attack_frames)
        self._head = self.ceiling - self.threshold
        self._abs = np.zeros((self.max_frames, channels), dtype=np.float32)
        self._tmp = np.zeros((self.max_frames, channels), dtype=np.float32)
        self._gain_vec = np.zeros(self.max_frames, dtype=np.float32)
        self._index1 = np.arange(1, self.max_frames + 1, dtype=np.float32)  # 1, 2, ..., n
        self._attack_shape = np.clip(1.0 - self._index1 / attack_frames, 0.0, 1.0).astype(
            np.float32)
        self.gain = 1.0
        self.min_gain = 1.0
        self.active_blocks = 0
        self.clipped_blocks = 0
        self.nonfinite_blocks = 0

    def reset(self) -> None:
        self.gain = 1.0
        self.min_gain = 1.0
        self.active_blocks = self.clipped_blocks = self.nonfinite_blocks = 0

    def process(self, block: np.ndarray) -> None:
        """Limit ``block`` (``(n, channels)`` float32, ``n <= max_frames``) in place."""
        n = block.shape[0]
        if n == 0:
            return
        absb = self._abs[:n]
        np.abs(block, out=absb)
        peak = float(absb.max())
        if not math.isfinite(peak):
            block.fill(0.0)
            self.nonfinite_blocks += 1
            return
        g_prev = self.gain
        target = self.threshold / peak if peak > self.threshold else 1.0
        attack = target < g_prev
        if attack:
            g_new = target
        else:
            coef = 1.0 - math.exp(-n / (self.release_s * self.sample_rate))
            g_new = min(target, g_prev + (1.0 - g_prev) * coef)
            if g_new > 0.9999:
                g_new = 1.0
        self.gain = g_new
        if g_prev != 1.0 or g_new != 1.0:
            self.active_blocks += 1
            if g_new < self.min_gain:
                self.min_gain = g_new
            gv = self._gain_vec[:n]
            if attack:   # g_prev -> g_new within attack_frames, then flat
                np.multiply(self._attack_shape[:n], g_prev - g_new, out=gv)
                gv += g_new
            else:        # a straight line over the block
                np.multiply(self._index1[:n], (g_new - g_prev) / n, out=gv)
                gv += g_prev
            block *= gv[:, None]
            peak *= max(g_prev, g_new)
        if peak > self.threshold:  # soft-clip what the gain ramp let through
            self.clipped_blocks += 1
            tmp = self._tmp[:n]
            np.abs(block, out=absb)
            np.subtract(absb, self.threshold, out=tmp)
            np.maximum(tmp, 0.0, out=tmp)
            tmp *= 1.0 / self._head
            np.tanh(tmp, out=tmp)
            tmp *= self._head
            np.minimum(absb, self.threshold, out=absb)
            absb += tmp
            np.copysign(absb, block, out=block)


# --------------------------------------------------------------------------- PortAudio

_pa_lock = threading.Lock()
_open_streams = 0
_jack_name_set: str | None = None
_JACK_NAME_BUFFER = ctypes.create_string_buffer(64)  # PortAudio keeps the pointer, not a copy
_exit_guard_registered = False
_abandoned: list[Any] = []  # streams whose stop hung (device or JACK server gone)


def _sounddevice() -> Any:
    global _exit_guard_registered
    try:
        import sounddevice
    except OSError as exc:  # PortAudio library missing
        raise NoAudioOutputError(
            f"PortAudio is not available ({exc}); install it with `apt-get install "
            "libportaudio2`") from exc
    if not _exit_guard_registered:  # atexit runs it before sounddevice's own handler
        atexit.register(_exit_guard, sounddevice)
        _exit_guard_registered = True
    return sounddevice


def _jack_server_alive() -> bool | None:
    """Whether a JACK server answers (the one ``JACK_DEFAULT_SERVER`` names); None when
    libjack is absent."""
    path = ctypes.util.find_library("jack")
    if path is None:
        return None
    lib = ctypes.CDLL(path)
    lib.jack_client_open.restype = ctypes.c_void_p
    lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int,
                                     ctypes.POINTER(ctypes.c_int)]
    lib.jack_client_close.argtypes = [ctypes.c_void_p]
    status = ctypes.c_int(0)
    client = lib.jack_client_open(b"encore-probe", 1, ctypes.byref(status))  # no start
    if not client:
        return False
    lib.jack_client_close(client)
    return True


def _safe_to_terminate(sd: Any) -> bool:
    """Pa_Terminate closes PortAudio's JACK client, and PortAudio asserts (aborting the
    process) when that fails, which it does once the JACK server has gone away."""
    if _abandoned:
        return False
    if not sd._initialized or jack_client_name() is None:
        return True
    return _jack_server_alive() is not False


def _exit_guard(sd: Any) -> None:
    try:
        if sd._initialized and not _safe_to_terminate(sd):
            sd._initialized = 0  # skip sounddevice's Pa_Terminate: it would abort
    except Exception:  # pragma: no cover - best effort at exit
        pass


def _has_output(sd: Any) -> bool:
    return any(d["max_output_channels"] > 0 for d in sd.query_devices())


def _terminate(sd: Any) -> None:
    if not _safe_to_terminate(sd):
        raise NoAudioOutputError(
            "the audio device or JACK server this process was using has gone away and "
            "PortAudio cannot reconnect within the same process: restart encore")
    while sd._initialized:
        sd._terminate()


def _prepare_portaudio(sd: Any, jack_name: str | None, *, rescan: bool = False) -> None:
    """Initialise PortAudio (naming its JACK client ``jack_name``) or rescan devices
    when needed: PortAudio lists devices, and connects to JACK, only when initialised.
    Only while no stream of ours is open (a rescan would kill it)."""
    global _jack_name_set
    with _pa_lock:
        if _open_streams:
            return
        need = rescan or not sd._initialized
        if jack_name and jack_name != _jack_name_set:
            setter = getattr(ctypes.CDLL(sd._libname), "PaJack_SetClientName", None)
            if setter is not None:
                _JACK_NAME_BUFFER.value = jack_name.encode()[:63]
                setter.argtypes = [ctypes.c_char_p]
                setter.restype = ctypes.c_int
                setter(_JACK_NAME_BUFFER)
                need = True
            _jack_name_set = jack_name
        if not need and not _has_output(sd):
            need = True
        if need:
            _terminate(sd)
            sd._initialize()


def _close_stream(stream: Any, timeout_s: float) -> bool:
    """Stop and close ``stream`` on a helper thread; False when that did not finish in
    ``timeout_s`` (PortAudio blocks for ever in Pa_StopStream once the JACK server has
    died): the stream is then abandoned, never waited for again."""
    def close() -> None:
        try:
            stream.stop()
        finally:
            stream.close()

    closer = threading.Thread(target=close, name="encore-audio-close", daemon=True)
    closer.start()
    closer.join(timeout_s)
    if closer.is_alive():
        _abandoned.append(stream)
        return False
    return True


def _release_portaudio(sd: Any) -> None:
    """Terminate PortAudio when no engine stream is open, so that no JACK client of ours
    lingers (it comes back on the next start)."""
    with _pa_lock:
        if not _open_streams and sd._initialized and _safe_to_terminate(sd):
            while sd._initialized:
                sd._terminate()


def jack_client_name() -> str | None:
    """The JACK client name PortAudio got (``encore``, ``encore-01``, ...), or None when
    PortAudio is not connected to JACK."""
    sd = _sounddevice()
    getter = getattr(ctypes.CDLL(sd._libname), "PaJack_GetClientName", None)
    if getter is None:
        return None
    getter.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    getter.restype = ctypes.c_int
    name = ctypes.c_char_p()
    if getter(ctypes.byref(name)) != 0 or not name.value:
        return None
    return name.value.decode(errors="replace")


@dataclass(frozen=True)
class AudioDevice:
    """One PortAudio device, as ``encore devices`` lists it."""

    index: int
    name: str
    hostapi: str
    output_channels: int
    input_channels: int
    default_samplerate: float
    low_output_latency_ms: float
    default_output: bool


def list_devices(*, refresh: bool = True) -> list[AudioDevice]:
    """Every PortAudio device (outputs and inputs) with its host API (ALSA, JACK, ...).

    ``refresh`` rescans first (PortAudio only sees a JACK server or a sound card that
    was there when it was initialised) unless an engine stream is open.
    """
    sd = _sounddevice()
    _prepare_portaudio(sd, _jack_name_set, rescan=refresh)
    apis = sd.query_hostapis()
    out = []
    for index, info in enumerate(sd.query_devices()):
        api = apis[info["hostapi"]]
        out.append(AudioDevice(
            index=index, name=info["name"], hostapi=api["name"],
            output_channels=int(info["max_output_channels"]),
            input_channels=int(info["max_input_channels"]),
            default_samplerate=float(info["default_samplerate"]),
            low_output_latency_ms=1000.0 * float(info["default_low_output_latency"]),
            default_output=index == api["default_output_device"]))
    _release_portaudio(sd)
    return out


def describe_devices(devices: list[AudioDevice] | None = None) -> str:
    """A table of the output devices for ``encore devices`` (or the no-device hint)."""
    if devices is None:
        devices = list_devices()
    outputs = [d for d in devices if d.output_channels > 0]
    if not outputs:
        return NO_DEVICE_MESSAGE
    lines = ["audio outputs (device = index or a part of the name):"]
    for d in outputs:
        mark = "*" if d.default_output else " "
        lines.append(f" {mark}{d.index:3d}  {d.name} ({d.hostapi}), {d.output_channels} out, "
                     f"{d.default_samplerate:.0f} Hz, low latency {d.low_output_latency_ms:.1f} ms")
    return "\n".join(lines)


def _resolve_output_device(sd: Any, device: int | str | None) -> tuple[int, str]:
    devices = sd.query_devices()
    if device is None:
        try:
            index = int(sd.query_devices(kind="output")["index"])
        except Exception:
            index = -1
        if index < 0 or devices[index]["max_output_channels"] < 2:
            index = next((i for i, d in enumerate(devices) if d["max_output_channels"] >= 2),
                         -1)
        if index < 0:
            raise NoAudioOutputError(NO_DEVICE_MESSAGE)
    else:
        try:
            index = int(sd.query_devices(device, kind="output")["index"])
        except (ValueError, sd.PortAudioError) as exc:
            if not _has_output(sd):
                raise NoAudioOutputError(NO_DEVICE_MESSAGE) from exc
            raise NoAudioOutputError(
                f"no audio output device matching {device!r} ({exc}); `encore devices` "
                "lists them") from exc
    info = devices[index]
    if info["max_output_channels"] < 2:
        raise NoAudioOutputError(f"audio device {info['name']!r} has "
                                 f"{info['max_output_channels']} output channel(s); need 2")
    api = sd.query_hostapis(info["hostapi"])["name"]
    return index, f"{info['name']} ({api})"


# --------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class AudioStats:
    """Health of the audio engine (see :meth:`AudioEngine.stats`). Times in microseconds
    over the last 4096 callbacks (max: since start)."""

    running: bool
    device: str | None
    sample_rate: int
    block_size: int
    block_us: float
    frames_played: int
    callbacks: int
    underruns: int
    callback_overruns: int
    callback_us_p50: float
    callback_us_p99: float
    callback_us_max: float
    events_applied: int
    events_late: int
    max_late_frames: int
    events_dropped: int
    events_cancelled: int
    event_errors: int
    errors: int
    last_error: str | None
    vocal_overflows: int
    vocal_overflow_frames: int
    vocal_underflows: int
    vocal_late_frames: int
    limiter_active_blocks: int
    limiter_clipped_blocks: int
    limiter_min_gain: float
    voices: int
    output_latency_ms: float
    since_last_callback_ms: float
    """How long ago the last callback ran (a stuck device or a dead JACK server shows
    here first); 0 before the first."""
    path: str = "python"
    """Which callback makes the blocks: ``core`` (native, never waits for the
    interpreter) or ``python`` (the reference callback, the fallback)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AudioEngine:
    """FluidSynth + vocals + limiter played through one sounddevice output stream.

    ``soundfont``: an .sf2 (None: the first General MIDI SoundFont found).
    ``gain``: FluidSynth's master gain; ``master``: the output level after mixing
    (0..4, see :meth:`set_master`). ``channels_programs``: ``{channel: program}`` or
    ``{channel: (program, bank)}`` set before start (0-based; channel 9 is drums).
    ``block_size``: frames per callback; 0 lets the host choose (on JACK: the server's
    period, the lowest latency; with another size PortAudio adapts with a buffer and, on
    JACK, passes xrun flags only in the cycles where it calls us, so some underruns go
    uncounted). ``latency``: PortAudio's suggested latency ("low", "high" or seconds).
    ``device``: a PortAudio device index or part of its name (None: the default output,
    else the first output). ``frame_origin``: the frame number of the first sample played
    (:attr:`frames_played` starts there). ``vocal_capacity_s``: the vocal ring's size.
    ``max_events``: how many synth events may wait at once. ``jack_name``: PortAudio's
    JACK client name (effective when no other engine stream is open).
    ``test_hook``: tests only (never in a show): called inside the audio callback with
    the block's first frame, e.g. to sleep there and provoke underruns (Python path
    only). ``path``: ``core`` (the native core: raises
    :class:`~engine.live.audio_core.CoreUnavailableError` when it cannot be loaded),
    ``python`` (the reference callback) or ``auto`` (the core when it loads, else the
    Python callback, saying why in :attr:`path_detail`); None reads ``ENCORE_AUDIO_PATH``
    (default auto).
    """

    def __init__(self, soundfont: StrPath | None = None, *, sample_rate: int = 48000,
                 block_size: int = 256, device: int | str | None = None,
                 latency: float | str = "low", gain: float = 0.8, master: float = 1.0,
                 channels_programs: Mapping[int, int | tuple[int, int]] | None = None,
                 frame_origin: int = 0, reverb: bool = True, chorus: bool = False,
                 vocal_capacity_s: float = 10.0, max_events: int = 8192,
                 jack_name: str | None = "encore",
                 test_hook: Callable[[int], object] | None = None,
                 path: str | None = None) -> None:
        if not (isinstance(block_size, int) and (block_size == 0 or 16 <= block_size <= 8192)):
            raise ValueError(f"block_size must be 0 or an int in 16..8192, got {block_size!r}")
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        path = audio_core.requested_path() if path is None else path
        if path not in audio_core.PATHS:
            raise ValueError(f"path must be one of {audio_core.PATHS}, got {path!r}")
        if path == "core" and test_hook is not None:
            raise ValueError("test_hook runs in the Python callback: use path='python'")
        self._fr = FluidRenderer(soundfont, sample_rate=sample_rate, gain=gain, reverb=reverb,
                                 chorus=chorus)
        if not self._fr.float_output:  # pragma: no cover - every FluidSynth 2.x has it
            self._fr.close()
            raise RuntimeError("this FluidSynth has no fluid_synth_write_float")
        try:
            for channel, spec in (channels_programs or {}).items():
                program, bank = (spec, None) if isinstance(spec, int) else spec
                self._fr.program(channel, program, None if bank is None or bank < 0 else bank)
        except Exception:
            self._fr.close()
            raise
        self.sample_rate = sample_rate
        self.block_size = block_size
        self._device = device
        self._latency = latency
        self._jack_name = jack_name
        self._test_hook = test_hook
        self._max_events = int(max_events)
        self._last_frames = block_size

        # buffers (the callback allocates none)
        self._max_frames = max(block_size, 8192)
        self._buf = np.zeros((self._max_frames, 2), dtype=np.float32)
        self._buf_addr = self._buf.ctypes.data
        self._block = self._buf[:block_size]
        self._master_gain = np.zeros(self._max_frames, dtype=np.float32)
        self._index1 = np.arange(1, self._max_frames + 1, dtype=np.float32)  # 1, 2, ..., n
        self._vocals = VocalRing(max(1, round(vocal_capacity_s * sample_rate)))
        self._vocals.reset(frame_origin)
        self._limiter = Limiter(self._max_frames, sample_rate=sample_rate)
        # the callback's FluidSynth calls keep the GIL (see FluidRenderer.callback_functions)
        self._render_into, self._send, self._voice_count = self._fr.callback_functions()

        # events
        self._inbox: deque[tuple] = deque()
        self._heap: list[tuple] = []
        self._seq = itertools.count()
        self._gen = 0            # bumped by panic / stop; events of older generations drop
        self._gen_seen = 0
        self._hard_req = 0       # all-sound-off requests
        self._hard_done = 0
        self._accepting = True
        self._ctl_lock = threading.Lock()    # producers only, never the callback
        self._state_lock = threading.Lock()  # start / stop

        # clock
        self._frame = int(frame_origin)
        self._clock_offsets = np.full(_CLOCK_WINDOW, _INT64_MAX, dtype=np.int64)
        self._last_offset: int | None = None
        self._clock_pairs = np.zeros((_CLOCK_WINDOW, 4), dtype=np.float64)
        self._latency_ns = 0

        # levels
        self._master_target = self._check_level(master)
        self._master_cur = 0.0   # fades in on the first block

        # stats
        self._durations = np.zeros(_DURATION_WINDOW, dtype=np.int64)
        self._reset_counters()
        self._stream: Any = None
        self._device_name: str | None = None
        self._tap: Any = None

        # the native core (else the Python callback above makes the blocks)
        self._core: audio_core.NativeCore | None = None
        self._push_lock = threading.Lock()   # serialises the core's event producers
        self.path_detail = "Python callback (asked for)" if path == "python" else (
            "Python callback (a test hook)")
        if path != "python" and test_hook is None:
            lib, reason = audio_core.load()
            if lib is None:
                if path == "core":
                    self._fr.close()
                    raise audio_core.CoreUnavailableError(reason)
                self.path_detail = f"Python callback: the native core is unavailable ({reason})"
            else:
                try:
                    self._core = audio_core.NativeCore(
                        lib, sample_rate=sample_rate, max_frames=self._max_frames,
                        max_events=self._max_events, synth=self._fr.synth.synth,
                        sfid=self._fr._sfid, fluid_lib=self._fr._lib, vocals=self._vocals,
                        limiter=self._limiter)
                except Exception:
                    self._fr.close()
                    raise
                self._core.st[audio_core.ST["frame"]] = self._frame
                self._core.fl[audio_core.FL_MASTER_TARGET] = self._master_target
                self._clock_offsets = self._core.clock_offsets
                self._clock_pairs = self._core.clock_pairs
                self._durations = self._core.durations
                self.path_detail = "native core"

    def _reset_counters(self) -> None:
        self._callbacks = 0
        self._underruns = 0
        self._overruns = 0
        self._max_ns = 0
        self._applied = 0
        self._late = 0
        self._max_late = 0
        self._dropped = 0
        self._cancelled = 0
        self._event_errors = 0
        self._errors = 0
        self._last_error: BaseException | None = None
        self._voices = 0
        self._last_callback_ns = 0
        core = getattr(self, "_core", None)
        if core is not None:
            core.reset_counters(int(core.st[audio_core.ST["frame"]]))

    def _count(self, name: str) -> int:
        """A counter of the callback in use (the core's names: ``callbacks``, ...)."""
        core = self._core
        if core is not None:
            return int(core.st[audio_core.ST[name]])
        return getattr(self, _PY_COUNTERS[name])

    @property
    def path(self) -> str:
        """``core`` (the native core makes the blocks) or ``python``."""
        return "core" if self._core is not None else "python"

    @property
    def tap(self) -> Any:
        """A recorder's TapRing (or None): every block played is copied into it."""
        return self._tap

    @tap.setter
    def tap(self, tap: Any) -> None:
        if self._core is not None:
            self._core.set_tap(tap)
        self._tap = tap

    # ------------------------------------------------------------------ properties

    @property
    def frames_played(self) -> int:
        """Frames handed to the output so far (plus ``frame_origin``): the first frame of
        the next block. The show's audio clock."""
        return self._count("frame")

    @property
    def running(self) -> bool:
        return self._stream is not None

    @property
    def device_name(self) -> str | None:
        return self._device_name

    @property
    def vocals(self) -> VocalRing:
        """The vocal ring buffer (producer side: :meth:`VocalRing.write_at`)."""
        return self._vocals

    @property
    def limiter(self) -> Limiter:
        """The limiter's settings (and, on the Python path, its state; the native core
        keeps its own: read :meth:`stats`)."""
        return self._limiter

    @property
    def renderer(self) -> FluidRenderer:
        """The FluidSynth wrapper. Do not call the synth from another thread while the
        stream runs: schedule events instead."""
        return self._fr

    @property
    def output_latency_s(self) -> float:
        """From a block's callback to its first frame at the output, as PortAudio says."""
        return self._count("latency_ns") / 1e9

    @property
    def active_voices(self) -> int:
        """Sounding voices: as of the last block while running, else asked directly."""
        if self._stream is not None:
            return self._count("voices")
        try:
            return self._fr.active_voices()
        except RuntimeError:  # closed
            return 0

    # ------------------------------------------------------------------ control

    @staticmethod
    def _check_level(level: float) -> float:
        level = float(level)
        if not (math.isfinite(level) and 0.0 <= level <= MAX_MASTER):
            raise ValueError(f"master level must be in 0..{MAX_MASTER}, got {level}")
        return level

    def set_master(self, level: float) -> None:
        """Output level after mixing (1.0 = unity, 0 = silent, up to 4.0); ramped over
        one block."""
        self._set_master_target(self._check_level(level))

    def _set_master_target(self, level: float) -> None:
        self._master_target = level
        if self._core is not None:
            self._core.fl[audio_core.FL_MASTER_TARGET] = level

    @property
    def master(self) -> float:
        return self._master_target

    def schedule(self, frame: int, kind: str, channel: int, data1: int = 0,
                 data2: int = 0) -> bool:
        """Queue a synth message for output frame ``frame``; from any thread.

        ``kind``: ``note_on`` (pitch, velocity), ``note_off`` (pitch), ``cc`` (controller,
        value), ``program`` (program, bank; -1 = the channel's default), ``pitch_bend``
        (-8192..8191). Messages for the same frame apply in the order programs,
        controllers, note-offs, note-ons, else as queued. Returns False (and counts it)
        when the queue is full or the engine is stopping. Raises ValueError for a bad
        message.
        """
        check_message(kind, channel, data1, data2)
        frame = int(frame)
        core = self._core
        if core is not None:
            with self._push_lock:
                queued = self._accepting and core.push(frame, EVENT_ORDER[kind], kind,
                                                       channel, data1, data2)
            if not queued:
                with self._ctl_lock:
                    self._dropped += 1
            return queued
        if not self._accepting or len(self._inbox) + len(self._heap) >= self._max_events:
            with self._ctl_lock:
                self._dropped += 1
            return False
        self._inbox.append((frame, EVENT_ORDER[kind], next(self._seq), self._gen, kind,
                            channel, data1, data2))
        return True

    def panic(self) -> None:
        """Silence everything now: drop all queued events and the vocals, sustain off,
        all sound off, reset controllers on every channel. From any thread."""
        core = self._core
        if core is not None:
            core.bump(hard=True)
            self._vocals.discard()
            if self._stream is None:
                with self._state_lock:
                    if self._stream is None:
                        core.offline_control(drop_queue=True)
            return
        with self._ctl_lock:
            self._gen += 1
            self._hard_req += 1
        self._vocals.discard()
        if self._stream is None:
            with self._state_lock:
                if self._stream is None:
                    self._apply_control()
                    self._inbox.clear()

    def _silence(self, hard: bool) -> None:
        cc = self._fr.synth.cc
        for channel in range(16):
            cc(channel, 64, 0)       # sustain off
            cc(channel, 123, 0)      # all notes off
            if hard:
                cc(channel, 120, 0)  # all sound off
                cc(channel, 121, 0)  # reset controllers

    def _apply_control(self) -> None:
        """Panic / stop requests (audio thread while running)."""
        gen = self._gen
        if gen != self._gen_seen:
            self._gen_seen = gen
            self._cancelled += len(self._heap)
            self._heap.clear()
            hard = self._hard_req != self._hard_done
            self._hard_done = self._hard_req
            self._silence(hard)
        elif self._hard_req != self._hard_done:
            self._hard_done = self._hard_req
            self._silence(True)

    # ------------------------------------------------------------------ clock

    def _offset_ns(self) -> int:
        offset = int(self._clock_offsets.min())
        if offset == _INT64_MAX:
            # Right after an underrun the window is cleared until the next callback: the
            # mapping from before it is the best there is (a block or so off at worst).
            if self._last_offset is None:
                raise RuntimeError("no audio callback has run yet: start() the engine first")
            return self._last_offset
        self._last_offset = offset
        return offset

    def frame_to_ns(self, frame: int) -> int:
        """``time.monotonic_ns()`` at which output frame ``frame`` leaves the output."""
        return (self._offset_ns() + int(frame) * 1_000_000_000 // self.sample_rate
                + self._count("latency_ns"))

    def ns_to_frame(self, ns: int) -> int:
        """The output frame that leaves the output at ``time.monotonic_ns() == ns``."""
        return ((int(ns) - self._count("latency_ns") - self._offset_ns()) * self.sample_rate
                // 1_000_000_000)

    # ------------------------------------------------------------------ callback

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if self._core is not None:   # offline (tests): the core makes the block
            self._core.process(outdata, time_info.outputBufferDacTime, time_info.currentTime,
                               bool(status.output_underflow))
            return
        t0 = time.perf_counter_ns()
        start = self._frame
        try:
            self._process(outdata, frames, time_info, status, start)
        except Exception as exc:  # never raise: sounddevice would stop the stream for good
            self._errors += 1
            self._last_error = exc
            try:
                outdata.fill(0.0)
            except Exception:  # pragma: no cover
                pass
        self._frame = start + frames
        self._last_frames = frames
        self._last_callback_ns = time.monotonic_ns()
        dt = time.perf_counter_ns() - t0
        self._durations[self._callbacks % _DURATION_WINDOW] = dt
        self._callbacks += 1
        if dt * self.sample_rate > frames * 1_000_000_000:  # longer than the block lasts
            self._overruns += 1
        if dt > self._max_ns:
            self._max_ns = dt

    def _process(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any,
                 start: int) -> None:
        now = time.monotonic_ns()
        if status.output_underflow:
            self._underruns += 1
            self._clock_offsets.fill(_INT64_MAX)  # the frame <-> time mapping moved
        k = self._callbacks % _CLOCK_WINDOW
        self._clock_offsets[k] = now - start * 1_000_000_000 // self.sample_rate
        dac = time_info.outputBufferDacTime
        current = time_info.currentTime
        row = self._clock_pairs[k]
        row[0] = now
        row[1] = start
        row[2] = dac
        row[3] = current
        if 0.0 < dac - current < 1.0:
            self._latency_ns = int((dac - current) * 1e9)
        if self._test_hook is not None:
            self._test_hook(start)
        if frames > self._max_frames:
            raise RuntimeError(f"block of {frames} frames > {self._max_frames}")

        if self._gen != self._gen_seen or self._hard_req != self._hard_done:
            self._apply_control()
        inbox = self._inbox
        heap = self._heap
        while inbox:
            heapq.heappush(heap, inbox.popleft())

        end = start + frames
        gen = self._gen_seen
        pos = 0
        render = self._render_into
        addr = self._buf_addr
        while heap and heap[0][0] < end:
            event = heapq.heappop(heap)
            if event[3] != gen:
                self._cancelled += 1
                continue
            offset = event[0] - start
            if offset < 0:
                self._late += 1
                if -offset > self._max_late:
                    self._max_late = -offset
                offset = 0
            if offset > pos:
                render(addr, pos, offset - pos)
                pos = offset
            try:
                self._send(event[4], event[5], event[6], event[7])
            except Exception:
                self._event_errors += 1
            else:
                self._applied += 1
        if pos < frames:
            render(addr, pos, frames - pos)

        block = self._block if frames == self.block_size else self._buf[:frames]
        self._vocals.mix_into(block, start)
        target = self._master_target
        current_level = self._master_cur
        if current_level != target:
            gains = self._master_gain[:frames]
            np.multiply(self._index1[:frames], (target - current_level) / frames, out=gains)
            gains += current_level
            block *= gains[:, None]
            self._master_cur = target
        elif target != 1.0:
            block *= target
        self._limiter.process(block)
        outdata[:] = block
        tap = self.tap
        if tap is not None:
            tap.push(block)
        self._voices = self._voice_count()

    # ------------------------------------------------------------------ start / stop

    def start(self) -> None:
        """Open the output stream and start playing (no-op when running). Raises
        :class:`NoAudioOutputError` when there is no output device or it cannot be
        opened."""
        global _open_streams
        with self._state_lock:
            if self._stream is not None:
                return
            sd = _sounddevice()
            if _abandoned:
                raise NoAudioOutputError(
                    "an earlier audio stream hung when stopped (its device or JACK server "
                    "went away); PortAudio cannot recover within this process: restart encore")
            _prepare_portaudio(sd, self._jack_name)
            stream = None
            for attempt in range(2):
                index, name = _resolve_output_device(sd, self._device)
                try:
                    if self._core is not None:
                        stream = audio_core.CoreStream(sd, self._core, index, self.sample_rate,
                                                       self.block_size, self._latency)
                    else:
                        stream = sd.OutputStream(
                            samplerate=self.sample_rate, blocksize=self.block_size,
                            device=index, channels=2, dtype="float32", latency=self._latency,
                            callback=self._callback)
                    break
                except sd.PortAudioError as exc:
                    rate = sd.query_devices(index)["default_samplerate"]
                    if "sample rate" in str(exc).lower():
                        raise NoAudioOutputError(
                            f"{name} does not run at {self.sample_rate} Hz (it runs at "
                            f"{rate:.0f} Hz): set the engine's sample rate to match") from exc
                    if attempt == 1:
                        raise NoAudioOutputError(
                            f"could not open audio output {name}: {exc}") from exc
                    _prepare_portaudio(sd, self._jack_name, rescan=True)  # JACK restarted?
            self._clock_offsets.fill(_INT64_MAX)
            self._last_offset = None
            self._master_cur = 0.0
            self._limiter.reset()
            self._durations.fill(0)
            self._reset_counters()
            self._latency_ns = int(float(stream.latency) * 1e9)
            if self._core is not None:
                self._core.st[audio_core.ST["latency_ns"]] = self._latency_ns
                self._core.fl[audio_core.FL_MASTER_CUR] = 0.0
            self._accepting = True
            with _pa_lock:
                _open_streams += 1
            try:
                self._stream = stream
                stream.start()
            except Exception:
                self._stream = None
                stream.close()
                with _pa_lock:
                    _open_streams -= 1
                raise
            self._device_name = name

    def _stalled(self) -> bool:
        """No callback for 0.25 s (or 8 blocks): the device or JACK server is stuck."""
        limit_ns = max(250_000_000,
                       8 * self._count("last_frames") * 1_000_000_000 // self.sample_rate)
        return time.monotonic_ns() - self._count("last_callback_ns") > limit_ns

    def _wait(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        stream = self._stream
        while not condition():
            if time.monotonic() > deadline or not stream.active or self._stalled():
                return False
            time.sleep(0.002)
        return True

    def stop(self, release_s: float = 2.0) -> None:
        """Stop playing; idempotent. Drops queued events, sends sustain off and all notes
        off, lets the voices release (up to ``release_s``; then all sound off), fades the
        master out over a block, closes the stream. Afterwards no voice sounds."""
        global _open_streams
        with self._state_lock:
            stream = self._stream
            if stream is None:
                return
            self._accepting = False
            level = self._master_target
            core = self._core
            count = self._count
            try:
                if core is not None:
                    core.bump(hard=False)
                else:
                    with self._ctl_lock:
                        self._gen += 1
                calls = count("callbacks")
                self._wait(lambda: count("callbacks") >= calls + 2, 1.0)
                if not self._wait(lambda: count("voices") == 0, release_s):
                    if core is not None:
                        core.request_hard()
                    else:
                        with self._ctl_lock:
                            self._hard_req += 1
                calls = count("callbacks")
                self._set_master_target(0.0)
                self._wait(lambda: count("callbacks") >= calls + 2, 1.0)
            finally:
                if _close_stream(stream, 1.0 if self._stalled() else 3.0):
                    with _pa_lock:
                        _open_streams -= 1
                else:
                    self._errors += 1
                    self._last_error = RuntimeError(
                        "the audio stream did not stop (device or JACK server gone?); "
                        "abandoned it")
                try:
                    self._stream = None
                    self._set_master_target(level)
                    if core is not None:
                        core.after_stop()
                    self._inbox.clear()
                    self._cancelled += len(self._heap)
                    self._heap.clear()
                    self._gen_seen = self._gen
                    self._hard_done = self._hard_req
                    self._silence(True)
                    self._render_into(self._buf_addr, 0, 64)  # lets FluidSynth free voices
                    self._vocals.reset(self._count("frame"))
                finally:
                    self._accepting = True

    def close(self) -> None:
        """Stop and release the synth (the engine cannot start again); when no other
        engine plays, PortAudio is released too (its JACK client leaves the graph)."""
        self.stop()
        self._fr.close()
        if self._core is not None:
            self._core.set_tap(None)
        if self._device_name is not None:   # this engine used PortAudio
            _release_portaudio(_sounddevice())

    def __enter__(self) -> AudioEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ stats

    def stats(self) -> AudioStats:
        count = self._count
        calls = count("callbacks")
        n = min(calls, _DURATION_WINDOW)
        if n:
            durations = self._durations[:n] / 1000.0
            p50, p99 = (float(v) for v in np.percentile(durations, [50, 99]))
        else:
            p50 = p99 = 0.0
        err = self._last_error
        last_error = None if err is None else f"{type(err).__name__}: {err}"
        ring = self._vocals
        lim = self._limiter
        core = self._core
        errors = self._errors
        if core is None:
            limiter = (lim.active_blocks, lim.clipped_blocks, lim.min_gain)
        else:  # the core's own errors, plus those of the Python side (a stream abandoned)
            st = core.st
            errors += int(st[audio_core.ST["errors"]])
            code = int(st[audio_core.ST["last_error"]])
            if last_error is None and code:
                last_error = audio_core.ERRORS.get(code, f"core error {code}")
            limiter = (int(st[audio_core.ST["lim_active"]]),
                       int(st[audio_core.ST["lim_clipped"]]),
                       float(core.fl[audio_core.FL_LIM_MIN_GAIN]))
        last_ns = count("last_callback_ns")
        return AudioStats(
            running=self._stream is not None, device=self._device_name,
            sample_rate=self.sample_rate, block_size=self.block_size,
            block_us=count("last_frames") * 1e6 / self.sample_rate,
            frames_played=count("frame"), callbacks=calls, underruns=count("underruns"),
            callback_overruns=count("overruns"), callback_us_p50=p50, callback_us_p99=p99,
            callback_us_max=count("max_ns") / 1000.0, events_applied=count("applied"),
            events_late=count("late"), max_late_frames=count("max_late"),
            events_dropped=self._dropped, events_cancelled=count("cancelled"),
            event_errors=count("event_errors"), errors=errors, last_error=last_error,
            vocal_overflows=ring.overflows, vocal_overflow_frames=ring.overflow_frames,
            vocal_underflows=ring.underflows, vocal_late_frames=ring.late_frames,
            limiter_active_blocks=limiter[0], limiter_clipped_blocks=limiter[1],
            limiter_min_gain=limiter[2], voices=self.active_voices,
            output_latency_ms=count("latency_ns") / 1e6,
            since_last_callback_ms=(time.monotonic_ns() - last_ns) / 1e6 if last_ns else 0.0,
            path=self.path)
