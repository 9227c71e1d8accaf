"""Offline render speed: how much faster than real time ``encore render`` plays a set.

    python benchmarks/bench_render.py                       # 64 bars of the default patch
    python benchmarks/bench_render.py --model-dir /tmp/models --bars 32 --runs 5
    python benchmarks/bench_render.py --patch night_drive --bpm 0   # the patch's own tempo

Each run is a fresh Python process (so its peak memory, ``ru_maxrss``, is its own) that
loads the model and calls :func:`engine.song.render.render_song` with audio, exactly what
``encore render`` does, into a temporary folder. The patch's tempo is replaced by ``--bpm``
(default 120, so 64 bars are 128 s of music). Printed: the median wall time of ``--runs``
runs, the speed against real time (goal >= 20x), a breakdown of where the time went and
the musical figures of the render (:func:`engine.song.stats.song_stats`) against their goals.

The breakdown is measured from outside the engine, without changing it: the runner is
wrapped (time in ``MusicVAERunner.decode``, i.e. ONNX Runtime and note decoding), the
composer is subclassed (``Composer.realize`` less the decoding it asks for = arrangement:
key, snapping, chords, velocities) and the streaming audio writer of ``engine.song.render``
is patched (FluidSynth synthesis, soft clipping and the WAV writes, plus turning bars into
synth events). "other" is the rest of ``render_song``: the conductor's plans, the event log
and the MIDI file. Model loading (ONNX session creation) is timed separately.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPEED_GOAL = 20.0
SILENCE_GOAL_BARS = 2.0
IN_KEY_GOAL = 0.9
DEFAULT_BPM = 120.0


# ---- the child: one instrumented render ---------------------------------------------------
class _Timers:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, key: str, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - start
                self.calls[key] += 1
        return timed


class _TimedRunner:
    """A MusicVAERunner whose ``decode`` calls are timed; everything else passes through."""

    def __init__(self, runner: Any, timers: _Timers) -> None:
        self._runner = runner
        self.decode = timers.wrap("decode", runner.decode)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)


def _load_patch(args: argparse.Namespace):
    from engine.patch import load_patch

    patch = load_patch(args.patch, validate_files=True)
    song = patch.song
    if args.bpm:
        song = dataclasses.replace(song, tempo=args.bpm)
    if args.model:
        song = dataclasses.replace(song, model=args.model)
    return dataclasses.replace(patch, song=song)


def _child(args: argparse.Namespace) -> None:
    import engine.song.render as render
    from engine.music.musicvae_runner import load_model

    timers = _Timers()
    patch = _load_patch(args)
    started = time.perf_counter()
    runner = load_model(patch.song.model, model_dir=args.model_dir)
    load_s = time.perf_counter() - started

    base = render.Composer

    class TimedComposer(base):  # type: ignore[misc, valid-type]
        realize = timers.wrap("realize", base.realize)

    render.Composer = TimedComposer
    stream = render._StreamingAudio
    for name, key in (("__init__", "audio"), ("render_until", "audio"), ("close", "audio")):
        setattr(stream, name, timers.wrap(key, getattr(stream, name)))
    render.synth_events = timers.wrap("events", render.synth_events)
    render.soft_clip = timers.wrap("clip", render.soft_clip)
    render.FluidRenderer.render = timers.wrap("synth", render.FluidRenderer.render)

    result = render.render_song(patch, args.child, bars=args.bars, seed=args.seed,
                                runner=_TimedRunner(runner, timers), audio=True)
    wall = time.perf_counter() - started
    out = Path(args.child)
    print(json.dumps({
        "wall_s": wall, "load_s": load_s, "render_s": result.wall_seconds,
        "audio_seconds": result.audio_seconds, "provider": result.provider,
        "model": runner.name, "model_path": str(runner.decoder_path),
        "seconds": dict(timers.seconds), "calls": dict(timers.calls),
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "sha256": {f: hashlib.sha256((out / f).read_bytes()).hexdigest()
                   for f in ("song.mid", "song.wav", "song.jsonl")},
    }))


# ---- the parent: runs, medians, report ------------------------------------------------
def _machine() -> str:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    import onnxruntime as ort

    return (f"machine: {platform.system()} {platform.machine()}, {model or 'unknown CPU'}; "
            f"{os.cpu_count()} cores ({usable} usable); load average {load}\n"
            f"python {platform.python_version()}, onnxruntime {ort.__version__}, "
            f"providers available: {', '.join(ort.get_available_providers())}")


def _run_child(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(out),
               "--patch", args.patch, "--bars", str(args.bars), "--seed", str(args.seed),
               "--bpm", str(args.bpm)]
    if args.model:
        command += ["--model", args.model]
    if args.model_dir:
        command += ["--model-dir", str(args.model_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"bench_render: a render run failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(runs: list[dict[str, Any]], get) -> float:
    return statistics.median(get(r) for r in runs)


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patch", default=str(REPO / "patches" / "default.toml"),
                        help="patch file or shipped name (default: patches/default.toml)")
    parser.add_argument("--bars", type=int, default=64, help="bars per render (default 64)")
    parser.add_argument("--bpm", type=float, default=DEFAULT_BPM,
                        help=f"tempo replacing the patch's (default {DEFAULT_BPM:g}; "
                             "0 keeps the patch's)")
    parser.add_argument("--seed", type=int, default=0, help="song seed (default 0)")
    parser.add_argument("--runs", type=int, default=3, help="renders to time (default 3)")
    parser.add_argument("--model", help="model name or path (default: the patch's)")
    parser.add_argument("--model-dir", type=Path, help="look for models here first")
    parser.add_argument("--keep", type=Path, help="write the renders here instead of a "
                                                  "temporary folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bars < 1 or args.runs < 1:
        parser.error("--bars and --runs must be at least 1")
    if args.child:
        _child(args)
        return 0

    from engine.models import model_dirs
    from engine.music.musicvae_runner import find_model

    patch = _load_patch(args)
    try:
        decoder, _ = find_model(patch.song.model, args.model_dir)
    except FileNotFoundError:
        looked = ", ".join(str(d) for d in model_dirs(args.model_dir))
        print(f"bench_render: no {patch.song.model!r} model found (looked in {looked}). "
              "The shipped trio model is not in models_onnx/ yet (it is being trained); "
              "pass --model-dir DIR with an exported trio_4bar.decoder.onnx, e.g. "
              "--model-dir /tmp/models", file=sys.stderr)
        return 1

    bar_s = 4 * 60.0 / patch.song.tempo
    print(_machine())
    print(f"patch {args.patch}: {patch.song.tempo:g} BPM {patch.song.key} {patch.song.mode}, "
          f"{args.bars} bars = {args.bars * bar_s:.1f} s of music, seed {args.seed}; "
          f"model {decoder}")
    print(f"{args.runs} runs, each a fresh process rendering MIDI + WAV + event log\n")

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_render_") as tmp:
        root = args.keep or Path(tmp)
        for index in range(args.runs):
            run = _run_child(args, root / f"run{index}")
            runs.append(run)
            print(f"  run {index + 1}: {run['wall_s']:.2f} s "
                  f"({run['audio_seconds'] / run['wall_s']:.1f}x real time), "
                  f"peak RSS {run['maxrss_kib'] / 1024:.0f} MiB")
        from engine.song.stats import song_stats

        stats = song_stats(root / "run0" / "song.jsonl")

    first = runs[0]
    music = first["audio_seconds"]
    wall = _median(runs, lambda r: r["wall_s"])
    speed = music / wall
    sec = {k: _median(runs, lambda r, k=k: r["seconds"].get(k, 0.0))
           for k in ("decode", "realize", "audio", "events", "synth", "clip")}
    load = _median(runs, lambda r: r["load_s"])
    render = _median(runs, lambda r: r["render_s"])
    arrange = sec["realize"] - sec["decode"]
    audio = sec["audio"] + sec["events"]
    other = render - sec["realize"] - audio
    decodes = first["calls"].get("decode", 0)
    identical = all(r["sha256"] == first["sha256"] for r in runs)

    print(f"\nmedian wall time  {wall:.2f} s for {music:.1f} s of music "
          f"(model load + render_song; onnxruntime {first['provider']})")
    print(f"speed             {speed:.1f}x real time (goal >= {SPEED_GOAL:g}x: "
          f"{_mark(speed >= SPEED_GOAL)})")
    print(f"peak memory       {_median(runs, lambda r: r['maxrss_kib']) / 1024:.0f} MiB "
          f"(median ru_maxrss of the render processes)")
    print(f"identical output  {'yes' if identical else 'NO'} (sha256 of song.mid, song.wav "
          f"and song.jsonl across the {len(runs)} runs)")
    print("\nbreakdown (medians)")
    rows = [("model load (ONNX sessions)", load, ""),
            ("model decoding (runner.decode)", sec["decode"],
             f"{decodes} decodes, {1000 * sec['decode'] / max(decodes, 1):.1f} ms each; "
             f"{1000 * sec['decode'] / args.bars:.1f} ms per bar of a {1000 * bar_s:.0f} ms "
             "bar"),
            ("arrangement (realize - decode)", arrange,
             f"{1000 * arrange / args.bars:.1f} ms per bar"),
            ("FluidSynth + WAV", audio,
             f"{sec['synth']:.2f} s synthesis, {sec['clip']:.2f} s soft clip, "
             f"{sec['audio'] - sec['synth'] - sec['clip']:.2f} s WAV writes and setup, "
             f"{sec['events']:.2f} s bars to synth events"),
            ("other (plans, log, MIDI file)", other, "")]
    for label, seconds, note in rows:
        share = 100 * seconds / wall if wall else 0.0
        print(f"  {label:32s} {seconds:7.3f} s {share:5.1f}%  {note}".rstrip())

    print("\nmusical sanity (run 1)")
    for part in ("melody", "bass", "drums", "chords"):
        silence = stats[f"{part}_longest_silence_bars"]
        print(f"  longest silence {part:7s} {silence:5.2f} bars (goal <= "
              f"{SILENCE_GOAL_BARS:g}: {_mark(silence <= SILENCE_GOAL_BARS)}), "
              f"{stats[f'{part}_notes_per_bar']} notes per bar")
    in_key = stats["in_key_ratio"]
    print(f"  in-key ratio            {in_key} (goal >= {IN_KEY_GOAL:g}: "
          f"{_mark(in_key is not None and in_key >= IN_KEY_GOAL)})")
    similarity = stats["chorus_repeat_similarity"]
    print(f"  chorus repeat similarity {similarity if similarity is not None else 'n/a'} "
          "(share of notes a returning chorus keeps; 1 = identical)")
    if "latent_step_per_bar_mean" in stats:
        print(f"  latent step per bar     mean {stats['latent_step_per_bar_mean']}, "
              f"max {stats['latent_step_per_bar_max']} (fraction of sqrt(z size))")
    print(f"  sections                {', '.join(stats['sections'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
