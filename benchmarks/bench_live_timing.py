"""Live timing under load: MIDI sent by the MidiSender thread vs plain asyncio, and audio
underruns of the AudioEngine, while a model worker decodes bar after bar.

    python benchmarks/bench_live_timing.py              # 30 s of MIDI per method, 300 s audio
    python benchmarks/bench_live_timing.py --quick      # a smoke run, under a minute
    python benchmarks/bench_live_timing.py --midi-seconds 60 --audio-seconds 120

Everything runs against a JACK dummy server of its own (``jackd -n encore-bench -d dummy
-r 48000``), started detached (setsid) and stopped by PID; ``JACK_DEFAULT_SERVER`` is
set to its name for every process of the benchmark, so other JACK servers are left alone.
Only process callbacks are registered with JACK from Python (never notification
callbacks: they deadlock the server while rtmidi opens ports).

Part 1, MIDI (server period 32 frames = 0.667 ms, because rtmidi's JACK output lands at
the start of the next cycle). A receiver in a process of its own (JACK-Client, one MIDI
input, a process callback only) stamps every arriving event with its frame
(``last_frame_time`` + offset) and records ``(frame, monotonic_ns)`` at the top of each
process callback. An event's arrival time is its frame converted with the lower envelope
of those pairs over the next 1 s (the earliest the callback woke after a cycle start: that
leaves out the receiver's own wake-up jitter, which is printed; looking only ahead keeps
out the times before the dummy driver re-anchored its grid after a late cycle). The sender
process plays a 120 BPM stream (16th-note hats, kick and snare, bass in 8ths, three-note
chords on the beats, a humanized lead: four channels, note-offs at assorted gate lengths)
through one of two methods, alternating in blocks (ABBA...) so both see the same load:

- ``MidiSender``: the engine's sender thread (absolute deadlines, sleep then spin), given
  each bar 250 ms ahead, as the show does;
- ``asyncio``: the baseline, a coroutine per bar on the show's event loop that does
  ``await asyncio.sleep(deadline - now)`` and then ``send_message`` on an rtmidi JACK port.

Meanwhile, in the same process, the event loop does what the show's does (pushes each bar
250 ms before it starts, wakes every 50 ms) with ``gc.freeze()`` and a 0.5 ms GIL switch
interval, and a :class:`~engine.live.generator.BarGenerator` worker realises bar plans
back to back (continuously: a far heavier load than a show's one bar per bar).
Every scheduled message carries an id in its velocity, so each arrival is matched to its
deadline. Error = arrival - deadline. rtmidi's output waits for the next JACK cycle, so
up to one period (0.667 ms) of it is JACK's, not the sender's: "beyond one period" is
``max(0, error - 0.667 ms)``. Goals for the MidiSender under load: p99 <= 1.5 ms and
max <= 3 ms beyond one period, nothing lost.

Part 2, audio (server period 256 frames): an :class:`~engine.live.audio_out.AudioEngine`
(FluidSynth in a sounddevice callback on PortAudio's JACK host API, 256-frame blocks)
plays the same stream for ``--audio-seconds`` while the worker decodes continuously;
reported: underruns during the run (goal 0; those while the stream opens and around the
show's ``gc.collect()`` + ``gc.freeze()`` are shown apart), callbacks longer than a block,
and the callback's cost (p50/p99/max over every callback of the run).

The model is ``models_onnx/trio_4bar`` when present (or ``--model-dir``); otherwise random
weights exported to a folder in the temporary directory, kept there for the next run (its
name hashes the shapes and the exporter's sources): the trio_4bar preset's shapes, or with
``--quick`` tiny ones. Decoding speed does not depend on the weights' values.
``--keep DIR`` copies the raw data (receiver stamps, schedules, jackd logs) to DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime
import gc
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SERVER = "encore-bench"
RATE = 48000
MIDI_PERIOD = 32
AUDIO_PERIOD = 256
BPM = 120.0
PUSH_LEAD_NS = 250_000_000  # the show pushes a bar min(half a bar, 0.25 s) before it
TICK_S = 0.05  # the show's loop wakes at least this often
RX_CLIENT = "encore-bench-rx"
RX_PORT = f"{RX_CLIENT}:in"
MATCH_EARLY_NS = 20_000_000  # an arrival may be matched to a deadline this far after it
MATCH_LATE_NS = 1_000_000_000  # ... or this far before it
GOAL_P99_MS = 1.5
GOAL_MAX_MS = 3.0
NS = 1_000_000_000
PERIOD_NS = MIDI_PERIOD * NS / RATE
TINY_SHAPES = dict(enc_size=8, z_size=8, dec_size=8, dec_layers=2, conductor_size=8,
                   conductor_layers=2)
METHODS = ("sender", "asyncio")
LABELS = {"sender": "MidiSender thread", "asyncio": "asyncio.sleep baseline"}

# ----------------------------------------------------------------------------- the stream

NOTE_ON, NOTE_OFF = 0x90, 0x80
DRUMS, BASS, CHORDS, LEAD = 9, 0, 1, 2
PROGRAMS = {BASS: 33, CHORDS: 48, LEAD: 80}
BASS_NOTES = (36, 36, 43, 41, 38, 36, 43, 45)
CHORD_ROOTS = (60, 57, 53, 55)
LEAD_NOTES = (72, 74, 76, 79, 81, 84)


class Stream:
    """The test music: bar ``b`` -> ``[(deadline_ns, status, data1, data2)]``.

    Every message's third byte is an id (1..127, counted per status and pitch), so that
    identical bytes come back at least ~16 s apart and an arrival matches one deadline.
    Every note of a bar ends within the bar.
    """

    def __init__(self) -> None:
        self._count: dict[tuple[int, int], int] = {}

    def _tag(self, status: int, pitch: int) -> int:
        n = self._count.get((status, pitch), 0)
        self._count[(status, pitch)] = n + 1
        return 1 + n % 127

    def _note(self, out: list, channel: int, pitch: int, start: int, length: int) -> None:
        out.append((start, NOTE_ON | channel, pitch, self._tag(NOTE_ON | channel, pitch)))
        out.append((start + length, NOTE_OFF | channel, pitch,
                    self._tag(NOTE_OFF | channel, pitch)))

    def bar(self, index: int, bar_start_ns: int) -> list[tuple[int, int, int, int]]:
        rng = np.random.default_rng([7, index])
        step = round(60 / BPM / 4 * NS)
        ms = 1_000_000
        out: list[tuple[int, int, int, int]] = []
        for s in range(16):
            t = bar_start_ns + s * step
            self._note(out, DRUMS, 42, t, 40 * ms)  # closed hat, every 16th
            if s in (0, 8, 10):
                self._note(out, DRUMS, 36, t, 40 * ms)  # kick
            if s in (4, 12):
                self._note(out, DRUMS, 38, t, 40 * ms)  # snare
            if s % 2 == 0:
                self._note(out, BASS, BASS_NOTES[s // 2], t, 200 * ms)
            if s % 4 == 0:
                root = CHORD_ROOTS[s // 4]
                for pitch in (root, root + 4, root + 7):
                    self._note(out, CHORDS, pitch, t, 400 * ms)
            if rng.random() < 0.5:  # a humanized lead: off the grid by up to 10 ms
                jitter = int(rng.integers(-10 * ms, 10 * ms)) if s else int(
                    rng.integers(0, 10 * ms))
                self._note(out, LEAD, int(rng.choice(LEAD_NOTES)), t + jitter,
                           int(rng.integers(60, 110)) * ms)
        out.sort()
        return out


def block_methods(blocks_per_method: int) -> list[str]:
    """ABBA ABBA ...: each method gets the same share of early and late blocks."""
    pattern = ("sender", "asyncio", "asyncio", "sender")
    return [pattern[i % 4] for i in range(2 * blocks_per_method)]


# ----------------------------------------------------------------------------- helpers


def _percentiles(values: np.ndarray | list[float]) -> tuple[float, float, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return (float("nan"),) * 3
    p50, p99 = np.percentile(a, [50, 99])
    return float(p50), float(p99), float(a.max())


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _versions() -> str:
    import onnxruntime
    import rtmidi
    import sounddevice

    parts = [f"python {platform.python_version()}", f"numpy {np.__version__}",
             f"onnxruntime {onnxruntime.__version__}", f"python-rtmidi {rtmidi.__version__}",
             f"sounddevice {sounddevice.__version__} "
             f"({sounddevice.get_portaudio_version()[1].split(',')[0]})"]
    try:
        import jack

        parts.append(f"JACK-Client {jack.__version__}")
    except ImportError:
        parts.append("JACK-Client missing")
    try:
        import fluidsynth

        lib = ctypes.CDLL(fluidsynth.lib)
        lib.fluid_version_str.restype = ctypes.c_char_p
        parts.append(f"FluidSynth {lib.fluid_version_str().decode()}")
    except Exception:  # noqa: BLE001 - a version string is not worth failing for
        parts.append("FluidSynth ?")
    jackd = shutil.which("jackd")
    if jackd:
        out = subprocess.run([jackd, "--version"], capture_output=True, text=True,
                             timeout=10).stdout.split()
        parts.append(f"jackd {out[2] if len(out) > 2 else '?'}")
    return ", ".join(parts)


def _machine() -> str:
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0))
    return (f"machine: {platform.system()} {platform.release()} {platform.machine()}, {model}; "
            f"{os.cpu_count()} cores ({usable} usable); load average {_load()}")


def _realtime_threads(pid: int) -> int:
    """How many of a process's threads run SCHED_FIFO or SCHED_RR."""
    count = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            count += int(fields[38]) in (1, 2)  # field 41 of stat: the policy
    return count


