"""Train the shipped Markov lyricist on the public-domain verse corpus.

    python -m export.train_markov --out models_onnx/lyrics_markov.json.gz --lines 200000

Takes every stanza's lines in corpus order until ``--lines`` lines (the corpus mixes
centuries and poets; its order keeps a poet's vocabulary together, which the model does not
care about). Prints the model's sizes and a few seeded lines, and writes metrics next to it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from engine.lyrics.markov import MarkovLyricist
from engine.lyrics.syllables import Pronouncer
from export.lyrics_corpus import load_verse


def held_out_coverage(model: MarkovLyricist, lines: list[str]) -> dict[str, float]:
    """How much of unseen verse the model can walk: the share of held-out word pairs it
    has seen (order 1) and of held-out words it knows."""
    from engine.lyrics.syllables import words

    pairs = seen = known = total = 0
    for line in lines:
        ws = words(line)
        total += len(ws)
        known += sum(model.knows(w) for w in ws)
        for a, b in zip(ws, ws[1:], strict=False):
            pairs += 1
            seen += b in model.counts[0].get(a, {})
    return {"held_out_word_coverage": known / max(total, 1),
            "held_out_pair_coverage": seen / max(pairs, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.train_markov", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--order", type=int, default=3)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    corpus = load_verse(limit_lines=args.lines * 50 // 49 + 1)
    lines = list(corpus.lines("train"))[: args.lines]
    model = MarkovLyricist(args.order).train(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    pronouncer = Pronouncer()
    rng = np.random.default_rng(0)
    samples = [model.generate_line(rng, max_words=10) for _ in range(8)]
    syllables = [pronouncer.line_syllables(s) for s in samples]
    metrics = model.stats() | held_out_coverage(model, list(corpus.lines("held_out"))) | {
        "file_bytes": args.out.stat().st_size,
        "train_seconds": round(time.perf_counter() - started, 1),
        "samples": samples, "sample_syllables": syllables,
    }
    metrics_path = args.out.with_name(args.out.name.replace(".json.gz", "") + ".metrics.json")
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
