"""OSC floods at a running show: does any stream of datagrams hold the show's loop?

    python benchmarks/bench_osc_flood.py                   # 30 s per run, 1 MB/s, 1 round
    python benchmarks/bench_osc_flood.py --seconds 10 --rounds 2
    python benchmarks/bench_osc_flood.py --baseline ../other-checkout   # the code before

Each run starts ``encore live --patch <default patch, OSC on a free port>`` as a child
process on a JACK dummy server (the one ``JACK_DEFAULT_SERVER`` names when it answers,
else ``jackd -d dummy -r 48000 -p 256`` started detached and stopped by PID, as
``bench_soak.py --live`` does: its helpers are reused), recording the set into a temporary
folder. Once the show plays (its ``/encore/status`` says bar 1), a sender process streams
datagrams for ``--seconds``, then the show is asked for its state, stopped with SIGINT (as
Ctrl-C), and its ``stopped: {...}`` health line and its ``song.jsonl`` are read. The
runs, alternated in each round so that they see the same load:

- ``control``: the hostile stream at the same rate, sent to a socket nobody reads (the
  same sending cost on this machine), not to the show;
- ``hostile``: the hostile stream to the show from an allowed sender, at ``--rate`` MB/s:
  long wildcard patterns alone and in bundles (up to the pattern limit and beyond), the
  audit's 34 kB bundle of 130 long patterns, bundles nested 9 deep, bundles of 200 empty
  bundles, random bytes, out-of-range values on patterns; none of it valid;
- ``valid``: a tablet flooding valid commands (the four part levels, the master, the x/y
  pad and the tempo; ``--valid-rate`` datagrams a second), ending with known values.

Printed per run: bars played and replaced by the fallback (late bars), audio underruns
and late audio events, the MIDI sender's late (> 3 ms) and dropped (> 50 ms) notes, the
loop's longest lag and its 99th percentile (``loop_lag_ms_max``, ``loop_lag_ms_p99``: how
late a 10 ms sleep of the show's loop woke), the bars' push lateness, the OSC counts (good,
refused by kind, over budget, coalesced, datagrams read, kernel drops), the control
records in the log, and the state: for ``hostile`` every value the tablet sees must
equal the control run's start (no state changes, no control records); for ``valid`` the
last values sent must be the state, with the records bounded (about one per target per
landing point).

Goals (the issue): hostile: 0 late bars, 0 underruns beyond the control's, loop held
<= 10 ms, 0 state changes; valid: the music as in the control, the log bounded. The
machine running this is shared: the runs are short and alternate; say so with the numbers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_soak  # noqa: E402  (jack_server, _stop, _parse_health, _machine: reused)

from engine.live.osc_control import encode_message  # noqa: E402

START_TIMEOUT_S = 240.0
SETTLE_S = 2.0  # after bar 1 has begun, before the stream
LAND_S = 3.0  # after the stream, before asking for the state (bar commands have landed)
STOP_TIMEOUT_S = 60.0
STATE_ADDRESSES = ("/encore/tempo", "/encore/master/level", "/encore/xy",
                   *(f"/encore/part/{p}/level" for p in ("melody", "bass", "drums", "chords")),
                   *(f"/encore/part/{p}/mute" for p in ("melody", "bass", "drums", "chords")),
                   "/encore/walk/speed", "/encore/walk/temperature", "/encore/walk/wander",
                   "/encore/walk/freeze", "/encore/voice/level", "/encore/voice/mute",
                   "/encore/lyrics/theme")


# ---- datagrams ---------------------------------------------------------------------------
def bundle(*elements: bytes) -> bytes:
    return b"#bundle\x00" + struct.pack(">Q", 1) + b"".join(
        struct.pack(">i", len(e)) + e for e in elements)


def hostile_pool(seed: int = 14) -> list[bytes]:
    """Datagrams none of which is valid, of every costly kind."""
    rng = random.Random(seed)
    letters = "aeioulmnrstdbch"

    def long_pattern() -> str:
        segs = ["encore"] + ["{" + ",".join("*" + rng.choice(letters) + "?" * rng.randrange(3)
                                            for _ in range(rng.randrange(4, 16))) + "}"
                             for _ in range(rng.randrange(1, 4))]
        return ("/" + "/".join(segs))[:250]

    def stars() -> str:
        return "/encore/" + "/".join("*?" * rng.randrange(1, 40) + rng.choice("*zq")
                                     for _ in range(rng.randrange(1, 4)))

    def message(address: str) -> bytes:
        return encode_message(address, "f", [rng.choice([2.0, -1.0, 1e9])])  # out of range

    pool: list[bytes] = []
    for _ in range(400):
        kind = rng.choice(["pattern", "stars", "patterns", "audited", "deep", "wide", "bytes",
                           "pattern bundle", "range"])
        if kind == "pattern":
            pool.append(message(long_pattern()))
        elif kind == "stars":
            pool.append(message(stars()))
        elif kind in ("patterns", "pattern bundle"):
            n = rng.randrange(8, 40) if kind == "patterns" else rng.randrange(2, 16)
            data = bundle(*[message(long_pattern()) for _ in range(n)])
            pool.append(data if len(data) < 65_000 else data[:60_000])
        elif kind == "audited":  # the audit's: ~130 long wildcard patterns, ~34 kB
            pool.append(bundle(*[message(long_pattern()) for _ in range(130)])[:65_000])
        elif kind == "deep":
            inner = message(long_pattern())
            for _ in range(9):
                inner = bundle(inner)
            pool.append(inner)
        elif kind == "wide":
            pool.append(bundle(*[bundle()] * 200))
        elif kind == "bytes":
            pool.append(bytes([rng.choice(b"abc\xff")])
                        + rng.randbytes(rng.randrange(40, 1200)))
        else:
            pool.append(message("/encore/part/*/level"))
    return pool


def valid_stream(rng: random.Random) -> bytes:
    """One valid datagram a tablet could send."""
    kind = rng.randrange(4)
    if kind == 0:
        part = rng.choice(["melody", "bass", "drums", "chords"])
        return encode_message(f"/encore/part/{part}/level", "f", [rng.random()])
    if kind == 1:
        return encode_message("/encore/master/level", "f", [0.5 + 0.5 * rng.random()])
    if kind == 2:
        return encode_message("/encore/xy", "ff", [rng.random(), rng.random()])
    return encode_message("/encore/tempo", "f", [100.0 + 40 * rng.random()])


VALID_LAST = {"/encore/part/melody/level": 0.75, "/encore/part/bass/level": 0.5,
              "/encore/part/drums/level": 0.25, "/encore/part/chords/level": 0.625,
              "/encore/master/level": 0.875, "/encore/tempo": 120.0}


# ---- the sender process ------------------------------------------------------------------
def sender(kind: str, target: tuple[str, int], seconds: float, rate: float, valid_rate: float,
           out: Any) -> None:
    """Streams for ``seconds``; puts (datagrams, bytes, seconds) on ``out``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    if kind == "control":  # the same stream to a socket nobody reads
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        target = sink.getsockname()
    rng = random.Random(7)
    pool = hostile_pool() if kind != "valid" else []
    sent = total = 0
    began = time.monotonic()
    slot = 0.01
    n = 0
    while (now := time.monotonic()) - began < seconds:
        due_bytes = rate * (now - began + slot)
        due_count = valid_rate * (now - began + slot)
        while (total < due_bytes) if kind != "valid" else (sent < due_count):
            data = pool[n % len(pool)] if kind != "valid" else valid_stream(rng)
            n += 1
            try:
                sock.sendto(data, target)
            except OSError:  # e.g. a full send buffer: try the next one
                continue
            sent += 1
            total += len(data)
        time.sleep(slot)
    if kind == "valid":  # known last values, then a pause: the flood is over
        for address, value in VALID_LAST.items():
            sock.sendto(encode_message(address, "f", [value]), target)
            sent += 1
    out.put((sent, total, time.monotonic() - began))