# ----------------------------------------------------------------------------- jackd

_PROBE = "import jack; jack.Client('encore-bench-probe', no_start_server=True).close()"


def _server_answers() -> bool:
    try:
        return subprocess.run([sys.executable, "-c", _PROBE], capture_output=True,
                              timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@contextlib.contextmanager
def jack_server(period: int, log_dir: Path) -> Iterator[subprocess.Popen]:
    """``jackd -n encore-bench -d dummy -r 48000 -p period``, detached, stopped by PID."""
    jackd = shutil.which("jackd")
    if jackd is None:
        raise SystemExit("bench_live_timing: jackd is not installed (apt-get install jackd2)")
    if _server_answers():
        raise SystemExit(f"bench_live_timing: a JACK server named {SERVER!r} already runs "
                         "(another run of this benchmark?); stop it first")
    log_path = log_dir / f"jackd-p{period}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [jackd, "-n", SERVER, "-d", "dummy", "-r", str(RATE), "-p", str(period)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not _server_answers():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench_live_timing: jackd did not start:\n"
                                 f"{log_path.read_text(errors='replace')}")
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=8)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def _stop_child(process: subprocess.Popen, timeout: float = 10) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def _child_command(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _run_child(args: list[str], timeout: float) -> None:
    process = subprocess.Popen(_child_command(*args), cwd=REPO)
    try:
        rc = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_child(process)
        raise SystemExit(f"bench_live_timing: child {args[:2]} ran past {timeout:.0f} s") from None
    finally:
        _stop_child(process)
    if rc != 0:
        raise SystemExit(f"bench_live_timing: child {args[:2]} failed with exit code {rc}")


# ----------------------------------------------------------------------------- receiver


def child_receiver(out: Path, capacity_s: float) -> None:
    """The independent receiver: stamps MIDI arrivals to the frame; saves on stdin EOF."""
    import jack

    client = jack.Client(RX_CLIENT, no_start_server=True)
    inport = client.midi_inports.register("in")
    capacity = int(capacity_s * client.samplerate / client.blocksize) + 1
    frames = np.zeros(capacity, dtype=np.int64)
    monos = np.zeros(capacity, dtype=np.int64)
    events: list[tuple[int, int, bytes]] = []
    state = {"n": 0, "next": -1, "missed": 0}
    now_ns = time.monotonic_ns

    def process(nframes: int) -> None:  # the only callback registered from Python
        mono = now_ns()
        base = client.last_frame_time
        i = state["n"]
        if i < capacity:
            frames[i] = base
            monos[i] = mono
            state["n"] = i + 1
        if state["next"] >= 0 and base != state["next"]:
            state["missed"] += 1
        state["next"] = base + nframes
        for offset, data in inport.incoming_midi_events():
            events.append((base + offset, min(i, capacity - 1), bytes(data)))

    client.set_process_callback(process)
    client.activate()
    print(f"ready {inport.name} {client.samplerate} {client.blocksize}", flush=True)
    rate, period = client.samplerate, client.blocksize
    sys.stdin.read()  # the parent closes our stdin when the sender is done
    client.deactivate()
    client.close()
    n = state["n"]
    packed = np.zeros((len(events), 4), dtype=np.uint8)
    for k, (_, _, data) in enumerate(events):
        packed[k, :min(len(data), 3)] = list(data[:3])
        packed[k, 3] = len(data)
    np.savez(out, frames=frames[:n], monos=monos[:n], rate=rate, period=period,
             missed=state["missed"], full=n >= capacity,
             ev_frame=np.array([e[0] for e in events], dtype=np.int64),
             ev_cycle=np.array([e[1] for e in events], dtype=np.int64), ev_bytes=packed)
    print("saved", flush=True)


def arrivals(path: Path) -> dict[str, Any]:
    """Receiver data -> arrival ns of every event.

    ``offset = monotonic_ns - frame * 1e9 / rate`` of a cycle is when its first frame
    started plus how late the receiver's callback woke. The dummy driver keeps its cycles
    on an absolute grid, so the offset's floor is constant, except that after a late cycle
    (an xrun) the driver re-anchors its grid later: the floor only ever steps up. So an
    event in cycle ``i`` is converted with the smallest offset of cycles ``i .. i + 1 s``:
    never one from before a re-anchoring (which would make it look early), and the
    receiver's own wake-up delay is left out.
    """
    data = np.load(path)
    rate, period = int(data["rate"]), int(data["period"])
    frames, monos = data["frames"], data["monos"]
    offsets = monos.astype(np.float64) - frames.astype(np.float64) * NS / rate
    window = rate // period + 1  # 1 s of cycles
    times = np.empty(len(data["ev_frame"]))
    for k, (frame, cycle) in enumerate(zip(data["ev_frame"], data["ev_cycle"], strict=True)):
        times[k] = offsets[cycle:cycle + window].min() + frame * NS / rate
    sample = np.arange(0, len(offsets), 7)
    wake_us = [(offsets[i] - offsets[i:i + window].min()) / 1e3 for i in sample]
    # re-anchorings: steps of over 0.1 ms in the floor (0.1 s blocks, looking 1 s ahead)
    block = max(1, window // 10)
    floors = np.array([offsets[i:i + block].min() for i in range(0, len(offsets), block)])
    ahead = np.array([floors[k:k + 10].min() for k in range(len(floors))])
    steps = np.diff(ahead) if ahead.size > 1 else np.zeros(0)
    keys = [bytes(row[:row[3]]) for row in data["ev_bytes"]]
    return {"times": times, "keys": keys, "rate": rate, "period": period,
            "missed": int(data["missed"]), "full": bool(data["full"]),
            "wake_us": _percentiles(wake_us), "cycles": len(frames),
            "reanchors": int((steps > 100_000).sum()),
            "shift_ms": float(steps[steps > 100_000].sum() / 1e6)}


def match(scheduled: list[tuple[int, str, str]], got: dict[str, Any]) -> dict[str, Any]:
    """Match each arrival to the deadline of the scheduled message with its bytes."""
    by_key: dict[bytes, list[int]] = {}
    for index, (_, key, _) in enumerate(scheduled):
        by_key.setdefault(bytes.fromhex(key), []).append(index)
    deadlines = {k: np.array([scheduled[i][0] for i in v]) for k, v in by_key.items()}
    error = np.full(len(scheduled), np.nan)
    stray = 0
    for t, key in zip(got["times"], got["keys"], strict=True):
        if key not in by_key or key[0] & 0xF0 not in (NOTE_ON, NOTE_OFF):
            continue  # the sender's all-notes-off on stopping, and the like
        d = deadlines[key]
        j = int(np.searchsorted(d, t + MATCH_EARLY_NS, side="right")) - 1
        index = by_key[key][j] if j >= 0 else -1
        if index < 0 or t - d[j] > MATCH_LATE_NS or not np.isnan(error[index]):
            stray += 1
            continue
        error[index] = t - d[j]
    methods = np.array([m for _, _, m in scheduled])
    result: dict[str, Any] = {"stray": stray}
    for method in METHODS:
        mine = error[methods == method]
        ok = mine[~np.isnan(mine)] / 1e6
        result[method] = {"n": int(mine.size), "arrived": int(ok.size),
                          "lost": int(mine.size - ok.size), "raw": _percentiles(ok),
                          "beyond": _percentiles(np.maximum(ok - PERIOD_NS / 1e6, 0.0)),
                          "early": int((ok < 0).sum()),
                          "earliest": float(ok.min()) if ok.size else 0.0}
    return result


# ----------------------------------------------------------------------------- the load


def _patch():
    from engine.patch import default_patch_path, load_patch

    return load_patch(default_patch_path())


class Load:
    """BarGenerator workers realising plans back to back, and the show's 50 ms ticks."""

    def __init__(self, model_dir: str | None, workers: int) -> None:
        from engine.live.generator import BarGenerator
        from engine.song.conductor import Conductor

        self.patch = _patch()
        self.generators = [BarGenerator(self.patch, model_dir=model_dir)
                           for _ in range(workers)]
        self.info = self.generators[0].describe()
        self.conductors = [Conductor(self.patch, self.info["z_size"], seed=i)
                           for i in range(workers)]
        for generator, conductor in zip(self.generators, self.conductors, strict=True):
            generator.warm_up(conductor.plan())
        self.seconds: list[float] = []
        self.fresh = 0
        self.ticks = 0
        self._tasks: list[asyncio.Task] = []
        self.started = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        self._tasks = [asyncio.ensure_future(self._decode(g, c))
                       for g, c in zip(self.generators, self.conductors, strict=True)]

    async def _decode(self, generator, conductor) -> None:
        while True:
            _, fresh = await generator.realize(conductor.plan())
            self.fresh += fresh
            if fresh:
                self.seconds.append(generator.health.last_seconds)

    async def sleep_until(self, deadline_ns: int) -> None:
        """The show's ``_sleep_until``: wait on an event with <= 50 ms timeouts."""
        event = asyncio.Event()
        while (remaining := (deadline_ns - time.monotonic_ns()) / NS) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(remaining, TICK_S))
            self.ticks += 1

    def stop(self) -> dict[str, Any]:
        for task in self._tasks:
            task.cancel()
        wall = time.monotonic() - self.started
        health = [g.health.to_dict() for g in self.generators]
        for generator in self.generators:
            generator.close()
        p50, p99, mx = _percentiles(np.array(self.seconds) * 1e3)
        return {"model": self.info, "workers": len(self.generators), "realized": self.fresh,
                "per_s": self.fresh / wall if wall else 0.0, "realize_ms": (p50, p99, mx),
                "fallbacks": sum(h["fallbacks"] for h in health),
                "timeouts": sum(h["timeouts"] for h in health),
                "errors": sum(h["errors"] for h in health)}


def _show_like_process() -> Callable[[], None]:
    """What the show does once started: a 0.5 ms switch interval and gc.freeze()."""
    from engine.live.show import SWITCH_INTERVAL_S

    previous = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.collect()
    gc.freeze()

    def undo() -> None:
        sys.setswitchinterval(previous)
        gc.unfreeze()
    return undo


# ----------------------------------------------------------------------------- MIDI sender


async def _midi_main(args: argparse.Namespace) -> dict[str, Any]:
    import rtmidi

    from engine.clock import Clock
    from engine.live.midi_ports import match_port, open_output
    from engine.live.midi_sender import MidiSender

    load = Load(args.model_dir, args.workers)
    port = open_output(RX_PORT, "jack", client_name="encore-bench-sender")
    baseline = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="encore-bench-asyncio")
    index = match_port(RX_PORT, baseline.get_ports())
    if index is None:
        raise RuntimeError(f"no JACK MIDI input {RX_PORT!r}: {baseline.get_ports()}")
    baseline.open_port(index, "out")
    methods = [m for m in block_methods(args.blocks) for _ in range(args.block_bars)]
    clock = Clock(BPM, start_ns=time.monotonic_ns() + NS)
    sender = MidiSender(clock, {"rx": port}).start()
    stream = Stream()
    scheduled: list[tuple[int, str, str]] = []
    baseline_late: list[float] = []
    tasks: list[asyncio.Task] = []

    async def play_bar(events: list[tuple[int, int, int, int]]) -> None:
        """The baseline: sleep on the event loop until each deadline, then send."""
        send = baseline.send_message
        i = 0
        while i < len(events):
            deadline = events[i][0]
            delay = (deadline - time.monotonic_ns()) / NS
            if delay > 0:
                await asyncio.sleep(delay)
            baseline_late.append((time.monotonic_ns() - deadline) / 1e6)
            while i < len(events) and events[i][0] == deadline:
                send(events[i][1:])
                i += 1

    undo = _show_like_process()
    load.start()
    try:
        for bar, method in enumerate(methods):
            await load.sleep_until(clock.bar_start_ns(bar) - PUSH_LEAD_NS)
            events = stream.bar(bar, clock.bar_start_ns(bar))
            scheduled.extend((d, bytes((s, a, b)).hex(), method) for d, s, a, b in events)
            if method == "sender":
                for d, s, a, b in events:
                    sender.schedule(d, "rx", bytes((s, a, b)))
            else:
                tasks.append(asyncio.ensure_future(play_bar(events)))
        await load.sleep_until(clock.bar_start_ns(len(methods)) + 200_000_000)
        stats = sender.stats()
    finally:
        load_stats = load.stop()
        undo()
        sender.stop()
        for task in tasks:
            task.cancel()
        port.close()
        time.sleep(0.1)  # rtmidi drops what the next JACK cycle has not taken yet
        baseline.close_port()
        baseline.delete()
    return {"scheduled": scheduled, "sender": stats, "baseline_late_ms": baseline_late,
            "load": load_stats, "ticks": load.ticks}


