"""Train a MusicVAE on cached corpus windows or on a folder of MIDI files.

    python -m export.train_musicvae --preset mel_2bar --minutes 60 --out runs/mel_2bar
    python -m export.train_musicvae --preset trio_4bar --minutes 60 --out runs/trio_4bar
    python -m export.train_musicvae --midi-dir ~/my_midi --init runs/trio_4bar/last.pt ...

Magenta's recipe: Adam, learning rate (1e-3 - 1e-5) * 0.9999^step + 1e-5, global-norm
clipping at 1.0, KL with free bits and a beta schedule, scheduled sampling where the
preset asks for it. Checkpoints (config + weights + step) go to ``--out`` every few
minutes and at the end, with held-out metrics in ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from engine.output_files import claim
from export.musicvae import (
    MusicVAE,
    MusicVAEConfig,
    check_model_name,
    learning_rate,
    load_checkpoint,
    save_checkpoint,
)
from export.musicvae_data import WindowSet, load_windows, make_batch
from export.musicvae_eval import prior_samples, reconstruction

PRESETS: dict[str, MusicVAEConfig] = {
    # cat-mel_2bar_small, narrowed to train on 2 CPU cores in about an hour. Magenta's beta
    # rate (0.99999) assumes ~200k steps; an hour here is a few thousand, so beta ramps
    # faster to reach max_beta within the run (otherwise the KL is never paid for and
    # samples from the prior, which the live walk depends on, are poor).
    "mel_2bar": MusicVAEConfig(name="mel_2bar", parts=("melody",), bars=2, enc_size=256,
                               z_size=128, dec_size=256, dec_layers=2, free_bits=0.0,
                               max_beta=0.2, beta_rate=0.9995, sampling_rate=1000.0),
    # hierdec-trio, 4 bars, narrowed likewise; teacher forcing as in Magenta's hierdec configs.
    "trio_4bar": MusicVAEConfig(name="trio_4bar", parts=("melody", "bass", "drums"), bars=4,
                                enc_size=128, z_size=128, dec_size=128, dec_layers=2,
                                conductor_size=128, conductor_layers=2, free_bits=48.0,
                                max_beta=0.2, beta_rate=0.999, sampling_rate=0.0),
}
RUN_FILES = ("last.pt", "metrics.json", "train_log.jsonl")
"""What a run writes into --out; a folder holding one of them is an earlier run, kept."""
PRESET_DATA = {"mel_2bar": "melody_2bar.npz", "trio_4bar": "duet_4bar.npz"}


def midi_files(folder: Path) -> list[Path]:
    """The .mid and .midi files under ``folder``, sorted. Linked folders are not followed
    (a link loop cannot make the walk endless) and an unreadable folder is passed over."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder; point --midi-dir at a folder of MIDI files")
    found = []
    for root, _dirs, names in os.walk(folder, followlinks=False, onerror=lambda err: None):
        found += [Path(root) / n for n in names if Path(n).suffix.lower() in {".mid", ".midi"}]
    return sorted(found)


def windows_from_midi(folder: Path, bars: int) -> WindowSet:
    """A user's MIDI folder -> windows of melody and bass lines (drums are quantised too)."""
    from engine.music.midi_io import quantize, quantize_to_windows, read_midi

    events, sources = [], []
    files = midi_files(folder)
    if not files:
        raise ValueError(f"{folder}: no .mid or .midi files found; point --midi-dir at a folder "
                         "of MIDI files")
    for path in files:
        try:
            parts = quantize(read_midi(path))
        except (ValueError, OSError) as err:  # one bad file (a dangling link too) is skipped
            print(f"skipping {err}")
            continue
        for window in quantize_to_windows(parts, bars, 1):
            lines = [window["melody"], window.get("bass", np.zeros_like(window["melody"]))]
            events.append(np.stack(lines))
            sources.append(str(path))
    if not events:
        raise ValueError(f"{folder}: no usable {bars}-bar windows with a melody in its MIDI files")
    return WindowSet(np.array(events, dtype=np.int64), np.array(sources))


def train(cfg: MusicVAEConfig, data: WindowSet, out: Path, *, minutes: float, max_steps: int,
          batch_size: int, seed: int, init: Path | None = None, threads: int = 2,
          checkpoint_minutes: float = 5.0) -> dict:
    from tqdm import tqdm

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    train_set, held_out = data.split(0.1)
    step = 0
    if init is not None:
        model, blob = load_checkpoint(init)
        if model.cfg.parts != cfg.parts or model.cfg.bars != cfg.bars:
            raise ValueError(f"{init}: its parts/bars {model.cfg.parts}/{model.cfg.bars} differ "
                             f"from the preset's {cfg.parts}/{cfg.bars}")
        cfg = model.cfg
    else:
        model = MusicVAE(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{cfg.name}: {n_params / 1e6:.2f}M parameters, {len(train_set)} train / "
          f"{len(held_out)} held-out windows, {threads} threads")
    started = time.time()
    last_ckpt = started
    log = (out / "train_log.jsonl").open("a")
    bar = tqdm(total=max_steps, desc=cfg.name, unit="step", dynamic_ncols=True)
    gen = torch.Generator().manual_seed(seed)
    while step < max_steps and time.time() - started < minutes * 60:
        model.train()
        index = rng.integers(0, len(train_set), batch_size)
        x = torch.from_numpy(make_batch(train_set, index, cfg.parts, cfg.depths, rng))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        loss, stats = model.loss(x, step, gen)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        optimizer.step()
        step += 1
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{stats['loss']:.1f}", kl=f"{stats['kl_bits']:.0f}")
            log.write(json.dumps({"step": step, "t": round(time.time() - started, 1)} | stats)
                      + "\n")
            log.flush()
        if time.time() - last_ckpt > checkpoint_minutes * 60:
            save_checkpoint(out / "last.pt", model, step)
            last_ckpt = time.time()
    bar.close()
    wall = time.time() - started
    save_checkpoint(out / "last.pt", model, step, {"wall_seconds": wall})
    metrics = {"name": cfg.name, "parameters": n_params, "steps": step, "batch_size": batch_size,
               "wall_seconds": round(wall), "threads": threads,
               "train_windows": len(train_set), "held_out_windows": len(held_out),
               "held_out": reconstruction(model, held_out),
               "prior_T1.0": prior_samples(model, temperature=1.0),
               "prior_T0.5": prior_samples(model, temperature=0.5)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train a MusicVAE (Magenta's recipe).")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mel_2bar")
    parser.add_argument("--data", type=Path, default=Path("export/cache"),
                        help="folder with the cached corpus windows (export.corpus_music21)")
    parser.add_argument("--midi-dir", type=Path, help="train on this folder of MIDI files")
    parser.add_argument("--init", type=Path, help="continue from this checkpoint (.pt)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--max-steps", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", help="name of the trained model (default: the preset's)")
    args = parser.parse_args(argv)
    cfg = PRESETS[args.preset]
    if args.name:
        cfg = replace(cfg, name=check_model_name(args.name, "--name"))
    claim(args.out, RUN_FILES, named=True,
          fix="a training run is there; give a new --out (continue it with --init "
              f"{args.out / 'last.pt'} --out NEW)")
    if args.midi_dir is not None:
        data = windows_from_midi(args.midi_dir, cfg.bars)
    else:
        data = load_windows(args.data / PRESET_DATA[args.preset])
    metrics = train(cfg, data, args.out, minutes=args.minutes, max_steps=args.max_steps,
                    batch_size=args.batch_size, seed=args.seed, init=args.init,
                    threads=args.threads)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
