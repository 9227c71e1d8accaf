"""Write Encore's own voice as an OpenUtau DiffSinger voicebank, and measure it.

    write_bank(acoustic, vocoder, Path("models_onnx/encore_voice"), max_depth=0.5)
    evaluate(Path("models_onnx/encore_voice"), Path("export/cache/voice/heldout"))

The folder is exactly what :func:`engine.voice.voicebank.load_voicebank` reads and what
OpenUtau reads::

    character.txt, character.yaml   name, singer_type: diffsinger
    dsconfig.yaml                   acoustic.onnx, phonemes.json, audio settings, max_depth
    phonemes.json                   <PAD> SP AP + 39 ARPAbet phonemes (lower case) -> id
    dsdict.yaml                     the symbols and their types (no word entries: CMUdict)
    acoustic.onnx                   tokens, durations, f0, steps, depth -> mel
    dsvocoder/vocoder.yaml          the audio grid (must agree with dsconfig.yaml)
    dsvocoder/model.onnx            mel, f0 -> waveform

:func:`evaluate` gives the model card's numbers: pitch accuracy (Harvest, the method of
``benchmarks/bench_fallback_singer.py``) and real-time factor for this voice and for the
fallback singer on the same held-out phrases, and the held-out mel L1.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from export import voice_data as vd

NAME = "Encore Voice"
VOCODER_NAME = "encore_nsf"
SYMBOL_TYPES = {
    **{v: "vowel" for v in vd.VOWELS},
    **{c: "stop" for c in "b d g k p t".split()},
    **{c: "affricate" for c in "ch jh".split()},
    **{c: "fricative" for c in "dh f hh s sh th v z zh".split()},
    **{c: "nasal" for c in "m n ng".split()},
    **{c: "liquid" for c in "l r".split()},
    **{c: "semivowel" for c in "w y".split()},
}
AUDIO = {"sample_rate": vd.SAMPLE_RATE, "hop_size": vd.HOP, "win_size": vd.WIN,
         "fft_size": vd.N_FFT, "num_mel_bins": vd.N_MELS, "mel_fmin": int(vd.FMIN),
         "mel_fmax": int(vd.FMAX), "mel_base": "e", "mel_scale": "slaney"}


def _fix_output_shape(path: Path, name: str, dims: list[int | str]) -> None:
    """Give a graph output its declared shape (the TorchScript exporter leaves names like
    'Addmel_dim_0'), and check the model."""
    import onnx

    model = onnx.load(str(path))
    for out in model.graph.output:
        if out.name == name:
            shape = out.type.tensor_type.shape
            for dim, value in zip(shape.dim, dims, strict=True):
                if isinstance(value, int):
                    dim.Clear()
                    dim.dim_value = value
                else:
                    dim.Clear()
                    dim.dim_param = value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_bank(acoustic: Any, vocoder: Any, folder: Path, *, max_depth: float = 0.5,
               notes: dict[str, Any] | None = None) -> Path:
    """Export ``acoustic`` (an :class:`~export.voice_acoustic.AcousticModel`) and ``vocoder``
    (a :class:`~export.voice_vocoder.Vocoder`) into the voicebank ``folder``.

    ``max_depth`` is the shallow-flow depth the runner feeds by default (it feeds
    ``min(RenderSettings.depth or max_depth, max_depth)``)."""
    from export import voice_acoustic, voice_vocoder

    if not 0.0 <= max_depth <= 1.0:
        raise ValueError(f"max_depth must be in 0..1 (the fraction of the flow to run), got "
                         f"{max_depth}")
    folder = Path(folder)
    (folder / "dsvocoder").mkdir(parents=True, exist_ok=True)
    (folder / "character.txt").write_text(f"name={NAME}\nauthor=Encore (trained from its "
                                          f"espeak-ng + WORLD fallback singer)\n")
    (folder / "character.yaml").write_text(yaml.safe_dump(
        {"name": NAME, "singer_type": "diffsinger", "default_phonemizer":
         "OpenUtau.Core.DiffSinger.DiffSingerARPAPlusEnglishPhonemizer"}, sort_keys=False))
    (folder / "phonemes.json").write_text(json.dumps(vd.PHONEME_IDS, indent=0))
    (folder / "dsdict.yaml").write_text(yaml.safe_dump(
        {"symbols": [{"symbol": s, "type": t} for s, t in SYMBOL_TYPES.items()],
         "entries": []}, sort_keys=False))
    config = {
        "acoustic": "acoustic.onnx", "phonemes": "phonemes.json", "vocoder": VOCODER_NAME,
        "hidden_size": acoustic.cfg.hidden, "use_shallow_diffusion": True,
        "use_variable_depth": True, "max_depth": float(max_depth),
        "use_continuous_acceleration": True, "speakers": [], **AUDIO,
    }
    (folder / "dsconfig.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    voice_acoustic.export_onnx(acoustic, folder / "acoustic.onnx")
    _fix_output_shape(folder / "acoustic.onnx", "mel", [1, "n_frames", vd.N_MELS])
    voice_vocoder.export_onnx(vocoder, folder / "dsvocoder" / "model.onnx")
    _fix_output_shape(folder / "dsvocoder" / "model.onnx", "waveform", [1, "n_samples"])
    (folder / "dsvocoder" / "vocoder.yaml").write_text(yaml.safe_dump(
        {"name": VOCODER_NAME, "model": "model.onnx", "pitch_controllable": True, **AUDIO},
        sort_keys=False))
    if notes:
        (folder / "training.json").write_text(json.dumps(notes, indent=1))
    return folder


# ---- evaluation ---------------------------------------------------------------------------

def _bench() -> Any:
    """benchmarks/bench_fallback_singer.py as a module (its cents_errors is the method)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fallback_singer.py"
    spec = importlib.util.spec_from_file_location("bench_fallback_singer", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{path}: needed for the pitch measurement")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tracking_cents(bench: Any, audio: Any, timing: Any, plan: Any, tempo: float,
                    trim: float = 0.05) -> np.ndarray:
    """|cents| of Harvest's f0 against the f0 curve the voice was fed (vibrato included),
    over voiced frames inside the notes: how faithfully the voice sings what it is told."""
    from engine.voice.fallback_singer import _pw

    x = audio.samples.astype(np.float64)
    f0, t = _pw().harvest(x, audio.sample_rate, f0_floor=70.0, f0_ceil=1000.0,
                          frame_period=5.0)
    fed = np.interp(t * timing.frame_rate - 0.5, np.arange(timing.n_frames), timing.f0)
    song_t = t + audio.start_seconds
    inside = np.zeros_like(t, dtype=bool)
    for syl in plan.syllables:
        for note in syl.notes:
            inside |= (song_t >= note.start * 60 / tempo + trim) & (
                song_t < note.end * 60 / tempo - trim)
    sel = inside & (f0 > 0)
    return np.abs(1200 * np.log2(f0[sel] / fed[sel]))


