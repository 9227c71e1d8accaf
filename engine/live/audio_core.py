"""The native audio core: build, load, and bind the C library behind the live audio output.

``engine/live/native/audio_core.c`` does the audio callback's per-block work (synth
events at their sample offsets into FluidSynth, the vocal ring, master level and fades,
the limiter, the recording tap, the counters) in C, so that the callback never waits for
the Python interpreter: a busy Python thread in the show process cannot make it late.
PortAudio calls it directly (on JACK, in JACK's real-time thread).

The library is compiled by ``scripts/setup.sh`` (``python -m engine.live.audio_core``) into
``engine/live/native/build/`` (ignored by git), and again, on first use, whenever it is
missing or older than its source and a C compiler is there. It links against nothing but
libm: FluidSynth's functions are handed over as pointers (those of the library that
pyfluidsynth loaded) and PortAudio's stream is opened from Python (the library
sounddevice loaded), so no development headers are needed.

When the core cannot be built or loaded, :class:`~engine.live.audio_out.AudioEngine`
falls back to its Python callback (the reference renderer) and says so: ``encore doctor``
prints which path is in use, and so does the ``stopped:`` line (``audio.path``).
``ENCORE_AUDIO_PATH=python`` (or ``core``) in the environment forces one path (``auto``,
the default, takes the core when it loads).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NATIVE_DIR = Path(__file__).resolve().parent / "native"
SOURCE = NATIVE_DIR / "audio_core.c"
BUILD_DIR = NATIVE_DIR / "build"
LIBRARY = BUILD_DIR / ("libencore_audio_core" + (".dylib" if sys.platform == "darwin"
                                                 else ".dll" if os.name == "nt" else ".so"))
ABI = 3
"""The C source's ENCORE_CORE_ABI: a library built from another version is rebuilt."""
CFLAGS = ["-O2", "-std=c11", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math",
          "-Wall", "-Wextra"]
"""-ffp-contract=off: no fused multiply-adds, so the core's float32 arithmetic rounds
exactly as numpy's does in the reference callback."""
ENV_PATH = "ENCORE_AUDIO_PATH"
PATHS = ("auto", "core", "python")

STAT_NAMES = ("frame", "callbacks", "underruns", "overruns", "max_ns", "applied", "late",
              "max_late", "cancelled", "event_errors", "errors", "voices",
              "last_callback_ns", "last_frames", "latency_ns", "lim_active", "lim_clipped",
              "lim_nonfinite", "queued", "last_error")
"""The core's int64 counters, in the order of its ST_* enum."""
ST = {name: i for i, name in enumerate(STAT_NAMES)}
FL_MASTER_TARGET, FL_MASTER_CUR, FL_LIM_GAIN, FL_LIM_MIN_GAIN = range(4)
ERRORS = {1: "RuntimeError: PortAudio asked for a block larger than the core's buffers"}
KIND_CODES = {"program": 0, "cc": 1, "pitch_bend": 2, "note_off": 3, "note_on": 4}
VS_READ, VS_DISCARD_REQ, VS_DISCARD_DONE = range(3)
CLOCK_WINDOW = 128
DURATION_WINDOW = 4096


class CoreUnavailableError(RuntimeError):
    """The native core could not be built or loaded (the message says why)."""


# --------------------------------------------------------------------------- build


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else cc / gcc / clang on the PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def stale() -> bool:
    """Whether the library is missing or older than its source."""
    try:
        return LIBRARY.stat().st_mtime < SOURCE.stat().st_mtime
    except FileNotFoundError:
        return True


