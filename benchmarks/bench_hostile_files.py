"""Hostile files against two trees of Encore, side by side: time, peak memory and outcome.

    python benchmarks/bench_hostile_files.py                 # this tree only
    python benchmarks/bench_hostile_files.py --baseline DIR  # and an older checkout, alternating
    python benchmarks/bench_hostile_files.py --cli [--baseline DIR] [--repeats N]

``--cli``: each hostile class through the command a user runs (``encore render``, ``live
--dry-run``, ``replay``, ``stats``, ``convert``, ``export``, ``doctor``), as a process of
its own: the wall time from its start to its exit with ``encore: error:`` (median and max
of the repeats), beside a control: the same command on good files (its whole run, a
1-bar render without audio, say), alternating trees and cases so that they see the same
load. The rule: every refusal within 5 s.

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
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
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


# ---- through the commands --------------------------------------------------------------
SHIPPED = Path(__file__).resolve().parents[1] / "models_onnx"


def make_cli_cases(root: Path) -> list[tuple[str, list[str], bool]]:
    """(name, encore argv, refused?) for each hostile class and its controls."""
    def patch(name: str, text: str) -> str:
        path = root / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        return str(path)

    quiet = '[voice]\nsinger = "off"\n'
    gpt2 = root / "gpt2_bad"  # the shipped lyricist with n_layer 100000
    gpt2.mkdir()
    for name in ("model.onnx", "tokenizer.json", "hf_config.json"):
        (gpt2 / name).symlink_to(SHIPPED / "lyrics_gpt2" / name)
    config = json.loads((SHIPPED / "lyrics_gpt2" / "encore_gpt2.json").read_text())
    (gpt2 / "encore_gpt2.json").write_text(json.dumps(config | {"n_layer": 100_000}))
    tok = root / "gpt2_tok"  # a tokenizer.json cut in half
    tok.mkdir()
    for name in ("model.onnx", "encore_gpt2.json", "hf_config.json"):
        (tok / name).symlink_to(SHIPPED / "lyrics_gpt2" / name)
    text = (SHIPPED / "lyrics_gpt2" / "tokenizer.json").read_text()
    (tok / "tokenizer.json").write_text(text[: len(text) // 2])
    bomb = root / "bomb.json.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        f.write(b'{"format": "encore-markov-lyricist", "version": 1, "pad": "')
        for _ in range(256):
            f.write(b" " * 2**20)
        f.write(b'"}')
    fifo_model = root / "fifo.decoder.onnx"
    os.mkfifo(fifo_model)

    def bank(name: str) -> Path:  # the shipped voice, graphs linked
        folder = root / name
        shutil.copytree(SHIPPED / "encore_voice", folder, symlinks=True,
                        ignore=shutil.ignore_patterns("*.onnx"))
        for graph in (SHIPPED / "encore_voice").rglob("*.onnx"):
            (folder / graph.relative_to(SHIPPED / "encore_voice")).symlink_to(graph)
        return folder
    yaml_bomb = bank("bank_yaml")
    lines = ['l0: &l0 ["laugh"]'] + [
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 8)]
    with (yaml_bomb / "dsconfig.yaml").open("a") as f:
        f.write("\n" + "\n".join(lines) + "\nextra: *l7\n")
    fifo_bank = bank("bank_fifo")
    (fifo_bank / "character.txt").unlink()
    os.mkfifo(fifo_bank / "character.txt")
    good_set = root / "set"  # a render's folder: its song.jsonl and song.mid
    subprocess.run([sys.executable, "-m", "engine.cli", "render", "--patch",
                    patch("markov", '[lyrics]\nsource = "markov"\n' + quiet), "--bars", "4",
                    "--no-audio", "-o", str(good_set)], check=True, capture_output=True,
                   env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    log = (good_set / "song.jsonl").read_text().splitlines()
    record = json.loads(log[1])
    record["bar"] = None
    (root / "tampered.jsonl").write_text("\n".join([log[0], json.dumps(record), *log[2:]]))
    (root / "deep.jsonl").write_text(log[0] + "\n" + "[" * 100_000 + "\n")
    ckpt = root / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"type": "MusicVAE", "dataConverter": {
        "type": "MelodyConverter", "args": {"numSteps": 32, "minPitch": 21, "maxPitch": 108}}}))
    os.mkfifo(ckpt / "shard")
    (ckpt / "weights_manifest.json").write_text(json.dumps([{"paths": ["shard"], "weights": [
        {"name": "decoder/bias", "shape": [8], "dtype": "float32"}]}]))
    hf = root / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 100_000}))
    os.mkfifo(root / "fifo.pt")
    out = str(root / "out")  # a fresh name per run: the bench adds a counter
    render = ["render", "--bars", "1", "--no-audio", "-o", out]
    live = ["live", "--dry-run", "--no-audio", "--no-osc", "--no-record", "--bars", "1"]
    return [
        ("render: control (markov lyrics, 1 bar, no audio)", [
            *render, "--patch", patch("ok", '[lyrics]\nsource = "markov"\n' + quiet)], False),
        ("render: patch with a 300-dot key", [
            *render, "--patch", patch("dots", "[" + ".a" * 300 + "]\n")], True),
        ("render: song model a FIFO", [*render, "--model", str(fifo_model)], True),
        ("render: Markov model a 256 MiB gzip bomb", [*render, "--patch", patch(
            "bomb", f'[lyrics]\nsource = "markov"\nmodel = "{bomb}"\n' + quiet)], True),
        ("render: GPT-2 config n_layer 100000", [*render, "--patch", patch(
            "gpt2", f'[lyrics]\nsource = "gpt2"\nmodel = "{gpt2}"\n' + quiet)], True),
        ("render: GPT-2 tokenizer cut short", [*render, "--patch", patch(
            "tok", f'[lyrics]\nsource = "gpt2"\nmodel = "{tok}"\n' + quiet)], True),
        ("render: voicebank dsconfig.yaml alias bomb", [
            *render[:-3], "-o", out, "--patch", patch(
                "yaml", f'[lyrics]\nsource = "markov"\n[voice]\nsinger = "{yaml_bomb}"\n')],
         True),
        ("render: voicebank character.txt a FIFO", [
            *render[:-3], "-o", out, "--patch", patch(
                "fifo", f'[lyrics]\nsource = "markov"\n[voice]\nsinger = "{fifo_bank}"\n')],
         True),
        ("render: -o an existing set", [*render[:-1], str(good_set)], True),
        ("live --dry-run: control (markov lyrics, 1 bar)", [
            *live, "--patch", patch("ok", '[lyrics]\nsource = "markov"\n' + quiet)], False),
        ("live --dry-run: GPT-2 config n_layer 100000", [*live, "--patch", patch(
            "gpt2", f'[lyrics]\nsource = "gpt2"\nmodel = "{gpt2}"\n' + quiet)], True),
        ("live --dry-run: Markov model a gzip bomb", [*live, "--patch", patch(
            "bomb", f'[lyrics]\nsource = "markov"\nmodel = "{bomb}"\n' + quiet)], True),
        ("live: --record an existing set", [*live[:-4], "--bars", "1", "--record",
                                           str(good_set)], True),
        ("replay: control (4 bars, no audio)", [
            "replay", str(good_set / "song.jsonl"), "--no-audio", "-o", out], False),
        ("replay: a bar number null", [
            "replay", str(root / "tampered.jsonl"), "--no-audio", "-o", out], True),
        ("replay: -o an existing set", [
            "replay", str(root / "tampered.jsonl"), "-o", str(good_set)], True),
        ("stats: control", ["stats", str(good_set / "song.jsonl")], False),
        ("stats: 100,000 brackets deep", ["stats", str(root / "deep.jsonl")], True),
        ("convert magenta-js: a shard that is a FIFO", [
            "convert", "magenta-js", str(ckpt), out], True),
        ("convert gpt2: config.json n_layer 100000", ["convert", "gpt2", str(hf), out], True),
        ("export musicvae: the checkpoint a FIFO", [
            "export", "musicvae", str(root / "fifo.pt"), out], True),
        ("doctor: control (default patch)", ["doctor"], False),
        ("doctor: patch with a 300-dot key", ["doctor", "--patch", patch(
            "dots", "[" + ".a" * 300 + "]\n")], True),
    ]


def run_cli(tree: Path, argv: list[str], cwd: Path) -> tuple[float, str]:
    """Wall seconds from the process's start to its exit (``doctor``, which goes on
    checking the machine after a FAIL: to its first FAIL line), and how it ended."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", *argv], cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=os.environ | {"PYTHONPATH": str(tree)})
    failed_at, fail_line, lines = None, "", []
    assert process.stdout is not None
    for line in process.stdout:  # the command's lines as they come
        lines.append(line)
        if failed_at is None and line.startswith("FAIL"):
            failed_at, fail_line = time.perf_counter() - started, line
    try:
        err = process.communicate(timeout=300)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        return 300.0, "TIMEOUT"
    took = time.perf_counter() - started
    if "Traceback" in err:
        return took, "TRACEBACK " + err.strip().splitlines()[-1][:80]
    if process.returncode == 2 and "encore: error:" in err:
        return took, "refused: " + err[err.index("encore: error:") + 15:].strip()[:70]
    if process.returncode == 1 and failed_at is not None:  # doctor: FAIL lines, exit 1
        return failed_at, f"doctor FAIL (exit at {took:.1f} s): " + fail_line.strip()[:60]
    return took, f"exit {process.returncode}"


