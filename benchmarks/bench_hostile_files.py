"""Hostile files against two trees of Encore, side by side: time, peak memory and outcome.

    python benchmarks/bench_hostile_files.py                 # this tree only
    python benchmarks/bench_hostile_files.py --baseline DIR  # and an older checkout, alternating

Each case runs in a child process (the tree on its PYTHONPATH) under a 2 GiB address-space
limit and a 120 s timeout, so a blow-up of the old code ends as "MemoryError" or "timeout"
instead of taking the machine. Reported per case and tree: the median wall time of the
read, the child's peak RSS, and how it ended (refused with ValueError/OSError, another
exception, a signal, a timeout).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

LIMIT = 2 * 2**30


def make_cases(root: Path) -> dict[str, tuple[str, str]]:
    """name -> (imports, the read) on files written under ``root``."""
    n = 60_000
    body = b"".join(b"\x01\x90\x3c\x40" for _ in range(n)) + \
        b"".join(b"\x01\x80\x3c\x40" for _ in range(n)) + b"\x00\xff\x2f\x00"
    midi = root / "overlap.mid"
    midi.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk"
                     + struct.pack(">I", len(body)) + body)
    bomb = root / "bomb.json.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        f.write(b'{"format": "encore-markov-lyricist", "version": 1, "pad": "')
        for _ in range(1024):
            f.write(b" " * 2**20)
        f.write(b'"}')
    bank = root / "bank"
    bank.mkdir()
    lines = ['l0: &l0 ["laugh"]'] + [
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 8)]
    (bank / "dsconfig.yaml").write_text("\n".join(lines) + "\nhop_size: *l7\n")
    log = root / "song.jsonl"
    header = {"type": "header", "version": 1, "patch": {}, "bpm": 120.0}
    bars = [{"type": "bar", "bar": i, "section": "verse", "notes": {"melody": [[60, 90, 0, 4]]}}
            for i in range(8)]
    bars[-1]["bar"] = 1000
    log.write_text("\n".join(json.dumps(r) for r in [header, *bars]) + "\n")
    return {
        "midi: 60k overlapping same-pitch notes": (
            "from engine.music.midi_io import read_midi", f"read_midi({str(midi)!r})"),
        "markov: 1 GiB gzip bomb (1 MB file)": (
            "from engine.lyrics.markov import MarkovLyricist",
            f"MarkovLyricist.load({str(bomb)!r})"),
        "voicebank: YAML alias bomb (9**7 leaves)": (
            "from engine.voice.voicebank import load_voicebank",
            f"load_voicebank({str(bank)!r})"),
        "replay: bar 1000 in an 8-bar log": (
            "from engine.song.replay import replay_set",
            f"replay_set({str(log)!r}, {str(root / 'out')!r} + str(__import__('time')"
            f".time_ns()), audio=True, vocals=False)"),
    }


CHILD = """
import resource, sys, time
{imports}
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
started = time.perf_counter()
try:
    {call}
    outcome = "accepted"
except (ValueError, OSError) as err:
    outcome = "refused: " + type(err).__name__
except BaseException as err:
    outcome = "FAILED: " + type(err).__name__
print("RESULT", time.perf_counter() - started,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, outcome)
"""


def run(tree: Path, imports: str, call: str) -> tuple[float, float, str]:
    code = CHILD.format(imports=imports, call=call, limit=LIMIT)
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                              capture_output=True, text=True, timeout=120,
                              env=os.environ | {"PYTHONPATH": str(tree)})
    except subprocess.TimeoutExpired:
        return 120.0, float("nan"), "TIMEOUT"
    if done.returncode < 0:
        return float("nan"), float("nan"), f"SIGNAL {-done.returncode}"
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")), None)
    if line is None:
        return float("nan"), float("nan"), "no result: " + done.stderr.strip()[-200:]
    _, seconds, peak_mb, outcome = line.split(" ", 3)
    return float(seconds), float(peak_mb), outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="an older checkout to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    trees = {"this": here} | ({"baseline": args.baseline} if args.baseline else {})
    with tempfile.TemporaryDirectory() as tmp:
        cases = make_cases(Path(tmp))
        for name, (imports, call) in cases.items():
            times: dict[str, list[float]] = {t: [] for t in trees}
            last: dict[str, tuple[float, str]] = {}
            for _ in range(args.repeats):  # alternating trees
                for label, tree in trees.items():
                    seconds, peak, outcome = run(tree, imports, call)
                    times[label].append(seconds)
                    last[label] = (peak, outcome)
            for label in trees:
                spread = times[label]
                print(f"{name:44s} {label:8s} median {statistics.median(spread):8.3f} s "
                      f"(min {min(spread):.3f}, max {max(spread):.3f}); peak RSS "
                      f"{last[label][0]:7.0f} MB; {last[label][1]}")


if __name__ == "__main__":
    main()
