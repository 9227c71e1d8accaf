"""The live audio output under load: the native core vs the Python callback, side by side.

    python benchmarks/bench_audio_core.py                  # 30 s a run, -p 256 and -p 128
    python benchmarks/bench_audio_core.py --seconds 10 --periods 256 --repeats 1  # quick
    python benchmarks/bench_audio_core.py --seconds 2 --periods 256 --loads processes  # a check

A JACK dummy server of its own (``jackd -n encore-bench-core -d dummy -r 48000 -p P``,
started detached, stopped by PID; every process of the benchmark gets
``JACK_DEFAULT_SERVER`` set to its name). For each period P and each load, the two paths
play in turn (core, python, then python, core on the next repeat: both see the same
drift of the machine's load), each in a fresh player process:

- the player: an :class:`~engine.live.audio_out.AudioEngine` (block size = the period,
  as JACK gives the lowest latency that way) with the show's settings (GIL switch interval
  0.5 ms, ``gc.freeze()``); its main thread plays a show-like stream (16th-note hats, a
  bass and a three-note chord each beat, a lead, 120 BPM, each bar scheduled 250 ms ahead)
  and writes 1 s of "voice" into the vocal ring every second, 1.5 s ahead;
- loads: (a) quiet; (b) one busy Python thread in the player process (a pure-Python loop:
  what a plugin, a slow handler or a logger does); (c) two busy processes beside it
  (``python3 -c 'while 1: pass'``).
- the floor for (c): ``jack_simple_client`` (jackd2's example C client) under the same two
  busy processes; a monitor process (JACK-Client, an xrun callback only, no MIDI ports)
  counts the server's xruns in every run, so the floor is that count with only the C client
  playing.

Reported per run: underruns the engine counted (PortAudio's output-underflow flag: JACK
xruns while the stream ran), the server's xruns, blocks made, callbacks longer than a
block, callback time p50 (the CPU per block) / p99 / max over every callback of the run,
late events. The machine is shared with other sessions: the runs are short and the
numbers move with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = "encore-bench-core"
RATE = 48000
LOADS = ("quiet", "busy thread", "busy processes")


# --------------------------------------------------------------------------- player


def player(path: str, seconds: float, period: int, busy_thread: bool, out: str) -> None:
    import gc
    import threading

    import numpy as np

    from engine.live.audio_out import AudioEngine

    sys.setswitchinterval(0.0005)   # as the show does
    engine = AudioEngine(None, sample_rate=RATE, block_size=period, path=path,
                         jack_name=f"encore-player-{path}",
                         channels_programs={0: 80, 1: 33, 2: 0, 9: 0})
    engine.start()
    deadline = time.monotonic() + 5
    while engine.stats().callbacks < 8:
        assert time.monotonic() < deadline, "the engine made no block"
        time.sleep(0.01)
    gc.collect()
    gc.freeze()
    time.sleep(0.5)
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    busy = threading.Thread(target=spin, daemon=True)
    if busy_thread:
        busy.start()
    ring = engine._durations   # the callback's own cost ring (read-only here)
    durations = []
    seen = engine.stats().callbacks
    before = engine.stats()
    bar = RATE * 2          # 120 BPM: a bar is 2 s
    next_bar = engine.frames_played + RATE // 2
    next_voice = engine.frames_played + 3 * RATE // 2
    voice = (0.2 * np.sin(2 * np.pi * 220 * np.arange(RATE) / RATE)).astype(np.float32)
    rng = np.random.default_rng(0)
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        played = engine.frames_played
        if next_bar - played < RATE // 4:   # the next bar, 250 ms ahead
            step = bar // 16
            for i in range(16):
                f = next_bar + i * step
                engine.schedule(f, "note_on", 9, 42, 80)
                engine.schedule(f + step // 2, "note_off", 9, 42)
                if i % 4 == 0:
                    engine.schedule(f, "note_on", 9, 36 if i % 8 == 0 else 38, 110)
                    engine.schedule(f + step, "note_off", 9, 36 if i % 8 == 0 else 38)
                    for p in (60, 64, 67):
                        engine.schedule(f, "note_on", 2, p, 70)
                        engine.schedule(f + 3 * step, "note_off", 2, p)
                if i % 2 == 0:
                    engine.schedule(f, "note_on", 1, 36 + i % 5, 100)
                    engine.schedule(f + step, "note_off", 1, 36 + i % 5)
                pitch = int(rng.integers(60, 84))
                engine.schedule(f + int(rng.integers(0, 200)), "note_on", 0, pitch, 90)
                engine.schedule(f + step, "note_off", 0, pitch)
            next_bar += bar
        if next_voice - played < 3 * RATE // 2:
            engine.vocals.write_at(next_voice, voice)
            next_voice += RATE
        calls = engine.stats().callbacks
        if calls > seen:
            idx = np.arange(max(seen, calls - ring.size + 64), calls) % ring.size
            durations.append(ring[idx].copy())
            seen = calls
        time.sleep(0.05)
    after = engine.stats()
    stop.set()
    engine.close()
    d = np.concatenate(durations) / 1000.0 if durations else np.zeros(1)
    Path(out).write_text(json.dumps({
        "path": after.path, "blocks": after.callbacks - before.callbacks,
        "underruns": after.underruns - before.underruns,
        "overruns": after.callback_overruns - before.callback_overruns,
        "p50_us": float(np.percentile(d, 50)), "p99_us": float(np.percentile(d, 99)),
        "max_us": float(d.max()), "late": after.events_late - before.events_late,
        "applied": after.events_applied - before.events_applied,
        "vocal_late_frames": after.vocal_late_frames}))


# --------------------------------------------------------------------------- monitor


def monitor(seconds: float, out: str) -> None:
    """Count the server's xruns (an xrun callback only; no MIDI in this process)."""
    import jack

    client = jack.Client("encore-bench-xruns", no_start_server=True)
    count = {"n": 0}

    def xrun(_delay: float) -> None:
        count["n"] += 1

    client.set_xrun_callback(xrun)
    client.activate()
    Path(out + ".ready").write_text("1")
    time.sleep(seconds)
    client.deactivate()
    client.close()
    Path(out).write_text(json.dumps({"xruns": count["n"]}))


