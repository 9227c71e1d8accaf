"""Write a shipped model's card (models_onnx/<name>.md) from its training run's measurements.

    python -m export.model_card runs/mel_2bar models_onnx --data export/cache

Every number in the card comes from ``metrics.json`` (written by the trainer), the cached
data, the drum corpus summary and a parity run of the real weights; the Speed section is
added from the benchmark scripts' output (their commands are in the card).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from export.drum_corpus import corpus_summary

COLLECTIONS = {
    "oneills1850": "O'Neill's Music of Ireland (1850), public domain",
    "ryansMammoth": "Ryan's Mammoth Collection (1883), public domain",
    "airdsAirs": "Aird's Selection of Scotch, English, Irish and Foreign Airs (1782), public "
                 "domain",
    "bach": "J. S. Bach, four-part chorales (18th c.), public domain",
    "palestrina": "G. P. da Palestrina, masses (16th c.), public domain",
}
DATA_FILE = {"melody": "melody_2bar.npz", "trio": "duet_4bar.npz"}


def _collection_counts(npz: Path) -> Counter:
    sources = np.load(npz)["source"]
    return Counter(str(s).split("/")[0] for s in sources)


def _onnx_config(path: Path) -> dict:
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(meta["encore.config"])


def parity(checkpoint: Path, decoder: Path, n: int = 16, seed: int = 0) -> dict[str, float]:
    """ONNX Runtime vs PyTorch on the real weights: max |logit difference| and whether the
    decoded events are identical, at temperature 0 and 1 (same noise), over ``n`` z's."""
    import onnxruntime as ort
    import torch

    from export.musicvae import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    model.eval()
    cfg = model.cfg
    session = ort.InferenceSession(str(decoder), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, cfg.z_size)).astype(np.float32)
    uniform = rng.random((n, cfg.steps, sum(cfg.depths))).astype(np.float32)
    out: dict[str, float] = {"samples": n}
    for temperature in (0.0, 1.0):
        events, logits = session.run(None, {"z": z, "temperature": np.array(
            temperature, np.float32), "uniform": uniform})
        with torch.no_grad():
            t_events, t_logits = model.decode(torch.from_numpy(z), torch.tensor(temperature),
                                              torch.from_numpy(uniform))
        out[f"T{temperature:g}_max_abs_logit_diff"] = float(np.abs(logits - t_logits.numpy()
                                                                   ).max())
        out[f"T{temperature:g}_identical_events"] = bool((events == t_events.numpy()).all())
    return out


def _table(rows: list[tuple[str, object]]) -> str:
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


BAND_DATA = """Windows of 4 bars (16 steps a bar), hop one bar, transposed at random by
-5..+6 semitones during training (melody and bass; drums are not transposed), from three
sources (`export/band_corpus.py`). The held-out set is every window of 10% of the pieces
(split by piece, never by window).
- **Band music: the Freedoom soundtrack** (Freedoom project, **BSD-3-Clause**), read at
  training time from the MIDI lumps of Debian's `freedoom` package (`freedoom1.wad`,
  `freedoom2.wad`) by `export/freedoom_corpus.py` and never redistributed: melody (the
  highest busy non-pad channel, top line), bass (a GM bass program, else the lowest
  channel) and the General MIDI drum channel; every piece is read as 4/4 from its first
  beat. Windows kept where melody and bass each sound for at least half the window:
  {band} windows ({band_drums} with drums).
- **J. S. Bach, four-part chorales** (18th c., public domain; music21's corpus): soprano
  and bass, {chorale} windows, no drums.
- **Folk tunes**: O'Neill's Music of Ireland (1850), public domain (music21's corpus),
  duple metres: {folk} windows, melody only (their bass is left out of the loss).

The band pieces give the fewest windows, so training sees each band window 4 times as
often (transposed anew each time) and every 3rd folk window
(`export/train_musicvae.py`, `band_windows`): about 60 % of what it trains on is band
music. The held-out band figures below are drawn from the held-out band windows with
that repetition (each distinct window counts up to 4 times).

Drums: the band windows bring Freedoom's own drum tracks (Magenta's 9-class map). A
window without drums (the chorales, the folk tunes, band windows whose drummer rests)
takes a random Freedoom drum window of the training half half of the time and a window
from the project's groove library (`export/data/drum_grooves.toml`, Apache-2.0, through
`export/drum_corpus.py`) otherwise. The Essen folksong collection (licensed for use
inside music21 only) was not used. The weights are released under Apache-2.0, like the
project; the Freedoom licence asks that its copyright notice travel with redistributions
of Freedoom itself, and no part of Freedoom is redistributed here.
"""