def child_midi(args: argparse.Namespace) -> None:
    result = asyncio.run(_midi_main(args))
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")


# ----------------------------------------------------------------------------- audio


async def _audio_main(args: argparse.Namespace) -> dict[str, Any]:
    from engine.live.audio_out import AudioEngine

    load = Load(args.model_dir, args.workers)
    engine = AudioEngine(None, sample_rate=RATE, block_size=AUDIO_PERIOD,
                         jack_name="encore-bench-audio", channels_programs=PROGRAMS)
    durations: list[np.ndarray] = []
    seen = {"n": 0, "lost": 0, "voices": 0, "underruns": 0}
    underrun_at: list[float] = []  # seconds into the run, to the 2 s between looks
    ring = engine._durations  # the callback's own cost ring (private: read-only here)

    def collect() -> None:
        """Copy the callback durations written since the last look (ring of 4096)."""
        current = engine.stats().callbacks
        start = seen["n"]
        if current - start > ring.size - 64:
            seen["lost"] += current - start - (ring.size - 64)
            start = current - (ring.size - 64)
        durations.append(ring[np.arange(start, current) % ring.size].copy())
        seen["n"] = current
        seen["voices"] = max(seen["voices"], engine.active_voices)
        underruns = engine.stats().underruns
        if underruns > seen["underruns"]:
            underrun_at.extend([(time.monotonic_ns() - clock_start) / NS]
                               * (underruns - seen["underruns"]))
            seen["underruns"] = underruns

    engine.start()
    try:
        while engine.stats().callbacks < 8:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # the stream settles
        opened = engine.stats().underruns
        # As the show does once its audio runs: gc.collect() then gc.freeze(). The collect
        # holds the GIL for a while; its underruns are start-up, counted apart.
        started_ns = time.monotonic_ns()
        undo = _show_like_process()
        gc_ms = (time.monotonic_ns() - started_ns) / 1e6
        await asyncio.sleep(0.5)
        startup = engine.stats()
        seen.update(n=startup.callbacks, underruns=startup.underruns)
        bars = max(1, round(args.audio_seconds * BPM / 240))
        clock_start = time.monotonic_ns() + NS
        bar_ns = round(240 / BPM * NS)
        stream = Stream()
        kinds = {NOTE_ON: "note_on", NOTE_OFF: "note_off"}
        load.start()
        try:
            next_look = time.monotonic_ns()
            for bar in range(bars):
                start = clock_start + bar * bar_ns
                await load.sleep_until(start - PUSH_LEAD_NS)
                for d, s, a, b in stream.bar(bar, start):
                    kind = kinds[s & 0xF0]
                    engine.schedule(engine.ns_to_frame(d), kind, s & 0x0F, a,
                                    b if kind == "note_on" else 0)
                if time.monotonic_ns() >= next_look:
                    collect()
                    next_look += 2 * NS
            await load.sleep_until(clock_start + bars * bar_ns + 300_000_000)
            collect()
            stats = engine.stats().as_dict()
        finally:
            load_stats = load.stop()
            undo()
    finally:
        engine.close()
    cost = np.concatenate(durations) / 1e3 if durations else np.zeros(0)
    return {"stats": stats, "cost_us": _percentiles(cost), "measured": int(cost.size),
            "unmeasured": seen["lost"], "max_voices": seen["voices"], "bars": bars,
            "startup_underruns": startup.underruns, "startup_callbacks": startup.callbacks,
            "open_underruns": opened, "gc_ms": gc_ms,
            "underruns": stats["underruns"] - startup.underruns, "underrun_at": underrun_at,
            "seconds": bars * 240 / BPM, "load": load_stats, "ticks": load.ticks}


