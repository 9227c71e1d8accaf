"""Train a MusicVAE on cached corpus windows or on a folder of MIDI files.

    python -m export.train_musicvae --preset mel_2bar --minutes 60 --out runs/mel_2bar
    python -m export.train_musicvae --preset trio_4bar --minutes 60 --out runs/trio_4bar
    python -m export.train_musicvae --midi-dir ~/my_midi --init runs/trio_4bar/last.pt ...
    python -m export.train_musicvae --preset trio_4bar --corpus band --name trio_band ...

``--corpus band`` trains the trio on band music (the Freedoom soundtrack's melody, bass and
drum tracks) plus Bach chorales and folk tunes (``export/band_corpus.py``; the windows are
extracted into ``--data`` on first use).

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
from export.distributed import (
    Run,
    ShardedSampler,
    add_arguments,
    check_arguments,
    record_windows,
    running,
)
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
CORPORA = ("music21", "band")
BAND_PREFIX = "freedoom/"  # sources of the band corpus's Freedoom windows
FOLK_PREFIXES = ("oneills1850/", "ryansMammoth/")
BAND_REPEAT = 4
FOLK_EVERY = 3


def band_windows(folder: Path, cfg: MusicVAEConfig) -> WindowSet:
    """The band corpus's windows from ``folder`` (extracted there first if missing)."""
    from export.band_corpus import CACHE_NAME, build

    if cfg.parts != ("melody", "bass", "drums") or cfg.bars != 4:
        raise ValueError("--corpus band trains a 4-bar trio; use --preset trio_4bar")
    if not (folder / CACHE_NAME).is_file():
        print(f"extracting the band corpus into {folder} (several minutes) ...")
        print(build(folder))
    data = load_windows(folder / CACHE_NAME)
    # The band pieces give the fewest windows: they are seen BAND_REPEAT times as often
    # (each time transposed anew) and every FOLK_EVERY-th folk window is kept.
    band = np.char.startswith(data.source.astype(str), BAND_PREFIX)
    folk = np.array([s.startswith(FOLK_PREFIXES) for s in data.source.astype(str)])
    keep = np.flatnonzero(~band & ~folk)
    keep = np.concatenate([np.repeat(np.flatnonzero(band), BAND_REPEAT), keep,
                           np.flatnonzero(folk)[::FOLK_EVERY]])
    return data.subset(np.sort(keep))


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
          batch_size: int, seed: int, init: Path | None = None, resume: Path | None = None,
          threads: int | None = None, checkpoint_minutes: float = 5.0, device: str = "auto",
          precision: str = "auto", record_windows: bool = False) -> dict:
    """Train (one rank of a torchrun job, or alone). ``init`` starts from a checkpoint's
    weights at step 0; ``resume`` continues one (weights, optimiser, step) as if the run
    had not stopped. Returns the metrics (rank 0; the others return {})."""
    with running(device, precision, threads=threads) as run:
        return _train(run, cfg, data, out, minutes=minutes, max_steps=max_steps,
                      batch_size=batch_size, seed=seed, init=init, resume=resume,
                      checkpoint_minutes=checkpoint_minutes, record=record_windows)