def _picture(path: Path, panels: list[tuple[str, np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.4 * len(panels)), sharex=True)
    for ax, (title, mel) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(mel.T, origin="lower", aspect="auto", vmin=-11.5, vmax=2.5, cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel bin")
    np.atleast_1d(axes)[-1].set_xlabel("frame (11.6 ms)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def evaluate(bank: Path, heldout: Path, *, steps: int = 10, pictures: Path | None = None,
             threads: int | None = None, n_pictures: int = 3) -> dict[str, Any]:
    """The card's numbers on the held-out phrases (see the module notes)."""
    from engine.voice.diffsinger import DiffSingerRunner, RenderSettings
    from engine.voice.fallback_singer import FallbackSinger
    from engine.voice.timing import TimingSettings

    bench = _bench()
    items = [it for path in sorted(Path(heldout).glob("*.npz")) for it in vd.read_shard(path)]
    if not items:
        raise FileNotFoundError(f"{heldout}: no held-out shard; run "
                                f"python -m export.train_voice data first")
    ours = DiffSingerRunner(bank, RenderSettings(steps=steps), threads=threads)
    flat = DiffSingerRunner(bank, RenderSettings(steps=steps, timing=TimingSettings(
        vibrato_cents=0.0)), threads=threads)
    fallback = FallbackSinger()
    depth = ours._depth(steps) if "depth" in ours.acoustic else None
    ours.render(items[0].plan, items[0].tempo)  # warm-up
    fallback.render(items[0].plan, items[0].tempo)
    rows = []
    pooled: dict[str, list[np.ndarray]] = {"ours": [], "fallback": [], "ours_no_vibrato": []}
    tracking: list[np.ndarray] = []
    l1 = {"default": [], "coarse": [], "resynth": [], "end_to_end": []}
    for i, it in enumerate(items):
        row: dict[str, Any] = {"text": it.plan.text, "tempo": it.tempo}
        for name, singer in (("ours", ours), ("fallback", fallback), ("ours_no_vibrato", flat)):
            t = time.perf_counter()
            audio = singer.render(it.plan, it.tempo)
            dt = time.perf_counter() - t
            errs = bench.cents_errors(audio, it.plan, it.tempo)
            pooled[name].append(errs)
            row[f"{name}_rtf"] = dt / audio.duration
            row[f"{name}_cents_median"] = float(np.median(errs)) if len(errs) else None
            row[f"{name}_voiced_frames"] = int(len(errs))
            if name == "ours":
                our_audio = audio
                tracking.append(_tracking_cents(bench, audio, ours.prepare(it.plan, it.tempo),
                                                it.plan, it.tempo))
        feeds = {"tokens": it.tokens[None], "durations": it.durations[None], "f0": it.f0[None],
                 "steps": np.array(steps, np.int64)}
        mel = ours.acoustic.run({**feeds, "depth": depth})["mel"][0]
        coarse = ours.acoustic.run({**feeds, "depth": np.array(0.0, np.float32)})["mel"][0]
        resynth = ours.vocoder.run({"mel": it.mel[None], "f0": it.f0_sung[None]})["waveform"]
        wave = ours.vocoder.run({"mel": mel[None], "f0": it.f0[None]})["waveform"]
        l1["default"].append(float(np.abs(mel - it.mel).mean()))
        l1["coarse"].append(float(np.abs(coarse - it.mel).mean()))
        l1["resynth"].append(float(np.abs(vd.log_mel(resynth.reshape(-1)) - it.mel).mean()))
        l1["end_to_end"].append(float(np.abs(vd.log_mel(wave.reshape(-1)) - it.mel).mean()))
        row["mel_l1"] = l1["default"][-1]
        rows.append(row)
        if pictures is not None and i < n_pictures:
            _picture(pictures / f"heldout-{i:02d}.png", [
                (f"teacher (fallback singer): {it.plan.text!r}", it.mel),
                (f"ours, acoustic model (steps {steps}, depth {float(depth or 0):.2f})", mel),
                ("ours, acoustic coarse head only (depth 0)", coarse),
                ("ours, sung through the runner (mel of the vocoder's audio)",
                 vd.log_mel(our_audio.samples[:len(it.audio)]
                            if len(our_audio.samples) >= len(it.audio)
                            else np.pad(our_audio.samples,
                                        (0, len(it.audio) - len(our_audio.samples))))),
                ("vocoder alone on the teacher's mel", vd.log_mel(resynth.reshape(-1)))])
            import soundfile as sf

            sf.write(pictures / f"heldout-{i:02d}-ours.wav", our_audio.samples, 44100)
            sf.write(pictures / f"heldout-{i:02d}-teacher.wav", it.audio, 44100)
    out: dict[str, Any] = {"phrases": rows, "n_phrases": len(items), "steps": steps,
                           "depth": None if depth is None else float(depth)}
    out["ours_tracking_cents_pooled_median"] = float(np.median(np.concatenate(tracking)))
    for name in ("ours", "fallback", "ours_no_vibrato"):
        errs = np.concatenate(pooled[name])
        out[f"{name}_cents_pooled_median"] = float(np.median(errs))
        out[f"{name}_cents_pooled_p90"] = float(np.percentile(errs, 90))
        out[f"{name}_cents_phrase_median_of_medians"] = float(statistics.median(
            r[f"{name}_cents_median"] for r in rows if r[f"{name}_cents_median"] is not None))
        out[f"{name}_voiced_frames"] = int(len(errs))
        out[f"{name}_rtf_median"] = float(statistics.median(r[f"{name}_rtf"] for r in rows))
        out[f"{name}_rtf_max"] = float(max(r[f"{name}_rtf"] for r in rows))
    out["mel_l1"] = {k: float(np.mean(v)) for k, v in l1.items()}
    return out