def _recon_rows(held: dict, parts: list[str]) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for part in parts:
        rows.append((f"{part}: teacher-forced accuracy", held.get(f"tf_acc_{part}")))
        rows.append((f"{part}: sampled (free-running argmax) accuracy",
                     held.get(f"sampled_acc_{part}")))
    rows.append(("KL(q(z|x) || N(0, I)), bits, mean", held.get("kl_bits")))
    return rows


def write_card(run: Path, out_dir: Path, data_dir: Path, bench: str = "") -> Path:
    metrics = json.loads((run / "metrics.json").read_text())
    name = metrics["name"]
    cfg = _onnx_config(out_dir / f"{name}.decoder.onnx")
    kind = "trio" if "drums" in cfg.get("parts", ["drums"]) else "melody"
    band = "held_out_band" in metrics
    held = metrics["held_out"]
    parts = cfg.get("parts", [])
    sizes = {p.name: p.stat().st_size for p in sorted(out_dir.glob(f"{name}.*.onnx"))}
    recon_rows = _recon_rows(held, parts)
    if band:
        recon_rows = [(f"all held-out windows: {k}", v) for k, v in recon_rows]
        for key, what in (("held_out_band", "band (Freedoom) windows, their own drums"),
                          ("held_out_other", "chorale and folk windows")):
            recon_rows += [(f"{what} ({metrics[key].get('windows')}): {k}", v)
                           for k, v in _recon_rows(metrics[key], parts)]
    prior_rows = []
    for key in ("prior_T0.5", "prior_T1.0"):
        for stat, value in metrics[key].items():
            if stat not in ("temperature", "samples"):
                prior_rows.append((f"T={metrics[key]['temperature']}: {stat}", value))
    drums = ""
    if band:
        blob = np.load(data_dir / "band_trio_4bar.npz")
        corpus = Counter(str(c) for c in blob["corpus"])
        band_drums = int(((blob["corpus"] == "band") & (blob["events"][:, 2, 0] >= 0)).sum())
        data = BAND_DATA.format(band=corpus["band"], band_drums=band_drums,
                                chorale=corpus["chorale"], folk=corpus["folk"])
    else:
        counts = _collection_counts(data_dir / DATA_FILE[kind])
        data_lines = [f"- {COLLECTIONS.get(c, c)}: {n} windows"
                      for c, n in counts.most_common()]
        data = (f"Windows of {cfg.get('bars')} bars (16 steps a bar) cut on bar lines from "
                "music21's corpus\n") + f"""\
(duple metres only: 4/4, 2/4, 2/2, 4/2; Palestrina's alla breve values halved),
transposed at random by -5..+6 semitones during training. The held-out set is every
window of 10% of the pieces (split by piece, never by window).
{chr(10).join(data_lines)}

The Essen folksong collection (licensed for use inside music21 only) was not used.
The corpora are read from the installed music21 package at training time and are not
redistributed. The weights are released under Apache-2.0, like the project.
"""
    if band and metrics.get("init"):
        data += ("\nTraining started from the weights of the shipped `trio_4bar` (Palestrina "
                 "and Bach,\npublic domain, and the groove library; see its card), recovered "
                 "from its ONNX files\nby `export/onnx_to_checkpoint.py`: a fine-tune, not a "
                 "model from scratch.\n")
    if kind == "trio" and not band:
        summary = corpus_summary()
        drums = f"""
### Drums: what the drum decoder learned from
No drum corpus ships with any package here, and nothing can be downloaded, so the drum
part was trained on the project's own groove library (`export/data/drum_grooves.toml`,
{summary['licence']}): {summary['grooves']} one-bar grooves in {summary['styles']} styles
and {summary['fills']} fills, written for this project as common idioms (not
transcriptions), strung into 4-bar windows with seeded variation by
`export/drum_corpus.py` (kick moves, open hats, ghost snares, ride, simplified bars,
crashes, a fill in the last bar a quarter of the time). Each training window pairs a
melody/bass window with an independently generated drum window, so the drums learned
no dependence on the melody and bass beyond sharing the latent code. They sound like
those grooves, nothing more.
"""
    if band:
        init = ""
        if metrics.get("init"):
            init = ("python -m export.onnx_to_checkpoint trio_4bar runs/trio_4bar_init.pt"
                    "   # the shipped trio's weights\n")
        retrain = f"""apt-get install freedoom                                 # the band music
python -m export.band_corpus --out export/cache          # a few minutes on 2 cores
{init}python -m export.train_musicvae --preset trio_4bar --corpus band --name {name} \\
    --minutes {metrics['wall_seconds'] / 60:.0f} --batch-size {metrics['batch_size']} \\
    {'--init runs/trio_4bar_init.pt ' if init else ''}--out runs/{name}
encore export musicvae runs/{name}/last.pt models_onnx
python -m export.model_card runs/{name} models_onnx --data export/cache"""
    else:
        retrain = f"""python -m export.corpus_music21 --out export/cache      # ~7 min on 2 cores
python -m export.train_musicvae --preset {name} --minutes 60 --out runs/{name}
encore export musicvae runs/{name}/last.pt models_onnx
python -m export.model_card runs/{name} models_onnx --data export/cache"""
    checks = parity(run / "last.pt", out_dir / f"{name}.decoder.onnx")
    parity_rows = [(k, f"{v:.2e}" if isinstance(v, float) else v) for k, v in checks.items()]
    text = f"""# {name}

A MusicVAE ({'hierarchical trio: melody, bass, drums' if kind == 'trio' else
'2-bar melody'}) trained from scratch by this project and exported to ONNX.
Runtime: `engine.music.musicvae_runner.MusicVAERunner`; training code: `export/`.

## Files
{chr(10).join(f'- `{f}`: {s / 1e6:.2f} MB' for f, s in sizes.items())}

## Architecture
```json
{json.dumps(cfg, indent=2)}
```
Parameters: {metrics['parameters']:,} ({metrics['parameters'] * 4 / 1e6:.1f} MB float32).

## Data and licence
{data}{drums}
## Training
{_table([("steps", metrics['steps']), ("batch size", metrics['batch_size']),
         ("wall time", f"{metrics['wall_seconds'] / 60:.1f} min on {metrics['threads']} CPU "
                       "thread(s), shared with other work"),
         ("train windows", metrics['train_windows']),
         ("held-out windows", metrics['held_out_windows'])])}

Recipe (Magenta's): Adam, lr = (1e-3 - 1e-5) * 0.9999^step + 1e-5, global-norm clip 1.0,
loss = recon + beta * max(KL - free_bits * ln 2, 0), beta = (1 - beta_rate^step) * max_beta.
beta_rate is faster than Magenta's 0.99999 so that beta reaches max_beta within an
hour's steps. Scheduled sampling (inverse sigmoid, k = {cfg.get('sampling_rate')}) where
k > 0; teacher forcing otherwise.

## Held-out reconstruction ({held.get('windows')} windows, z = mu)
{_table(recon_rows)}

## Samples from the prior (z ~ N(0, I), {metrics['prior_T1.0']['samples']} samples)
`in_scale` is the share of notes inside the best-fitting major/natural-minor scale.
{_table(prior_rows)}

## ONNX Runtime vs PyTorch (these weights)
{_table(parity_rows)}
{bench}
## Retrain
```
{retrain}
```
"""
    path = out_dir / f"{name}.md"
    path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--data", type=Path, default=Path("export/cache"))
    args = parser.parse_args()
    print(write_card(args.run, args.out_dir, args.data))


if __name__ == "__main__":
    main()