# ---- the tablet's view -------------------------------------------------------------------
def _parse(data: bytes) -> tuple[str, list[Any]] | None:
    from engine.live.osc_control import OscParseError, parse_datagram

    try:
        messages = parse_datagram(data)
    except OscParseError:
        return None
    return (messages[0].address, list(messages[0].args)) if messages else None


def ask_state(tablet: socket.socket, address: tuple[str, int], timeout: float) -> dict[str, Any]:
    """``/encore/status``, and every value that comes back within ``timeout``."""
    tablet.settimeout(0.2)
    with_drain(tablet)
    tablet.sendto(encode_message("/encore/status", "", []), address)
    state: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = tablet.recv(65536)
        except TimeoutError:
            if state:
                break
            tablet.sendto(encode_message("/encore/status", "", []), address)
            continue
        parsed = _parse(data)
        if parsed is not None:
            state[parsed[0]] = parsed[1]
    return state


def with_drain(tablet: socket.socket) -> None:
    tablet.setblocking(False)
    try:
        while True:
            tablet.recv(65536)
    except (BlockingIOError, OSError):
        pass
    tablet.settimeout(0.2)


# ---- one run -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(kind: str, tree: Path, args: argparse.Namespace, tmp: Path,
             number: int) -> dict[str, Any]:
    port = free_port()
    patch = tmp / f"flood_{number}.toml"
    patch.write_text(f"[osc]\nport = {port}\n", encoding="utf-8")  # the rest: the default
    set_dir = tmp / f"set_{number}"
    command = [sys.executable, "-m", "engine.cli", "live", "--patch", str(patch),
               "--record", str(set_dir)]
    trace_path, probe_path = tmp / f"trace_{number}.json", tmp / f"probe_{number}.json"
    if args.trace:  # the same command under the tracer (benchmarks/loop_trace.py)
        command[1:4] = [str(Path(__file__).resolve().parent / "loop_trace.py"), "show",
                        str(trace_path), "--", "live"]
    out_path, err_path = tmp / f"live_{number}.out", tmp / f"live_{number}.err"
    env = os.environ | {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(tree)}
    with out_path.open("wb") as out, err_path.open("wb") as err:
        show = subprocess.Popen(command, cwd=tree, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True, env=env)
    address = ("127.0.0.1", port)
    tablet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tablet.bind(("127.0.0.1", 0))
    result: dict[str, Any] = {"kind": kind, "tree": str(tree)}
    try:
        before = _wait_for_show(show, tablet, address)
        time.sleep(SETTLE_S)
        before = ask_state(tablet, address, 3.0) or before
        queue: Any = multiprocessing.Queue()
        stream = multiprocessing.Process(target=sender, args=(
            kind, address, args.seconds, args.rate * 1e6, args.valid_rate, queue))
        probe = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent
                                  / "loop_trace.py"), "probe", str(probe_path),
                                  str(args.seconds)], env=env, start_new_session=True
                                 ) if args.trace else None
        stream.start()
        sent, total, took = queue.get(timeout=args.seconds + 60)
        stream.join(timeout=10)
        if probe is not None:
            probe.wait(timeout=60)
        time.sleep(LAND_S)
        after = ask_state(tablet, address, 5.0)
        result |= {"sent": sent, "mb_per_s": total / 1e6 / took, "before": before,
                   "after": after, "alive": show.poll() is None}
    finally:
        tablet.close()
        bench_soak._stop(show, signal.SIGINT, STOP_TIMEOUT_S)
    stdout = out_path.read_text(errors="replace")
    result["health"] = bench_soak._parse_health(stdout) or {}
    result["stderr_tail"] = err_path.read_text(errors="replace")[-1500:]
    log = set_dir / "song.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() \
        else []
    result["controls"] = [r for r in records if r.get("type") == "control"]
    if args.trace and trace_path.exists() and probe_path.exists():
        result["trace"] = json.loads(trace_path.read_text())
        result["probe"] = json.loads(probe_path.read_text())
        stacks = trace_path.with_suffix(".stacks")
        if stacks.exists() and stacks.stat().st_size:  # kept: the temporary folder goes
            kept = Path(tempfile.gettempdir()) / f"bench_osc_flood_stacks_{os.getpid()}_{number}"
            kept.write_text(stacks.read_text(errors="replace"))
            result["stacks"] = str(kept)
    return result


