"""Held-out metrics and sample statistics for a MusicVAE (the model card's numbers)."""

from __future__ import annotations

import math

import numpy as np
import torch

from engine.music.encoding import NO_EVENT, NOTE_OFF
from export.musicvae import MusicVAE
from export.musicvae_data import WindowSet, make_batch

MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])


@torch.no_grad()
def reconstruction(model: MusicVAE, windows: WindowSet, *, limit: int = 512, seed: int = 7,
                   batch: int = 128) -> dict[str, float]:
    """Teacher-forced and sampled (free-running argmax from z = mu) accuracy per part,
    and the mean KL in bits, on untransposed held-out windows."""
    model.eval()
    cfg = model.cfg
    rng = np.random.default_rng(seed)
    count = min(limit, len(windows))
    order = rng.permutation(len(windows))[:count]
    drum_rng = np.random.default_rng(seed + 1)
    totals: dict[str, float] = {}
    counts: dict[str, float] = {}
    for begin in range(0, count, batch):
        idx = order[begin:begin + batch]
        x = torch.from_numpy(make_batch(windows, idx, cfg.parts, cfg.depths, drum_rng,
                                        augment=False))
        mu, sigma = model.encoder(x)
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - 1.0 - torch.log(sigma.pow(2))).sum(-1)
        totals["kl_bits"] = totals.get("kl_bits", 0.0) + kl.sum().item() / math.log(2)
        tf_logits = model.teacher_forced_logits(mu, x)
        uniform = torch.full((len(idx), cfg.steps, sum(cfg.depths)), 0.5)
        events, _ = model.decode(mu, torch.tensor(0.0), uniform)
        for p, (name, part) in enumerate(zip(cfg.parts, model.split_parts(x), strict=True)):
            target = part.argmax(-1)
            known = part.sum(-1)  # windows without this line count for nothing
            tf = ((tf_logits[p].argmax(-1) == target).float() * known).mean(-1).sum().item()
            sampled = ((events[:, p] == target).float() * known).mean(-1).sum().item()
            totals[f"tf_acc_{name}"] = totals.get(f"tf_acc_{name}", 0.0) + tf
            totals[f"sampled_acc_{name}"] = totals.get(f"sampled_acc_{name}", 0.0) + sampled
            counts[name] = counts.get(name, 0.0) + (known.amax(-1)).sum().item()
    if not count:
        return {"windows": 0}
    out = {"kl_bits": round(totals.pop("kl_bits") / count, 4)}
    for key, value in totals.items():
        name = key.split("_acc_", 1)[1]
        out[key] = round(value / counts[name], 4) if counts[name] else None
    return out | {"windows": count}


def _notes_of(events: np.ndarray) -> list[int]:
    return [int(e) - 2 + 21 for e in events if e >= 2]


def in_scale_ratio(pitches: list[int]) -> float:
    """Share of notes inside the best-fitting major (equivalently natural minor) scale."""
    if not pitches:
        return float("nan")
    classes = np.bincount(np.array(pitches) % 12, minlength=12)
    best = max(classes[(MAJOR + tonic) % 12].sum() for tonic in range(12))
    return float(best) / len(pitches)


@torch.no_grad()
def prior_samples(model: MusicVAE, *, n: int = 256, temperature: float = 1.0, seed: int = 11
                  ) -> dict[str, float]:
    """Decode z ~ N(0, I) and describe what comes out, per part."""
    model.eval()
    cfg = model.cfg
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, cfg.z_size, generator=gen)
    uniform = torch.rand(n, cfg.steps, sum(cfg.depths), generator=gen)
    events, _ = model.decode(z, torch.tensor(float(temperature)), uniform)
    events = events.numpy()
    stats: dict[str, float] = {"temperature": temperature, "samples": n}
    for p, name in enumerate(cfg.parts):
        part = events[:, p]
        if name == "drums":
            onsets = np.array([sum(bin(int(e)).count("1") for e in row) for row in part])
            stats[f"{name}_empty_fraction"] = float(np.mean(onsets == 0))
            stats[f"{name}_hits_per_bar"] = float(onsets.mean() / cfg.bars)
            continue
        counts = np.array([(row >= 2).sum() for row in part])
        stats[f"{name}_empty_fraction"] = float(np.mean(counts == 0))
        stats[f"{name}_notes_per_bar"] = float(counts.mean() / cfg.bars)
        ratios = [in_scale_ratio(_notes_of(row)) for row in part]
        stats[f"{name}_in_scale"] = float(np.nanmean(ratios)) if any(
            not math.isnan(r) for r in ratios) else float("nan")
        stats[f"{name}_off_events_per_bar"] = float((part == NOTE_OFF).sum() / n / cfg.bars)
        stats[f"{name}_hold_share"] = float((part == NO_EVENT).mean())
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}
