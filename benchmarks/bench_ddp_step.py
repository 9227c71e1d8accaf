"""A training step of each trainer: one process vs two DDP ranks under torchrun, on the CPU.

    python benchmarks/bench_ddp_step.py                 # all four trainers, 3 rounds
    python benchmarks/bench_ddp_step.py --trainers musicvae --rounds 5 --steps 8

Each trainer's own model at its default size, its optimiser, and its step as the trainer
runs it (export/distributed.py: ``Run.wrap``, autocast, ``backward_step``) on inputs of
its shape (random windows and tokens; the voice on a few phrases sung by the teacher).
Three set-ups, alternated round by round so a load change on the machine hits them all:

- ``1 proc x1``: one process, 1 thread, batch B (the per-rank work);
- ``1 proc x2``: one process, 2 threads, batch 2B (the same effective batch as DDP);
- ``2 ranks``: ``torchrun --nproc_per_node 2``, 1 thread a rank, batch B a rank (gloo).

Each figure is the median ms per step over ``--steps`` timed steps after 2 warm-up steps;
windows/s is the effective batch over that. Every process is fresh (a subprocess).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINERS = ("musicvae", "lyrics", "acoustic", "vocoder")
BATCH = {"musicvae": 32, "lyrics": 8, "acoustic": 4, "vocoder": 4}  # per rank


def _case(name: str, batch: int, voice: Path):
    """(model, method, optimiser, make_inputs(step) -> (args, kwargs), loss_of(output))."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if name == "musicvae":
        from export.musicvae import MusicVAE
        from export.train_musicvae import PRESETS

        cfg = PRESETS["trio_4bar"]
        model = MusicVAE(cfg)
        x = np.zeros((batch, cfg.steps, sum(cfg.depths)), np.float32)
        offset = 0
        for depth in cfg.depths:
            hot = rng.integers(0, depth, (batch, cfg.steps))
            x[np.arange(batch)[:, None], np.arange(cfg.steps)[None], offset + hot] = 1.0
            offset += depth
        inputs = torch.from_numpy(x)
        return (model, "loss", torch.optim.Adam(model.parameters(), lr=cfg.learning_rate),
                lambda step: ((inputs, step, torch.Generator().manual_seed(step)), {}),
                lambda out: out[0])
    if name == "lyrics":
        from transformers import GPT2Config, GPT2LMHeadModel

        from export.gpt2_lyrics import LyricsModelConfig
        from export.train_lyrics import TrainSettings, _optimizer

        c = LyricsModelConfig()
        model = GPT2LMHeadModel(GPT2Config(vocab_size=c.vocab_size, n_positions=c.n_positions,
                                           n_embd=c.n_embd, n_layer=c.n_layer,
                                           n_head=c.n_head, tie_word_embeddings=True))
        ids = torch.from_numpy(rng.integers(0, c.vocab_size, (batch, 128)))
        return (model, "forward", _optimizer(model, TrainSettings()),
                lambda step: ((), {"input_ids": ids, "labels": ids}), lambda out: out.loss)
    from export import voice_data as vd
    from export.train_voice import _acoustic_batch
    from export.voice_acoustic import AcousticConfig, AcousticModel
    from export.voice_vocoder import HOP, Vocoder, VocoderConfig, stft_loss

    items = vd.load_corpus(voice)
    if name == "acoustic":
        model = AcousticModel(AcousticConfig(hidden=160, flow_hidden=128, enc_layers=3,
                                             dec_layers=4, flow_layers=4))
        tensors = _acoustic_batch(sorted(items, key=lambda it: len(it.f0))[:batch])
        return (model, "loss", torch.optim.AdamW(model.parameters(), lr=1.5e-3),
                lambda step: (tensors, {}), lambda out: out["l1"] + out["flow"])
    model = Vocoder(VocoderConfig(hidden=128, harmonics=64, bands=24))
    seg, ctx = 24, 4
    picks = [items[i % len(items)] for i in range(batch)]
    mel = torch.from_numpy(np.stack([it.mel[:seg + 2 * ctx] for it in picks]))
    f0 = torch.from_numpy(np.stack([it.f0_sung[:seg + 2 * ctx] for it in picks]))
    wav = torch.from_numpy(np.stack([it.audio[ctx * HOP:(ctx + seg) * HOP] for it in picks]))
    return (model, "forward", torch.optim.AdamW(model.parameters(), lr=2e-3),
            lambda step: ((mel, f0), {"noise_offset": step}),
            lambda out: stft_loss(out[:, ctx * HOP:(ctx + seg) * HOP], wav))


def worker(name: str, batch: int, threads: int, steps: int, voice: Path) -> None:
    """Time ``steps`` steps (after 2 warm-up) in this process (a rank, or alone)."""
    from export.distributed import running

    with running("cpu", "fp32", threads=threads) as run:
        model, method, optim, inputs, loss_of = _case(name, batch, voice)
        net = run.wrap(model, method)
        times = []
        for step in range(steps + 2):
            began = time.perf_counter()
            args, kwargs = inputs(step)
            loss = loss_of(net(*args, **kwargs))
            run.backward_step(loss, model, optim, 1.0)
            times.append(time.perf_counter() - began)
        slowest = run.gather(statistics.median(times[2:]))  # a DDP step waits for the slowest
        if run.is_main:
            print(json.dumps({"ms": 1000 * max(slowest), "ranks": run.world_size}))


def launch(name: str, setup: str, steps: int, voice: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    me = [str(Path(__file__).resolve()), "--worker", name, "--steps", str(steps),
          "--voice", str(voice)]
    if setup == "2 ranks":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", *me, "--batch", str(BATCH[name]), "--threads", "1"]
    else:
        threads = 1 if setup == "1 proc x1" else 2
        cmd = [sys.executable, *me, "--batch", str(BATCH[name] * threads),
               "--threads", str(threads)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"{name} {setup} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return json.loads(lines[-1])["ms"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trainers", nargs="+", choices=TRAINERS, default=list(TRAINERS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--voice", type=Path, default=None,
                    help="teacher data folder (default: 8 phrases sung now)")
    ap.add_argument("--worker", choices=TRAINERS, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.batch, a.threads, a.steps, a.voice)
        return
    with tempfile.TemporaryDirectory() as tmp:
        voice = a.voice
        if voice is None and {"acoustic", "vocoder"} & set(a.trainers):
            from export import voice_data as vd

            voice = Path(tmp) / "voice"
            vd.generate(8, 1, voice, shard_size=8, log=False)
        setups = ("1 proc x1", "1 proc x2", "2 ranks")
        print(f"CPU, {os.cpu_count()} cores (shared: figures are noisy); load "
              f"{os.getloadavg()[0]:.1f}; {a.rounds} rounds of {a.steps} steps, alternated")
        print(f"{'trainer':9} {'setup':10} {'batch':>5} {'ms/step median [min-max]':>26} "
              f"{'windows/s':>9}")
        for name in a.trainers:
            ms: dict[str, list[float]] = {s: [] for s in setups}
            for _ in range(a.rounds):
                for setup in setups:
                    ms[setup].append(launch(name, setup, a.steps, voice or Path(tmp)))
            for setup in setups:
                effective = BATCH[name] * (1 if setup == "1 proc x1" else 2)
                med = statistics.median(ms[setup])
                print(f"{name:9} {setup:10} {effective:5d} {med:10.0f} "
                      f"[{min(ms[setup]):.0f}-{max(ms[setup]):.0f}]{'':6} "
                      f"{1000 * effective / med:9.1f}", flush=True)


if __name__ == "__main__":
    main()