def build(*, force: bool = False) -> Path:
    """Compile the core into :data:`LIBRARY` unless it is up to date; returns its path.
    Safe when several processes build at once (each writes a temporary file, then
    renames it over the library). Raises :class:`CoreUnavailableError`."""
    if not force and not stale():
        return LIBRARY
    cc = compiler()
    if cc is None:
        raise CoreUnavailableError("no C compiler (install gcc, or set CC) to build "
                              f"{SOURCE.name}")
    try:
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=LIBRARY.suffix, dir=BUILD_DIR)
        os.close(fd)
    except OSError as exc:
        raise CoreUnavailableError(f"cannot write {BUILD_DIR}: {exc}") from exc
    try:
        result = subprocess.run([cc, *CFLAGS, "-o", tmp, str(SOURCE), "-lm"],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise CoreUnavailableError(f"{cc} could not build {SOURCE.name}: "
                                  f"{(result.stderr or result.stdout).strip()[-800:]}")
        os.replace(tmp, LIBRARY)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CoreUnavailableError(f"building {SOURCE.name} failed: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return LIBRARY


# --------------------------------------------------------------------------- load

_lock = threading.Lock()
_loaded: tuple[Any, str] | None = None


def _declare(lib: Any) -> None:
    p, i, i64, d = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_double
    for name, restype, argtypes in (
            ("encore_core_abi", i, []),
            ("encore_core_new", p, [i, i, i64]),
            ("encore_core_free", None, [p]),
            ("encore_core_bind_counters", None, [p, p, p, p, p, p]),
            ("encore_core_bind_synth", None, [p, p, i] + [p] * 8),
            ("encore_core_bind_vocals", None, [p, p, i64, p]),
            ("encore_core_set_limiter", None, [p, d, d, i, d]),
            ("encore_core_set_tap", None, [p, p]),
            ("encore_core_set_stall", None, [p, i64, i64]),
            ("encore_core_push", i, [p, i64, i, i, i, i, i]),
            ("encore_core_queued", i64, [p]),
            ("encore_core_bump", None, [p, i]),
            ("encore_core_request_hard", None, [p]),
            ("encore_core_process", None, [p, p, i, d, d, i]),
            ("encore_core_offline_control", None, [p, i]),
            ("encore_core_after_stop", None, [p])):
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes


def requested_path() -> str:
    """``ENCORE_AUDIO_PATH`` (auto, core or python); a wrong value reads as auto."""
    value = os.environ.get(ENV_PATH, "auto").strip().lower() or "auto"
    return value if value in PATHS else "auto"


def load() -> tuple[Any, str]:
    """``(library, "")`` or ``(None, why not)``. Builds the library first when it is
    missing or stale. The library is a ``ctypes.PyDLL``: its calls keep the GIL, which
    is right for calls of a microsecond from Python; the audio thread calls the core
    from C and never touches the interpreter."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load()
        return _loaded


def _load() -> tuple[Any, str]:
    try:
        if stale() or not LIBRARY.exists():
            build()
        lib = ctypes.PyDLL(str(LIBRARY))
        _declare(lib)
        if lib.encore_core_abi() != ABI:
            build(force=True)
            raise CoreUnavailableError(f"{LIBRARY.name} was built from another version; rebuilt "
                                  "it: restart encore to use it")
    except (CoreUnavailableError, OSError, AttributeError) as exc:
        return None, str(exc)
    return lib, ""


@dataclass(frozen=True)
class CoreStatus:
    """Which audio path :class:`~engine.live.audio_out.AudioEngine` will take."""

    native: bool
    detail: str

    @property
    def path(self) -> str:
        return "core" if self.native else "python"


def status() -> CoreStatus:
    """The audio path the next engine takes, and why (for ``encore doctor``)."""
    wanted = requested_path()
    if wanted == "python":
        return CoreStatus(False, f"Python callback ({ENV_PATH}=python)")
    lib, reason = load()
    if lib is None:
        return CoreStatus(False, f"Python callback: the native core is unavailable ({reason})"
                          + ("" if wanted == "auto" else f" although {ENV_PATH}=core"))
    return CoreStatus(True, f"native core ({LIBRARY.name}): the audio callback never waits "
                      "for the interpreter")


# --------------------------------------------------------------------------- one core


class _Tap(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("capacity", ctypes.c_int64),
                ("written", ctypes.c_void_p)]


def _address(function: Any) -> int | None:
    return ctypes.cast(function, ctypes.c_void_p).value if function is not None else None


class NativeCore:
    """One C core bound to a FluidSynth synth and a vocal ring (for one AudioEngine).

    Counters live in numpy arrays the core writes and Python reads (:attr:`st`,
    :attr:`fl`, :attr:`durations`, :attr:`clock_offsets`, :attr:`clock_pairs`); the
    master level is written into :attr:`fl` by Python and read by the core.
    """

    def __init__(self, lib: Any, *, sample_rate: int, max_frames: int, max_events: int,
                 synth: int, sfid: int, fluid_lib: Any, vocals: Any,
                 limiter: Any) -> None:
        self._lib = lib
        self.st = np.zeros(len(STAT_NAMES), dtype=np.int64)
        self.fl = np.zeros(4, dtype=np.float64)
        self.fl[[FL_LIM_GAIN, FL_LIM_MIN_GAIN]] = 1.0
        self.durations = np.zeros(DURATION_WINDOW, dtype=np.int64)
        self.clock_offsets = np.full(CLOCK_WINDOW, np.iinfo(np.int64).max, dtype=np.int64)
        self.clock_pairs = np.zeros((CLOCK_WINDOW, 4), dtype=np.float64)
        handle = lib.encore_core_new(sample_rate, max_frames, max_events)
        if not handle:
            raise MemoryError("the native audio core could not allocate its buffers")
        self._handle = handle
        lib.encore_core_bind_counters(handle, self.st.ctypes.data, self.fl.ctypes.data,
                                      self.durations.ctypes.data,
                                      self.clock_offsets.ctypes.data,
                                      self.clock_pairs.ctypes.data)
        functions = {name: _address(getattr(fluid_lib, name, None)) for name in (
            "fluid_synth_write_float", "fluid_synth_noteon", "fluid_synth_noteoff",
            "fluid_synth_cc", "fluid_synth_pitch_bend", "fluid_synth_program_select",
            "fluid_synth_set_channel_type", "fluid_synth_get_active_voice_count")}
        required = [n for n, a in functions.items() if a is None
                    and n != "fluid_synth_set_channel_type"]
        if required:
            self.close()
            raise CoreUnavailableError(f"this FluidSynth lacks {', '.join(required)}")
        lib.encore_core_bind_synth(handle, synth, sfid, *functions.values())
        self._vocals = vocals  # keeps the ring's memory alive
        lib.encore_core_bind_vocals(handle, vocals.storage.ctypes.data, vocals.capacity,
                                    vocals.state.ctypes.data)
        lib.encore_core_set_limiter(handle, limiter.threshold, limiter.ceiling,
                                    limiter.attack_frames, limiter.release_s)
        self._tap: Any = None
        self._taps: list[_Tap] = []  # every descriptor ever handed over (the core may
        # still be reading an old one right after a change)
        self.callback_address = _address(lib.encore_core_pa_callback)

    @property
    def handle(self) -> int:
        return self._handle

    def close(self) -> None:
        """Free the core: only once no stream can call it (the engine never does it
        itself; a stream abandoned because it hung keeps its core alive)."""
        handle, self._handle = self._handle, None
        if handle:
            self._lib.encore_core_free(handle)

    def __del__(self) -> None:
        self.close()

    # -- producer side (any thread; the engine serialises pushes with a lock)

    def push(self, frame: int, order: int, kind: str, channel: int, data1: int,
             data2: int) -> bool:
        return bool(self._lib.encore_core_push(self._handle, frame, order, KIND_CODES[kind],
                                               channel, data1, data2))

    def queued(self) -> int:
        return int(self._lib.encore_core_queued(self._handle))

    def bump(self, hard: bool) -> None:
        """Drop every event queued so far (panic / stop); ``hard``: all sound off too."""
        self._lib.encore_core_bump(self._handle, int(hard))

    def request_hard(self) -> None:
        self._lib.encore_core_request_hard(self._handle)

    def set_tap(self, tap: Any) -> None:
        """Copy every block played into ``tap`` (a TapRing), or stop (None)."""
        if tap is None:
            self._lib.encore_core_set_tap(self._handle, None)
        else:
            desc = _Tap(tap.storage.ctypes.data, tap.capacity, tap.cursor.ctypes.data)
            self._taps.append(desc)
            self._lib.encore_core_set_tap(self._handle, ctypes.addressof(desc))
        self._tap = tap

    def set_stall(self, every: int, usec: int) -> None:
        """Tests only: every ``every``-th block sleeps ``usec`` microseconds."""
        self._lib.encore_core_set_stall(self._handle, every, usec)

    # -- while no stream runs

    def process(self, out: np.ndarray, dac: float, current: float, underflow: bool) -> None:
        """Make one block into ``out`` (C-contiguous ``(n, 2)`` float32), as the audio
        callback does."""
        self._lib.encore_core_process(self._handle, out.ctypes.data, out.shape[0], dac,
                                      current, int(underflow))

    def offline_control(self, drop_queue: bool) -> None:
        self._lib.encore_core_offline_control(self._handle, int(drop_queue))

    def after_stop(self) -> None:
        self._lib.encore_core_after_stop(self._handle)

    def reset_counters(self, frame: int) -> None:
        """Zero the counters (only while no stream runs); the frame counter stays."""
        self.st.fill(0)
        self.st[ST["frame"]] = frame
        self.durations.fill(0)
        self.fl[FL_LIM_GAIN] = 1.0
        self.fl[FL_LIM_MIN_GAIN] = 1.0


class _StreamParameters(ctypes.Structure):
    _fields_ = [("device", ctypes.c_int), ("channelCount", ctypes.c_int),
                ("sampleFormat", ctypes.c_ulong), ("suggestedLatency", ctypes.c_double),
                ("hostApiSpecificStreamInfo", ctypes.c_void_p)]


class _StreamInfo(ctypes.Structure):
    _fields_ = [("structVersion", ctypes.c_int), ("inputLatency", ctypes.c_double),
                ("outputLatency", ctypes.c_double), ("sampleRate", ctypes.c_double)]


_PA_FLOAT32 = 0x00000001


class CoreStream:
    """A PortAudio output stream (float32, stereo) whose callback is the core's C
    function: the same library, and so the same PortAudio state, as sounddevice's.

    It looks like the part of ``sounddevice.OutputStream`` the engine uses
    (``start``, ``stop``, ``close``, ``active``, ``latency``); PortAudio's calls release
    the GIL (``Pa_StopStream`` may block for ever once a JACK server has died: the
    engine calls it on a helper thread)."""

    def __init__(self, sd: Any, core: NativeCore, device: int, sample_rate: int,
                 block_size: int, latency: float | str) -> None:
        pa = ctypes.CDLL(sd._libname)
        pa.Pa_OpenStream.restype = ctypes.c_int
        pa.Pa_OpenStream.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p,
                                     ctypes.POINTER(_StreamParameters), ctypes.c_double,
                                     ctypes.c_ulong, ctypes.c_ulong, ctypes.c_void_p,
                                     ctypes.c_void_p]
        for name in ("Pa_StartStream", "Pa_StopStream", "Pa_CloseStream",
                     "Pa_IsStreamActive"):
            getattr(pa, name).restype = ctypes.c_int
            getattr(pa, name).argtypes = [ctypes.c_void_p]
        pa.Pa_GetStreamInfo.restype = ctypes.POINTER(_StreamInfo)
        pa.Pa_GetStreamInfo.argtypes = [ctypes.c_void_p]
        pa.Pa_GetErrorText.restype = ctypes.c_char_p
        pa.Pa_GetErrorText.argtypes = [ctypes.c_int]
        self._pa, self._sd, self._core = pa, sd, core
        info = sd.query_devices(device)
        if isinstance(latency, str):
            seconds = float(info["default_high_output_latency" if latency == "high"
                                else "default_low_output_latency"])
        else:
            seconds = float(latency)
        params = _StreamParameters(device, 2, _PA_FLOAT32, seconds, None)
        stream = ctypes.c_void_p()
        self._check(pa.Pa_OpenStream(ctypes.byref(stream), None, ctypes.byref(params),
                                     float(sample_rate), block_size, 0,
                                     core.callback_address, core.handle), "opening")
        self._stream: int | None = stream.value
        self.hostapi = sd.query_hostapis(info["hostapi"])["name"]
        if self.hostapi == "ALSA":  # ask for a real-time callback thread, as JACK gives
            enable = getattr(pa, "PaAlsa_EnableRealtimeScheduling", None)
            if enable is not None:
                enable.argtypes = [ctypes.c_void_p, ctypes.c_int]
                enable(self._stream, 1)

    def _check(self, err: int, doing: str) -> None:
        if err < 0:
            text = self._pa.Pa_GetErrorText(err) or b"unknown error"
            raise self._sd.PortAudioError(
                f"Error {doing} the audio core's stream: {text.decode(errors='replace')}", err)

    @property
    def latency(self) -> float:
        info = self._pa.Pa_GetStreamInfo(self._stream) if self._stream else None
        return float(info.contents.outputLatency) if info else 0.0

    @property
    def active(self) -> bool:
        return bool(self._stream) and self._pa.Pa_IsStreamActive(self._stream) == 1

    def start(self) -> None:
        self._check(self._pa.Pa_StartStream(self._stream), "starting")

    def stop(self) -> None:
        if self._stream:
            self._pa.Pa_StopStream(self._stream)

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream:
            self._pa.Pa_CloseStream(stream)


def main() -> int:
    """``python -m engine.live.audio_core``: build the core (the setup runs this)."""
    try:
        path = build(force="--force" in sys.argv[1:])
    except CoreUnavailableError as exc:
        print(f"encore: warning: {exc}; the live audio will use the Python callback",
              file=sys.stderr)
        return 1
    print(f"audio core: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