def child_audio(args: argparse.Namespace) -> None:
    result = asyncio.run(_audio_main(args))
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")


# ----------------------------------------------------------------------------- model


def child_export(args: argparse.Namespace) -> None:
    import warnings

    import torch

    from export.musicvae import MusicVAE, MusicVAEConfig
    from export.musicvae_onnx import export_all
    from export.train_musicvae import PRESETS

    cfg = PRESETS["trio_4bar"]
    if args.tiny:
        cfg = MusicVAEConfig(name="trio_4bar", parts=cfg.parts, bars=cfg.bars, **TINY_SHAPES)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ONNX exporter's notes
        export_all(MusicVAE(cfg).eval(), Path(args.out))


def _model_cache(tiny: bool) -> Path:
    """A folder under the temporary directory for the random-weight export, named by a
    hash of the shapes and of the model and exporter sources (so a change re-exports)."""
    digest = hashlib.sha256(json.dumps(TINY_SHAPES if tiny else "trio_4bar preset").encode())
    for source in ("export/musicvae.py", "export/musicvae_onnx.py", "export/train_musicvae.py"):
        digest.update((REPO / source).read_bytes())
    return Path(tempfile.gettempdir()) / f"encore-bench-live-model-{digest.hexdigest()[:16]}"


def _model(args: argparse.Namespace) -> tuple[str | None, str]:
    """(model_dir for BarGenerator, a description)."""
    from engine.music.musicvae_runner import find_model

    if args.model_dir:
        decoder, _ = find_model("trio_4bar", args.model_dir)
        return str(args.model_dir), f"{decoder} (--model-dir)"
    with contextlib.suppress(FileNotFoundError):
        decoder, _ = find_model(str(REPO / "models_onnx" / "trio_4bar"))
        return None, f"shipped {decoder.relative_to(REPO)}"
    shapes = ("tiny shapes (enc/dec/conductor 8, z 8)" if args.quick
              else "the trio_4bar preset's shapes (hierarchical, 128 wide, z 128)")
    out = _model_cache(args.quick)
    if (out / "trio_4bar.decoder.onnx").is_file():
        how = f"exported earlier to {out}"
    else:
        started = time.monotonic()
        partial = Path(tempfile.mkdtemp(prefix=out.name + "-partial-", dir=out.parent))
        try:
            _run_child(["--child", "export", "--out", str(partial)]
                       + (["--tiny"] if args.quick else []), timeout=600)
            partial.rename(out)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        how = f"exported to {out} in {time.monotonic() - started:.0f} s"
    return str(out), f"random weights, {shapes}, {how} (models_onnx/trio_4bar absent)"


