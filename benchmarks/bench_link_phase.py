"""Phase error of `encore live` against an independent Ableton Link peer, over a set with
two tempo changes.

Same setup as tests/live/test_link_phase.py: a network namespace with only loopback (Link
stays on the machine), a dummy JACK server of its own (synchronous, 64-frame periods), the
peer (tests/live/link_peer.py, LinkPython-extern) measuring Encore's MIDI clock on Link's
timeline through midi_stamp (C). The peer starts at 100 BPM and is running before Encore
joins; a third of the way in it moves to 120 BPM, two thirds of the way in to 90 BPM, each
in the middle of a bar.

Prints, for the downbeats from bar 1 on: the phase error p50 / p99 / max (absolute, ms)
over all of them; the first two bar lines after each tempo change, one by one (Encore
retimes the bar under way onto the session's line, so the first is locked already); over
all but those (the "relock bars", for a figure comparable with a tree that locked only
from the second bar line after a change); that, less the downbeat ticks
Encore's MIDI sender sent late in a burst (the machine held it up); each bar's placement
(the median error of its first beat's 24 ticks, unless the tempo changed in that beat);
every beat's tick; lost ticks, ticks
sent late, realigns. Then the same downbeats measured from the session's nearest tick
(1/24 beat) instead of from the bar line their number puts them on: immune to a tick
lost on the way or misnumbered by the peer (each shifts every later downbeat by whole
ticks: 42 ms at 120 BPM), blind to an error of a whole tick or more.

    sudo .venv/bin/python benchmarks/bench_link_phase.py --seconds 300
    sudo .venv/bin/python benchmarks/bench_link_phase.py --seconds 60 --baseline-root ../old

``--baseline-root`` runs another checkout of Encore the same way first (one whose patch
has no link_wait_s key), for a before/after figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / "tests" / "live" / "link_peer.py"
STAMP_C = ROOT / "tests" / "live" / "midi_stamp.c"
PATCH = """
[song]
tempo = 90.0

[humanize]
timing_ms = 0.0

[midi]
backend = "jack"
clock_out = "encore-linkpeer:input"

[live]
internal_synth = false
link = true
{extra}

[lyrics]
source = "off"

[voice]
singer = "off"

