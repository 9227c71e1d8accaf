"""Fit quality and line latency of the lyricists on a 64-bar render.

    .venv/bin/python benchmarks/bench_lyrics_fit.py [--bars 64] [--seeds 1 2 3]

For each lyricist (Markov, GPT-2) composes the default patch's song as ``encore render``
does (conductor, composer, lyrics track; no audio) and looks at every line written:

- exact: the share of phrases sung one syllable per note (no melisma, no split note);
- rhymed: the share of verse line pairs the scheme asks to rhyme that do (rhyme repair
  included; the share repaired is shown);
- latency: the time to write one fitted line, candidates included (median, p95, max),
  measured in the render process on this machine's CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.music.musicvae_runner import load_model  # noqa: E402
from engine.patch import build_patch, default_patch_path, load_patch  # noqa: E402
from engine.song.conductor import Composer, Conductor  # noqa: E402
from engine.song.lyrics_track import LyricsTrack, build_writer  # noqa: E402


def measure(source: str, bars: int, seed: int) -> dict:
    """Compose ``bars`` bars of the default patch as the render does and write their
    lyrics, timing each line."""
    patch = load_patch(default_patch_path())
    data = patch.to_dict()
    patch = build_patch(data | {"lyrics": data["lyrics"] | {"source": source}})
    runner = load_model(patch.song.model)
    conductor = Conductor(patch, runner.z_size, seed=seed)
    composer = Composer(runner, patch)
    writer = build_writer(patch.lyrics, conductor.seed)
    track = LyricsTrack(writer, patch.lyrics)
    lines = []
    for _ in range(bars):
        plan = conductor.plan()
        written = track.feed(plan, composer.realize(plan))
        if written is not None:
            lines.append({"text": written[0].text} | asdict(written[1]))
    fresh = [r for r in lines if not r["reused"]]
    pairs = [r for r in fresh if r["rhyme_with"]]
    ms = sorted(r["ms"] for r in fresh)
    return {
        "lines": len(lines), "fresh": len(fresh),
        "exact": sum(r["exact"] for r in lines) / max(len(lines), 1),
        "rhymed": sum(bool(r["rhymed"]) for r in pairs) / max(len(pairs), 1),
        "repaired": sum(r["repaired"] for r in pairs) / max(len(pairs), 1),
        "pairs": len(pairs),
        "ms_median": statistics.median(ms) if ms else 0.0,
        "ms_p95": ms[int(0.95 * (len(ms) - 1))] if ms else 0.0,
        "ms_max": ms[-1] if ms else 0.0,
        "examples": [r["text"] for r in lines[:8]],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--sources", nargs="+", default=["markov", "gpt2"])
    args = parser.parse_args()
    print(f"{'source':7} {'seed':>4} {'lines':>5} {'exact':>6} {'rhymed':>7} {'repaired':>8} "
          f"{'ms med':>7} {'ms p95':>7} {'ms max':>7}")
    for source in args.sources:
        rows = []
        for seed in args.seeds:
            r = measure(source, args.bars, seed)
            rows.append(r)
            print(f"{source:7} {seed:>4} {r['lines']:>5} {r['exact']:>6.2f} {r['rhymed']:>7.2f} "
                  f"{r['repaired']:>8.2f} {r['ms_median']:>7.1f} {r['ms_p95']:>7.1f} "
                  f"{r['ms_max']:>7.1f}")
        total = sum(r["lines"] for r in rows)
        exact = sum(r["exact"] * r["lines"] for r in rows) / max(total, 1)
        pairs = sum(r["pairs"] for r in rows)
        rhymed = sum(r["rhymed"] * r["pairs"] for r in rows) / max(pairs, 1)
        print(f"{source:7}  all {total:>5} {exact:>6.2f} {rhymed:>7.2f}   "
              f"(exact fit {exact:.0%} of phrases, {rhymed:.0%} of {pairs} rhyme pairs)")
        for line in rows[0]["examples"]:
            print(f"    {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