def _train(run: Run, cfg: MusicVAEConfig, data: WindowSet, out: Path, *, minutes: float,
           max_steps: int, batch_size: int, seed: int, init: Path | None, resume: Path | None,
           checkpoint_minutes: float, record: bool) -> dict:
    from tqdm import tqdm

    torch.manual_seed(seed)
    train_set, held_out = data.split(0.1)
    step, training, spent = 0, None, 0.0
    if resume is not None or init is not None:
        model, blob = load_checkpoint(resume or init)
        if model.cfg.parts != cfg.parts or model.cfg.bars != cfg.bars:
            raise ValueError(f"{resume or init}: its parts/bars {model.cfg.parts}/"
                             f"{model.cfg.bars} differ from the preset's {cfg.parts}/{cfg.bars}")
        if resume is None:  # a fine-tune is the new model: it keeps the name it was given
            model.cfg = replace(model.cfg, name=cfg.name)
        cfg = model.cfg
        if resume is not None:
            step, training = int(blob["step"]), blob.get("training")
            spent = float(blob.get("extra", {}).get("wall_seconds", 0.0))
    else:
        model = MusicVAE(cfg)
    net = run.wrap(model, "loss")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    if training is not None:
        optimizer.load_state_dict(training["optimizer"])
        run.scaler.load_state_dict(training.get("scaler", {}))
    sampler = ShardedSampler.for_run(len(train_set), batch_size, run, seed)
    n_params = sum(p.numel() for p in model.parameters())
    run.print(f"{cfg.name}: {n_params / 1e6:.2f}M parameters, {len(train_set)} train / "
              f"{len(held_out)} held-out windows" + (f", resuming at step {step}" if step else ""))
    run.print(run.describe(batch_size, cfg.learning_rate))
    if run.is_main:
        out.mkdir(parents=True, exist_ok=True)
    log = (out / "train_log.jsonl").open("a") if run.is_main else None
    started = time.time() - spent
    last_ckpt = time.time()
    bar = tqdm(total=max_steps, initial=step, desc=cfg.name, unit="step", dynamic_ncols=True,
               disable=not run.is_main)
    seen: list[tuple[int, int, list[int]]] = []
    stats: dict[str, float] = {}

    def save(final: bool) -> None:
        if run.is_main:
            save_checkpoint(out / "last.pt", model, step,
                            {"wall_seconds": time.time() - started, "ranks": run.world_size,
                             "batch_size": batch_size, "seed": seed},
                            {"optimizer": optimizer.state_dict(),
                             "scaler": run.scaler.state_dict()})

    model.train()
    while step < max_steps and not run.stop_agreed(time.time() - started >= minutes * 60):
        index = sampler.batch(step)
        if record:
            seen.append((step, sampler.epoch_of(step), index.tolist()))
        rng = run.step_rng(seed, step)
        x, = run.to(torch.from_numpy(make_batch(train_set, index, cfg.parts, cfg.depths, rng)))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        with run.autocast():
            loss, stats = net(x, step, run.step_generator(seed, step))
        run.backward_step(loss, model, optimizer, cfg.clip_norm)
        step += 1
        bar.update(1)
        if step % 25 == 0:
            loss_all, kl_all = run.mean([stats["loss"], stats["kl_bits"]])
            stats |= {"loss": float(loss_all), "kl_bits": float(kl_all)}
            bar.set_postfix(loss=f"{stats['loss']:.1f}", kl=f"{stats['kl_bits']:.0f}")
            if log is not None:
                log.write(json.dumps({"step": step, "t": round(time.time() - started, 1)}
                                     | stats) + "\n")
                log.flush()
        if time.time() - last_ckpt > checkpoint_minutes * 60:
            save(final=False)
            last_ckpt = time.time()
    bar.close()
    if record:
        record_windows(run, seen, out / "windows.json")
    wall = time.time() - started
    save(final=True)
    if not run.is_main:
        return {}
    log.close()
    model.cpu().eval()
    metrics = {"name": cfg.name, "parameters": n_params, "steps": step, "batch_size": batch_size,
               "init": None if init is None else str(init),
               "ranks": run.world_size, "effective_batch": batch_size * run.world_size,
               "device": run.device.type, "precision": run.precision,
               "wall_seconds": round(wall), "threads": run.threads,
               "final_train_loss": stats.get("loss"),
               "train_windows": len(train_set), "held_out_windows": len(held_out),
               "held_out": reconstruction(model, held_out),
               **held_out_band(model, held_out),
               "prior_T1.0": prior_samples(model, temperature=1.0),
               "prior_T0.5": prior_samples(model, temperature=0.5)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def held_out_band(model: MusicVAE, held_out: WindowSet) -> dict[str, dict]:
    """Held-out reconstruction on the band pieces alone (their own drums), when any."""
    band = np.char.startswith(held_out.source.astype(str), BAND_PREFIX)
    if not band.any() or band.all():
        return {}
    return {"held_out_band": reconstruction(model, held_out.subset(band)),
            "held_out_other": reconstruction(model, held_out.subset(~band))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train a MusicVAE (Magenta's recipe).")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mel_2bar")
    parser.add_argument("--data", type=Path, default=Path("export/cache"),
                        help="folder with the cached corpus windows (export.corpus_music21)")
    parser.add_argument("--midi-dir", type=Path, help="train on this folder of MIDI files")
    parser.add_argument("--corpus", choices=CORPORA, default="music21",
                        help="music21: the preset's cached windows; band: Freedoom band music "
                             "+ Bach chorales + folk tunes (trio_4bar only)")
    parser.add_argument("--init", type=Path,
                        help="start from this checkpoint's weights (.pt), at step 0")
    parser.add_argument("--resume", type=Path,
                        help="continue this checkpoint (.pt: weights, optimiser, step)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--max-steps", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads a rank (default: the cores shared by the ranks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", help="name of the trained model (default: the preset's)")
    parser.add_argument("--record-windows", action="store_true",
                        help="write the window indices each rank trained on to OUT/windows.json")
    add_arguments(parser)
    args = parser.parse_args(argv)
    check_arguments(args)
    cfg = PRESETS[args.preset]
    if args.name:
        cfg = replace(cfg, name=check_model_name(args.name, "--name"))
    if args.resume is None:  # a resumed run goes on in its own folder
        claim(args.out, RUN_FILES, named=True,
              fix="a training run is there; give a new --out, or continue it with --resume "
                  f"{args.out / 'last.pt'}")
    if args.midi_dir is not None:
        data = windows_from_midi(args.midi_dir, cfg.bars)
    elif args.corpus == "band":
        data = band_windows(args.data, cfg)
    else:
        data = load_windows(args.data / PRESET_DATA[args.preset])
    metrics = train(cfg, data, args.out, minutes=args.minutes, max_steps=args.max_steps,
                    batch_size=args.batch_size, seed=args.seed, init=args.init,
                    resume=args.resume, threads=args.threads, device=args.device,
                    precision=args.precision, record_windows=args.record_windows)
    if metrics:
        print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