[osc]
port = 57120
"""


def sh(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=30)


def quantiles(values: list[float]) -> str:
    if not values:
        return "n=0"
    values = sorted(abs(v) for v in values)
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return (f"n={len(values)} p50 {statistics.median(values):.3f} ms, p99 {p99:.3f} ms, "
            f"max {values[-1]:.3f} ms")


def play(root: Path, seconds: float, netns: str, stamp: Path, env: dict, tmp: Path,
         baseline: bool) -> dict:
    bar_100 = 2.4
    first = round(seconds / 3 / bar_100) * bar_100 + 0.45 * bar_100  # mid-bar
    second = first + round(seconds / 3 / 2.0) * 2.0 + 0.6 * 2.0
    out = tmp / "peer.json"
    peer = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, str(PEER), "--stamp", str(stamp),
         "--out", str(out), "--bpm", "100", "--seconds", str(seconds), "--tempo",
         f"{first:.2f}:120", "--tempo", f"{second:.2f}:90", "--ready", str(tmp / "ready")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while not (tmp / "ready").exists():
        if peer.poll() is not None:
            raise SystemExit(f"the peer ended: {peer.communicate()[0]}")
        time.sleep(0.05)
    time.sleep(5.0)  # a session that was running before Encore joined
    patch = tmp / "link.toml"
    patch.write_text(PATCH.format(extra="" if baseline else "link_wait_s = 2.0"))
    encore = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "engine.cli", "live", "--patch",
         str(patch), "--no-audio", "--record", str(tmp / "set")],
        cwd=root, env=dict(env, PYTHONPATH=str(root)), stdout=(tmp / "encore.out").open("w"),
        stderr=subprocess.STDOUT, start_new_session=True)
    peer_out = peer.communicate(timeout=seconds + 180)[0]
    os.killpg(encore.pid, 2)
    encore.wait(timeout=30)
    if peer.returncode:
        raise SystemExit(f"the peer failed: {peer_out}")
    measured = json.loads(out.read_text())
    log = [json.loads(line) for line in (tmp / "set" / "song.jsonl").open()]
    return {"peer": measured, "log": log}


def summarize(name: str, result: dict) -> None:
    peer = result["peer"]
    q = peer["quantum"]
    changes = [at for at, _beat, _tempo in peer["timelines"][1:]]
    by_index = {t["index"]: t for t in peer["ticks"]}

    def error_ms(tick: dict) -> float:  # from where its index puts it in the bar
        return (((tick["phase"] - tick["index"] / 24 + q / 2) % q) - q / 2) \
            * 60000 / tick["bpm"]

    def sent_late(tick: dict) -> bool:  # in a burst with the next tick: the sender was held
        following = by_index.get(tick["index"] + 1)
        return bool(following) and following["us"] - tick["us"] < 0.5 * 60e6 / (
            tick["bpm"] * 24)

    def tick_error_ms(tick: dict) -> float:  # from the session's nearest tick
        ticks = tick["phase"] * 24
        return (ticks - round(ticks)) / 24 * 60000 / tick["bpm"]

    downbeats, settled, on_time, placement, beats = [], [], [], [], []
    by_tick: list[float] = []
    relock: dict[int, list[float]] = {}  # change -> its first two bar lines' errors
    relock_by_tick: dict[int, list[float]] = {}
    late = 0
    for tick in peer["ticks"]:
        if tick["index"] % 24:
            continue
        late += sent_late(tick)
        if tick["index"] < 96:
            continue
        beats.append(error_ms(tick))
        if tick["index"] % 96:
            continue
        downbeats.append(error_ms(tick))
        by_tick.append(tick_error_ms(tick))
        # relock bars: the first two bar lines after a tempo change
        after = [c for c in changes if c < tick["us"]]
        lines_since = sum(1 for d in peer["ticks"] if d["index"] % 96 == 0
                          and after and after[-1] < d["us"] <= tick["us"])
        if after and lines_since <= 2:
            relock.setdefault(len(after), []).append(error_ms(tick))
            relock_by_tick.setdefault(len(after), []).append(tick_error_ms(tick))
            continue
        settled.append(error_ms(tick))
        if not sent_late(tick):
            on_time.append(error_ms(tick))
        first_beat = [by_index[i] for i in range(tick["index"], tick["index"] + 24)
                      if i in by_index]
        if not any(tick["us"] < c <= first_beat[-1]["us"] for c in changes):
            placement.append(statistics.median(error_ms(t) for t in first_beat))
    realigns = sum(1 for e in result["log"] if e.get("type") == "link"
                   and e.get("what") == "realign")
    span = (peer["ticks"][-1]["us"] - peer["ticks"][0]["us"]) / 1e6 if peer["ticks"] else 0
    print(f"{name}: {span:.0f} s measured, {len(changes)} tempo changes, "
          f"lost ticks {peer['lost_ticks']}, beats sent late in a burst {late}, "
          f"realigns {realigns}")
    print(f"  downbeats, all:                    {quantiles(downbeats)}")
    for n, errors in sorted(relock.items()):
        lines = ", ".join(f"{e:+.3f} ms" for e in errors)
        print(f"  the bar lines after change {n}:      {lines}")
    print(f"  downbeats, relock bars out:        {quantiles(settled)}")
    print(f"  ... and ticks sent late out:       {quantiles(on_time)}")
    print(f"  bar placement (first beat median): {quantiles(placement)}")
    print(f"  every beat:                        {quantiles(beats)}")
    print(f"  downbeats from the nearest tick:   {quantiles(by_tick)}")
    for n, errors in sorted(relock_by_tick.items()):
        lines = ", ".join(f"{e:+.3f} ms" for e in errors)
        print(f"  ... the bar lines after change {n}:  {lines}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--baseline-root", type=Path, default=None)
    parser.add_argument("--baseline-seconds", type=float, default=60.0)
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy each run's peer measurement and event log here")
    parser.add_argument("--analyze", type=Path, default=None, metavar="DIR",
                        help="only summarize the runs kept in DIR by --keep")
    args = parser.parse_args()
    if args.analyze is not None:
        for peer_file in sorted(args.analyze.glob("*_peer.json")):
            run = peer_file.name[:-len("_peer.json")]
            log = [json.loads(line) for line in (args.analyze / f"{run}_song.jsonl").open()]
            summarize(run, {"peer": json.loads(peer_file.read_text()), "log": log})
        return
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise SystemExit("needs root and iproute2 (a network namespace keeps Link on loopback)")
    netns = f"encore-linkbench-{os.getpid()}"
    server = f"encore-linkbench-{os.getpid()}"
    env = dict(os.environ, JACK_DEFAULT_SERVER=server)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        stamp = tmp / "midi_stamp"
        sh("cc", "-O2", "-o", str(stamp), str(STAMP_C), "-l:libjack.so.0")
        sh("ip", "netns", "add", netns)
        jackd = None
        try:
            sh("ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up", "multicast", "on")
            sh("ip", "netns", "exec", netns, "ip", "route", "add", "224.0.0.0/4", "dev", "lo")
            jackd = subprocess.Popen(["jackd", "-S", "-d", "dummy", "-r", "48000", "-p", "64"],
                                     env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(2.0)
            runs = []
            if args.baseline_root is not None:
                runs.append(("baseline", args.baseline_root.resolve(), args.baseline_seconds,
                             True))
            runs.append(("this tree", ROOT, args.seconds, False))
            for name, root, seconds, baseline in runs:
                run_dir = tmp / name.replace(" ", "_")
                run_dir.mkdir()
                summarize(f"{name} ({seconds:.0f} s set)",
                          play(root, seconds, netns, stamp, env, run_dir, baseline))
                if args.keep is not None:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    for file in (run_dir / "peer.json", run_dir / "set" / "song.jsonl"):
                        shutil.copy(file, args.keep / f"{run_dir.name}_{file.name}")
        finally:
            if jackd is not None:
                jackd.terminate()
                jackd.wait(timeout=10)
            sh("ip", "netns", "delete", netns, check=False)


if __name__ == "__main__":
    main()