# ----------------------------------------------------------------------------- report


def _row(label: str, values: tuple[float, float, float]) -> str:
    return f"{label:<28}" + "".join(f"{v:>9.3f}" for v in values)


def _report_midi(result: dict[str, Any], got: dict[str, Any], matched: dict[str, Any],
                 args: argparse.Namespace) -> list[tuple[str, str, str, bool | None]]:
    load = result["load"]
    seconds = args.blocks * args.block_bars * 240 / BPM
    print(f"\nPART 1  MIDI timing: jackd dummy {RATE} Hz, {got['period']}-frame period "
          f"({PERIOD_NS / 1e6:.3f} ms); {BPM:g} BPM stream on 4 channels (16th hats, "
          f"8th bass, 3-note chords, humanized lead);\n        {seconds:.0f} s per method in "
          f"{args.block_bars * 240 / BPM:.0f} s blocks, alternating "
          f"{''.join('A' if m == 'sender' else 'B' for m in block_methods(args.blocks))} "
          f"(A = MidiSender, B = asyncio)")
    print(f"load: {load['workers']} BarGenerator worker(s) realising plans back to back: "
          f"{load['realized']} bars ({load['per_s']:.1f}/s), realize p50 "
          f"{load['realize_ms'][0]:.1f} ms p99 {load['realize_ms'][1]:.1f} ms; fallbacks "
          f"{load['fallbacks']}, timeouts {load['timeouts']}, errors {load['errors']}; "
          f"event loop woke {result['ticks']} times")
    wake = got["wake_us"]
    print(f"receiver: {got['cycles']} cycles ({got['missed']} irregular: a period skipped or "
          f"repeated); its callback woke p50 {wake[0]:.0f} us, p99 {wake[1]:.0f} us, max "
          f"{wake[2]:.0f} us after its cycle started (left out of the arrival times); "
          f"{matched['stray']} unmatched arrivals")
    print(f"jackd: its dummy driver ran late and re-anchored its cycle grid {got['reanchors']} "
          f"times (by {got['shift_ms']:.2f} ms in all)")
    stats = result["sender"]
    print(f"MidiSender's own counts: sent {stats['sent']}, later than 3 ms {stats['late']}, "
          f"note-ons dropped (over 50 ms late) {stats['dropped']}, errors "
          f"{sum(stats['errors'].values())}, crashes {stats['crashes']}")
    print("\n                                   n  arrived  lost | error = arrival - deadline "
          "(ms)")
    header = f"{'':<28}{'p50':>9}{'p99':>9}{'max':>9}"
    for method in METHODS:
        m = matched[method]
        print(f"  {LABELS[method]:<28}{m['n']:>6}{m['arrived']:>9}{m['lost']:>6}"
              + (f"  ({m['early']} early, by up to {-m['earliest']:.3f} ms)" if m["early"]
                 else ""))
    if any(matched[method]["early"] for method in METHODS):
        print("  (early: sent after the nominal start of a JACK cycle that ran late, so still "
              "taken in that cycle, stamped with its first frame)")
    for what, title in (("raw", "raw error"), ("beyond", "beyond one JACK period")):
        print(f"\n{title + ' (ms)':<28}{header[28:]}")
        for method in METHODS:
            print(_row(f"  {LABELS[method]}", matched[method][what]))
        ratio = tuple(b / s if s > 0 else float("inf") for b, s in
                      zip(matched["asyncio"][what], matched["sender"][what], strict=True))
        print(f"{'  ratio asyncio / sender':<28}" + "".join(
            f"{r:>8.1f}x" if np.isfinite(r) else f"{'-':>9}" for r in ratio))
    late = result["sender"]["lateness"]
    base = _percentiles(result["baseline_late_ms"])
    print(f"\n{'self-reported lateness (ms)':<28}{header[28:]}   (when the sender thought it "
          "sent)")
    print(_row("  MidiSender thread",
               (late["p50_us"] / 1e3, late["p99_us"] / 1e3, late["max_us"] / 1e3)))
    print(_row("  asyncio.sleep baseline", base))
    s = matched["sender"]
    return [
        ("MIDI: MidiSender p99 beyond one period", f"<= {GOAL_P99_MS} ms",
         f"{s['beyond'][1]:.3f} ms", s["beyond"][1] <= GOAL_P99_MS),
        ("MIDI: MidiSender max beyond one period", f"<= {GOAL_MAX_MS} ms",
         f"{s['beyond'][2]:.3f} ms", s["beyond"][2] <= GOAL_MAX_MS),
        ("MIDI: MidiSender messages lost", "0", str(s["lost"]), s["lost"] == 0),
        ("(asyncio baseline p99 beyond one period)", f"<= {GOAL_P99_MS} ms",
         f"{matched['asyncio']['beyond'][1]:.3f} ms", None),
        ("(asyncio baseline max beyond one period)", f"<= {GOAL_MAX_MS} ms",
         f"{matched['asyncio']['beyond'][2]:.3f} ms", None),
    ]


