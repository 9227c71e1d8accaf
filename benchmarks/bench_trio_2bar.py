"""The issue's latency goal: a 2-bar trio segment decoded in under 10 ms on one CPU thread.

The shipped trio decodes 4-bar segments; this re-exports the same weights with the
conductor run for 2 bars (the decoder is bar-count agnostic) and times ONNX Runtime
against PyTorch eager, batch 1, one thread each.

    python benchmarks/bench_trio_2bar.py --ckpt runs/trio_4bar/last.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from export.musicvae import MusicVAE, MusicVAEConfig, load_checkpoint
from export.musicvae_onnx import export_decoder
from export.train_musicvae import PRESETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="trained trio checkpoint (default: random "
                        "weights of the trio_4bar preset; speed does not depend on values)")
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    if args.ckpt:
        model, _ = load_checkpoint(args.ckpt)
        source = str(args.ckpt)
    else:
        model, source = MusicVAE(PRESETS["trio_4bar"]), "random weights"
    cfg: MusicVAEConfig = dataclasses.replace(model.cfg, bars=2, name="trio_2bar_view")
    two_bar = MusicVAE(cfg)
    two_bar.load_state_dict(model.state_dict())
    two_bar.eval()
    torch.set_num_threads(1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        path = export_decoder(two_bar, Path(tmp) / "trio2.decoder.onnx")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1, cfg.z_size)).astype(np.float32)
    uniform = rng.random((1, cfg.steps, sum(cfg.depths))).astype(np.float32)
    feed = {"z": z, "temperature": np.array(0.5, np.float32), "uniform": uniform}
    for _ in range(5):
        session.run(None, feed)
    ort_times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        session.run(None, feed)
        ort_times.append(time.perf_counter() - start)
    eager_times = []
    with torch.no_grad():
        for _ in range(max(args.runs // 5, 5)):
            start = time.perf_counter()
            two_bar.decode(torch.from_numpy(z), torch.tensor(0.5), torch.from_numpy(uniform))
            eager_times.append(time.perf_counter() - start)
    ort_ms, eager_ms = np.median(ort_times) * 1e3, np.median(eager_times) * 1e3
    print(f"weights: {source}")
    print(f"2-bar trio segment, batch 1, one thread: ONNX Runtime median {ort_ms:.2f} ms "
          f"(p90 {np.percentile(ort_times, 90) * 1e3:.2f}), PyTorch eager {eager_ms:.2f} ms, "
          f"ratio {eager_ms / ort_ms:.1f}x; goal < 10 ms: {'PASS' if ort_ms < 10 else 'MISS'}")


if __name__ == "__main__":
    main()