def cli_main(args: argparse.Namespace, trees: dict[str, Path]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = make_cli_cases(root)
        times: dict[tuple[str, str], list[float]] = {}
        last: dict[tuple[str, str], str] = {}
        n = 0
        for _ in range(args.repeats):
            for name, argv, _refused in cases:
                for label, tree in trees.items():  # alternating trees, case by case
                    n += 1
                    fresh = [f"{a}_{n}" if a == str(root / "out") else a for a in argv]
                    seconds, outcome = run_cli(tree, fresh, root)
                    times.setdefault((name, label), []).append(seconds)
                    last[(name, label)] = outcome
        print(f"{'case':52s} {'tree':8s} {'median s':>8s} {'max s':>6s}  outcome (last run)")
        for name, _argv, refused in cases:
            for label in trees:
                spread = times[(name, label)]
                flag = "" if not refused or max(spread) < 5.0 else "  OVER 5 s"
                print(f"{name:52s} {label:8s} {statistics.median(spread):8.2f} "
                      f"{max(spread):6.2f}  {last[(name, label)]}{flag}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="an older checkout to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cli", action="store_true",
                        help="each hostile class through the encore commands (see above)")
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    trees = {"this": here} | ({"baseline": args.baseline} if args.baseline else {})
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (a shared machine)")
    if args.cli:
        cli_main(args, trees)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        return
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
