"""GPT-2 lyricist speed: ONNX Runtime with the key/value cache vs transformers' generate().

    python benchmarks/bench_lyrics_gpt2.py        # models_onnx/lyrics_gpt2 vs runs/lyrics_gpt2/hf
    python benchmarks/bench_lyrics_gpt2.py --onnx OUT --hf HF_DIR --threads 1 2 --tokens 64
    python benchmarks/bench_lyrics_gpt2.py --tokens 4 --threads 1 --runs 1   # a quick smoke run

Without --hf, the Hugging Face folder is runs/lyrics_gpt2/hf when this machine trained the
lyricist, else the one rebuilt from the exported weights (``hf_from_export``: runs/ is not
in the repository, so a fresh checkout compares against the shipped model's own weights).

For each thread count (torch.set_num_threads and ORT intra-op threads alike) both engines
greedily generate the same number of new tokens after the same prompt, at batch 1:

- ORT: ``GPT2Lyricist.greedy`` (the prompt in one run, then one cached run per token, argmax
  in numpy);
- transformers: ``model.generate(do_sample=False)`` with its own cache, end-of-text not
  stopping it (``export.gpt2_onnx.hf_greedy``).

Each figure is the median of --runs calls after one warm-up call, and includes the prompt
(prefill). The token sequences must be identical, or the script exits with status 1. Then
it times the engine's real use: a batch of 8 lines of up to 16 tokens sampled in lockstep
(``generate_lines``), as sampled and with every line forced to the full 16 tokens.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.lyrics.gpt2_runner import GPT2Lyricist  # noqa: E402
from export.gpt2_onnx import hf_from_export, hf_greedy, load_hf  # noqa: E402

DEFAULT_HF = REPO / "runs" / "lyrics_gpt2" / "hf"
PROMPT = "about: night\nthe moon is rising over silver water\n"


def median_s(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_environment(onnx_dir: Path, hf_dir: Path, lyricist: GPT2Lyricist) -> None:
    import transformers

    c = lyricist.config
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {load:.2f}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"onnxruntime {ort.__version__} ({lyricist.provider})")
    print(f"model: {c['n_layer']} layers, {c['n_head']} heads x {c['head_dim']}, vocab "
          f"{c['vocab_size']}; ONNX {onnx_dir}, transformers {hf_dir}")


def bench_greedy(lyricist: GPT2Lyricist, model, tokens: int, runs: int) -> tuple[float, float]:
    """(ORT tokens/s, transformers tokens/s); exits 1 when the sequences differ."""
    ids = lyricist.context_ids(PROMPT, tokens)
    ours = lyricist.greedy(PROMPT, tokens)
    theirs = hf_greedy(model, ids, tokens, pad_id=lyricist.eos_id)
    if ours != theirs:
        first = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
        print(f"greedy sequences differ at token {first}: ORT {ours[first:first + 8]}, "
              f"transformers {theirs[first:first + 8]}; are --onnx and --hf the same model?")
        raise SystemExit(1)
    ort_s = median_s(lambda: lyricist.greedy(PROMPT, tokens), runs)
    hf_s = median_s(lambda: hf_greedy(model, ids, tokens, pad_id=lyricist.eos_id), runs)
    return tokens / ort_s, tokens / hf_s


def bench_lines(lyricist: GPT2Lyricist, runs: int) -> tuple[float, float]:
    """Median ms for 8 lines of up to 16 tokens: as sampled, and forced to 16 tokens."""
    def sampled() -> None:
        lyricist.generate_lines(PROMPT, 8, np.random.default_rng(0), max_tokens=16)

    def full() -> None:
        lyricist.generate_lines(PROMPT, 8, np.random.default_rng(0), max_tokens=16,
                                min_tokens=16)

    return 1000 * median_s(sampled, runs), 1000 * median_s(full, runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, default=REPO / "models_onnx" / "lyrics_gpt2",
                        help="exported folder (encore convert gpt2)")
    parser.add_argument("--hf", type=Path, default=None,
                        help="the Hugging Face folder it was exported from (default: "
                             "runs/lyrics_gpt2/hf if there, else rebuilt from --onnx)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per greedy run")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.hf is None:
            args.hf = DEFAULT_HF if DEFAULT_HF.is_dir() else hf_from_export(args.onnx,
                                                                            Path(tmp) / "hf")
        return run(args)


def run(args: argparse.Namespace) -> int:
    model, _ = load_hf(args.hf)
    lines = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        lyricist = GPT2Lyricist.load(args.onnx, threads=threads,
                                     providers=["CPUExecutionProvider"])
        if threads == args.threads[0]:
            print_environment(args.onnx, args.hf, lyricist)
            print(f"greedy, batch 1, {args.tokens} new tokens after a "
                  f"{len(lyricist.context_ids(PROMPT))}-token prompt, median of {args.runs}; "
                  "sequences identical")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ort_tps, hf_tps = bench_greedy(lyricist, model, args.tokens, args.runs)
        sampled_ms, full_ms = bench_lines(lyricist, args.runs)
        lines.append(f"{threads:>7}  {ort_tps:>12.0f}  {hf_tps:>15.0f}  {ort_tps / hf_tps:>5.1f}x"
                     f"  {sampled_ms:>14.1f}  {full_ms:>11.1f}")
    print("threads  ORT tokens/s  transformers t/s  ratio  8 lines ms (sampled)  (16 tokens)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