def held_by(result: dict[str, Any], over_ms: float = 10.0) -> str:
    """The show's loop lags over ``over_ms`` while the probe ran, each put beside the probe's
    lags and the show's collections that overlap it: what held the loop."""
    trace, probe = result.get("trace"), result.get("probe")
    if not trace or not probe:
        return "no trace"
    probe_lags = probe["lags"]
    if not probe_lags:
        return "the probe saw no lag"
    first = min(t - lag / 1000 for t, lag in probe_lags)
    last = max(t for t, _ in probe_lags)

    def overlaps(t: float, lag: float, others: list, took_at: int) -> float:
        """The longest of ``others`` overlapping the interval [t - lag, t]."""
        a, b = t - lag / 1000, t
        return max((o[took_at] for o in others
                    if o[0] - o[took_at] / 1000 < b and o[0] > a), default=0.0)

    show_lags = [(t, lag) for t, lag in trace["lags"] if lag > over_ms and first <= t <= last]
    both = [(t, lag) for t, lag in show_lags if overlaps(t, lag, probe_lags, 1) > over_ms / 2]
    by_gc = [(t, lag) for t, lag in show_lags if overlaps(t, lag, trace["gc"], 2) > 1.0]
    alone = [(t, lag) for t, lag in show_lags
             if (t, lag) not in both and (t, lag) not in by_gc]
    probe_max = max(lag for _, lag in probe_lags)
    probe_over = sum(lag > over_ms for _, lag in probe_lags)
    gc_max = max((took for _, _, took in trace["gc"]), default=0.0)
    worst = max((lag for _, lag in alone), default=0.0)
    return (f"show lags > {over_ms:g} ms: {len(show_lags)} (max "
            f"{max((lag for _, lag in show_lags), default=0):.1f}); the trivial probe's: "
            f"{probe_over} (max {probe_max:.1f}); show lags during a probe lag: {len(both)}, "
            f"during a collection: {len(by_gc)} (longest collection {gc_max:.1f} ms, "
            f"{len(trace['gc'])} >= 2 ms), with neither: {len(alone)} (max {worst:.1f})")