# --------------------------------------------------------------------------- driver


class Jack:
    def __init__(self, period: int, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                ["jackd", "-n", SERVER, "-d", "dummy", "-r", str(RATE), "-p", str(period)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + 10
        probe = "import jack; jack.Client('encore-probe', no_start_server=True).close()"
        while subprocess.run([sys.executable, "-c", probe], capture_output=True,
                             env=env()).returncode != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit("jackd did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def env() -> dict[str, str]:
    return dict(os.environ, JACK_DEFAULT_SERVER=SERVER, PYTHONPATH=str(ROOT))


def busy_processes() -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(2)]


def run_one(kind: str, load: str, period: int, seconds: float, tmp: Path) -> dict:
    mon_out = tmp / f"mon-{time.monotonic_ns()}.json"
    monitor_p = subprocess.Popen([sys.executable, __file__, "--monitor", str(seconds + 4),
                                  str(mon_out)], env=env(), cwd=ROOT)
    deadline = time.monotonic() + 20
    while not Path(str(mon_out) + ".ready").exists():
        assert time.monotonic() < deadline and monitor_p.poll() is None, (
            f"the xrun monitor did not start; jackd log:\n{(tmp / 'jackd.log').read_text()}")
        time.sleep(0.05)
    loads = busy_processes() if load == "busy processes" else []
    try:
        if kind == "jack_simple_client":
            client = subprocess.Popen(["jack_simple_client"], env=env(),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
            time.sleep(seconds + 1)
            os.kill(client.pid, signal.SIGTERM)
            client.wait(10)
            result = {"path": "jack_simple_client"}
        else:
            out = tmp / f"player-{time.monotonic_ns()}.json"
            subprocess.run([sys.executable, __file__, "--player", kind, str(seconds),
                            str(period), "1" if load == "busy thread" else "0", str(out)],
                           env=env(), cwd=ROOT, check=True, timeout=seconds + 120)
            result = json.loads(out.read_text())
    finally:
        for p in loads:
            p.kill()
            p.wait()
    monitor_p.wait(timeout=seconds + 60)
    result.update(json.loads(mon_out.read_text()), load=load, period=period)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--periods", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--loads", nargs="+", choices=[load.split()[-1] for load in LOADS],
                        default=[load.split()[-1] for load in LOADS],
                        help="which loads to run (default: all three): quiet, thread (a "
                             "busy thread), processes (two busy processes and the C floor)")
    parser.add_argument("--json", help="write every run's figures here")
    args = parser.parse_args()
    loads = [load for load in LOADS if load.split()[-1] in args.loads]
    if shutil.which("jackd") is None:
        raise SystemExit("jackd is not installed (apt-get install jackd2)")
    floor_client = shutil.which("jack_simple_client")
    from engine.live import audio_core

    print(f"audio path available: {audio_core.status().detail}")
    print(f"{args.seconds:.0f} s a run on a shared machine (load average "
          f"{os.getloadavg()[0]:.1f}); ABBA order per load", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for period in args.periods:
            jackd = Jack(period, tmp / "jackd.log")
            try:
                for load in loads:
                    for r in range(args.repeats):
                        order = ("core", "python") if r % 2 == 0 else ("python", "core")
                        for kind in order:
                            res = run_one(kind, load, period, args.seconds, tmp)
                            results.append(res)
                            print(row(res), flush=True)
                    if load == "busy processes":
                        if floor_client is None:
                            print("  (jack_simple_client is not installed: no C floor)")
                        else:
                            res = run_one("jack_simple_client", load, period, args.seconds,
                                          tmp)
                            results.append(res)
                            print(row(res), flush=True)
            finally:
                jackd.stop()
    print("\nsummary (median over repeats): underruns | server xruns | callback p99/max us")
    for period in args.periods:
        for load in loads:
            parts = []
            for kind in ("core", "python", "jack_simple_client"):
                rs = [r for r in results if r["period"] == period and r["load"] == load
                      and r["path"] == kind]
                if not rs:
                    continue
                med = {k: statistics.median(r[k] for r in rs) for k in ("xruns",)}
                if kind == "jack_simple_client":
                    parts.append(f"C client xruns {med['xruns']:.0f}")
                    continue
                und = statistics.median(r["underruns"] for r in rs)
                p99 = statistics.median(r["p99_us"] for r in rs)
                mx = max(r["max_us"] for r in rs)
                parts.append(f"{kind} {und:.0f} | {med['xruns']:.0f} | {p99:.0f}/{mx:.0f}")
            print(f"  -p {period} {load:15s} " + ";  ".join(parts))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def row(r: dict) -> str:
    if r["path"] == "jack_simple_client":
        return f"  -p {r['period']} {r['load']:15s} jack_simple_client: server xruns {r['xruns']}"
    return (f"  -p {r['period']} {r['load']:15s} {r['path']:6s}: underruns {r['underruns']:3d}"
            f", server xruns {r['xruns']:3d}, blocks {r['blocks']}, overruns {r['overruns']}, "
            f"callback p50 {r['p50_us']:.0f} us p99 {r['p99_us']:.0f} us max "
            f"{r['max_us']:.0f} us, late events {r['late']} of {r['applied']}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--player":
        _, _, kind, secs, per, busy, out_path = sys.argv
        player(kind, float(secs), int(per), busy == "1", out_path)
    elif len(sys.argv) > 1 and sys.argv[1] == "--monitor":
        monitor(float(sys.argv[2]), sys.argv[3])
    else:
        main()