def _report_audio(result: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    stats, load = result["stats"], result["load"]
    p50, p99, mx = result["cost_us"]
    print(f"\nPART 2  audio: AudioEngine (FluidSynth, sounddevice on {stats['device']}), "
          f"{stats['block_size']}-frame blocks ({stats['block_us'] / 1e3:.3f} ms), jackd "
          f"-p {AUDIO_PERIOD}; {result['seconds']:.0f} s of the same stream")
    print(f"load: {load['workers']} BarGenerator worker(s) realising plans back to back: "
          f"{load['realized']} bars ({load['per_s']:.1f}/s), realize p50 "
          f"{load['realize_ms'][0]:.1f} ms; fallbacks {load['fallbacks']}")
    at = ", ".join(f"{t:.0f}" for t in result["underrun_at"][:12])
    print(f"callbacks {stats['callbacks']}; underruns {result['underruns']} during the run"
          f"{' (seen by ' + at + ' s)' if at else ''}; before the run (first "
          f"{result['startup_callbacks']} callbacks, not counted): {result['open_underruns']} "
          f"while the stream opened, {result['startup_underruns'] - result['open_underruns']} "
          f"around the show's gc.collect() + gc.freeze() ({result['gc_ms']:.0f} ms)")
    print(f"callbacks longer than a block {stats['callback_overruns']}, errors "
          f"{stats['errors']}")
    print(f"callback cost (us)   p50 {p50:.0f}   p99 {p99:.0f}   max {mx:.0f}   "
          f"(over {result['measured']} callbacks"
          f"{', ' + str(result['unmeasured']) + ' missed' if result['unmeasured'] else ''}; "
          f"block {stats['block_us']:.0f} us)")
    print(f"synth events applied {stats['events_applied']}, late {stats['events_late']} "
          f"(max {stats['max_late_frames']} frames), dropped {stats['events_dropped']}; "
          f"voices up to {result['max_voices']}")
    return [("audio: underruns during the run", "0", str(result["underruns"]),
             result["underruns"] == 0),
            ("(audio: callback cost p99 / max)", f"< {stats['block_us']:.0f} us",
             f"{p99:.0f} / {mx:.0f} us", None)]


# ----------------------------------------------------------------------------- main


def _wait_for_line(process: subprocess.Popen, word: str) -> str:
    """The first line of the child's stdout that starts with ``word`` (others are echoed)."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(word):
            return line
        print(f"  receiver: {line.rstrip()}")
    raise SystemExit(f"bench_live_timing: the receiver exited before saying {word!r}")


def _midi_part(args: argparse.Namespace, tmp: Path, model_dir: str | None) -> list:
    seconds = args.blocks * args.block_bars * 240 / BPM * 2
    with jack_server(MIDI_PERIOD, tmp) as jackd:
        rt = _realtime_threads(jackd.pid)
        receiver = subprocess.Popen(
            _child_command("--child", "receiver", "--out", str(tmp / "rx.npz"),
                           "--capacity-s", str(seconds + 300)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
        # a receiver that hangs is killed, which ends the reads below
        watchdog = threading.Timer(30, _stop_child, (receiver,))
        watchdog.start()
        try:
            line = _wait_for_line(receiver, "ready")
            watchdog.cancel()
            print(f"\njackd -p {MIDI_PERIOD}: {rt} SCHED_FIFO thread(s); receiver "
                  f"{line.split()[1]} ready; load average {_load()}", flush=True)
            child = ["--child", "midi", "--out", str(tmp / "midi.json"), "--blocks",
                     str(args.blocks), "--block-bars", str(args.block_bars), "--workers",
                     str(args.workers)] + (["--model-dir", model_dir] if model_dir else [])
            _run_child(child, timeout=seconds + 180)
            assert receiver.stdin is not None and receiver.stdout is not None
            receiver.stdin.close()
            watchdog = threading.Timer(30, _stop_child, (receiver,))
            watchdog.start()
            _wait_for_line(receiver, "saved")
            receiver.wait(timeout=10)
        finally:
            watchdog.cancel()
            _stop_child(receiver)
    result = json.loads((tmp / "midi.json").read_text(encoding="utf-8"))
    got = arrivals(tmp / "rx.npz")
    if got["full"]:
        print("warning: the receiver's cycle buffer filled up; late events are mapped "
              "less exactly")
    matched = match([tuple(x) for x in result["scheduled"]], got)
    return _report_midi(result, got, matched, args)


def _audio_part(args: argparse.Namespace, tmp: Path, model_dir: str | None) -> list:
    with jack_server(AUDIO_PERIOD, tmp) as jackd:
        print(f"\njackd -p {AUDIO_PERIOD}: {_realtime_threads(jackd.pid)} SCHED_FIFO thread(s); "
              f"load average {_load()}", flush=True)
        child = ["--child", "audio", "--out", str(tmp / "audio.json"), "--audio-seconds",
                 str(args.audio_seconds), "--workers", str(args.workers)] + (
            ["--model-dir", model_dir] if model_dir else [])
        _run_child(child, timeout=args.audio_seconds + 180)
    return _report_audio(json.loads((tmp / "audio.json").read_text(encoding="utf-8")))


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 8 s of MIDI per method, 16 s of audio, tiny model")
    parser.add_argument("--midi-seconds", type=float, default=30.0,
                        help="MIDI per method, in 10 s blocks (default 30)")
    parser.add_argument("--audio-seconds", type=float, default=300.0,
                        help="audio part length (default 300; 0 skips it)")
    parser.add_argument("--workers", type=int, default=1,
                        help="BarGenerator worker processes decoding meanwhile (default 1)")
    parser.add_argument("--model-dir", help="a folder with trio_4bar.decoder.onnx")
    parser.add_argument("--skip-midi", action="store_true", help="run the audio part only")
    parser.add_argument("--keep", type=Path,
                        help="copy the raw data (receiver stamps, schedules, jackd logs) here")
    parser.add_argument("--child", choices=("receiver", "midi", "audio", "export"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--capacity-s", type=float, default=600.0, help=argparse.SUPPRESS)
    parser.add_argument("--blocks", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--block-bars", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every finally runs: children, workers and jackd stop
    signal.signal(signal.SIGTERM, _terminate)

    if args.child:
        run = {"receiver": lambda: child_receiver(Path(args.out), args.capacity_s),
               "midi": lambda: child_midi(args), "audio": lambda: child_audio(args),
               "export": lambda: child_export(args)}[args.child]
        run()
        return 0

    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.quick:
        args.midi_seconds, args.audio_seconds = 8.0, min(args.audio_seconds, 16.0)
        args.blocks, args.block_bars = 2, 2
    else:
        bar_s = 240 / BPM
        args.blocks = max(2, round(args.midi_seconds / 10))
        args.block_bars = max(1, round(args.midi_seconds / args.blocks / bar_s))
    os.environ["JACK_DEFAULT_SERVER"] = SERVER  # every process of the benchmark inherits it
    os.environ.setdefault("PYTHONUNBUFFERED", "1")

    started = time.monotonic()
    print(f"Encore live timing benchmark, "
          f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
          f"{' (--quick)' if args.quick else ''}")
    print(_machine())
    print(_versions())
    summary: list[tuple[str, str, str, bool | None]] = []
    with tempfile.TemporaryDirectory(prefix="bench_live_timing_") as name:
        tmp = Path(name)
        model_dir, described = _model(args)
        print(f"model: {described}")
        print(f"process under test: asyncio loop like the show's (bars pushed "
              f"{PUSH_LEAD_NS / 1e6:.0f} ms ahead, wakes every {TICK_S * 1e3:.0f} ms), "
              f"gc.freeze(), GIL switch interval 0.5 ms; JACK_DEFAULT_SERVER={SERVER}")
        if not args.skip_midi:
            summary += _midi_part(args, tmp, model_dir)
        if args.audio_seconds > 0:
            summary += _audio_part(args, tmp, model_dir)
        if args.keep:
            shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
    print(f"\nSUMMARY (load average now {_load()}; {time.monotonic() - started:.0f} s in all)")
    print(f"  {'':<44}{'goal':<14}{'result':<18}")
    for label, goal, value, ok in summary:
        print(f"  {label:<44}{goal:<14}{value:<18}{'-' if ok is None else _mark(ok)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