def _wait_for_show(show: subprocess.Popen, tablet: socket.socket,
                   address: tuple[str, int]) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if show.poll() is not None:
            raise SystemExit("bench_osc_flood: the show exited before it answered")
        state = ask_state(tablet, address, 0.5)
        bar = state.get("/encore/status/bar", ["-1"])[0]
        if state and bar.lstrip("-").isdigit() and int(bar) >= 1:  # bars are playing
            return state
        time.sleep(0.5)
    raise SystemExit("bench_osc_flood: the show did not play its first bars in time")


# ---- report ------------------------------------------------------------------------------
def summary(result: dict[str, Any]) -> dict[str, Any]:
    health = result.get("health", {})
    audio, osc = health.get("audio", {}), health.get("osc", {})
    midi = health.get("midi", {})
    refused = {k: osc.get(k, 0) for k in ("bad_parse", "unknown_address", "out_of_range",
                                          "too_large", "too_many_elements", "too_complex")}
    watched = [a for a in STATE_ADDRESSES if a in result.get("before", {})]
    changed = [a for a in watched if result["before"].get(a) != result.get("after", {}).get(a)]
    return {
        "run": result["kind"] + ("" if result["tree"] == str(REPO) else " (baseline)"),
        "MB/s": f"{result.get('mb_per_s', 0):.2f}",
        "datagrams": result.get("sent", 0),
        "bars": health.get("bars_played", "?"),
        "late bars": health.get("bars_fallback", "?"),
        "underruns": audio.get("underruns", "?"),
        "late audio": audio.get("events_late", "?"),
        "midi late": midi.get("late", "?"),
        "midi dropped": midi.get("dropped", "?"),
        "loop lag ms": health.get("loop_lag_ms_max", "n/a"),
        "loop p99 ms": health.get("loop_lag_ms_p99", "n/a"),
        "push late ms": health.get("push_late_ms_max", "?"),
        "voice missed": health.get("voice", {}).get("missed", "?"),
        "osc good": osc.get("good", "?"),
        "refused": sum(refused.values()),
        "over budget": osc.get("over_budget", "n/a"),
        "kernel drops": osc.get("kernel_dropped", "n/a"),
        "rx cpu ms": osc.get("receiver_cpu_ms", "n/a"),
        "coalesced": osc.get("coalesced", "n/a"),
        "control records": len(result.get("controls", [])),
        "state changed": ",".join(a.rsplit("/", 2)[-2] + "/" + a.rsplit("/", 1)[-1]
                                  for a in changed) or "none",
    }


def valid_landed(result: dict[str, Any]) -> str:
    after = result.get("after", {})
    wrong = [a for a, v in VALID_LAST.items()
             if not after.get(a) or abs(after[a][0] - v) > 1e-6]
    return "all last values landed" if not wrong else f"NOT landed: {wrong}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=1.0, help="hostile MB/s (default 1)")
    parser.add_argument("--valid-rate", type=float, default=500.0,
                        help="valid datagrams a second in the valid run (default 500)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--runs", default="control,hostile,valid",
                        help="which runs, in order, each round (default control,hostile,valid)")
    parser.add_argument("--trace", action="store_true",
                        help="run the show under benchmarks/loop_trace.py and a trivial loop "
                             "beside it: what held the loop (the machine, a collection, ...)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout: its hostile run is added to each round")
    args = parser.parse_args(argv)
    print(bench_soak._machine())
    print(f"shared machine; {args.seconds:g} s per run, hostile {args.rate:g} MB/s, valid "
          f"{args.valid_rate:g} datagrams/s, {args.rounds} round(s)")
    plan = [(kind, REPO) for kind in args.runs.split(",")]
    if args.baseline is not None:
        plan.append(("hostile", args.baseline.resolve()))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_osc_flood_") as name:
        tmp = Path(name)
        with bench_soak.jack_server(tmp) as how:
            print(f"JACK: {how} a server ({os.environ.get('JACK_DEFAULT_SERVER', 'default')})")
            number = 0
            for round_ in range(args.rounds):
                order = plan if round_ % 2 == 0 else plan[::-1]
                for kind, tree in order:
                    number += 1
                    result = run_once(kind, tree, args, tmp, number)
                    results.append(result)
                    row = summary(result)
                    print(json.dumps(row), flush=True)
                    if kind == "valid":
                        targets: dict[str, int] = {}
                        for record in result["controls"]:
                            targets[record["target"]] = targets.get(record["target"], 0) + 1
                        print(f"  valid: {valid_landed(result)}; control records per target "
                              f"{targets}", flush=True)
                    if args.trace:
                        print(f"  held by: {held_by(result)}; stacks at lags > "
                              f"{40:g} ms: {result.get('stacks', 'none')}", flush=True)
                    if not result.get("health"):
                        print("  no stopped line; stderr: " + result["stderr_tail"])
    print("\n" + bench_soak._table(list(summary(results[0])),
                                   [[str(v) for v in summary(r).values()] for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
