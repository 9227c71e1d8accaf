"""The ``encore`` command.

    encore render [-o DIR] [--bars N] [--seed S] [--bpm BPM] [--model NAME|PATH] ...
    encore convert magenta-js CHECKPOINT_DIR OUT [--name NAME]
    encore train musicvae --out DIR [--preset mel_2bar|trio_4bar] [--midi-dir DIR] ...
    encore export musicvae CHECKPOINT.pt OUT_DIR

``render`` needs only the runtime (numpy, onnxruntime, mido). ``convert``, ``train`` and
``export`` load the PyTorch code in ``export/`` on first use and say how to install it when
it is missing. Errors print ``encore: error: ...`` and exit with status 2, as argparse does
for a bad argument; :func:`main` returns 0 on success.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

EXPORT_EXTRA_MESSAGE = "the converter needs the export extra: pip install -e '.[export]'"
_EXPORT_EXTRA_MODULES = {"torch", "onnx", "music21", "tqdm"}


class _ExportExtraMissingError(Exception):
    pass


def _import_export(module: str):
    """Import a module of ``export/`` (PyTorch), or raise _ExportExtraMissingError without torch."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] in _EXPORT_EXTRA_MODULES:
            raise _ExportExtraMissingError from err
        raise


# ---- argument types -------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"must be in 0..10 (0 = argmax), got {text}")
    return value


# ---- render ---------------------------------------------------------------------------
def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation from ``a`` (t = 0) to ``b`` (t = 1)."""
    cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)
    omega = math.acos(float(np.clip(cos, -1.0, 1.0)))
    if math.sin(omega) < 1e-6:
        return ((1.0 - t) * a + t * b).astype(np.float32)
    s = math.sin(omega)
    return (math.sin((1.0 - t) * omega) / s * a + math.sin(t * omega) / s * b).astype(np.float32)


def simple_latent_walk(z_size: int, n_segments: int, rng: np.random.Generator,
                       segments_per_leg: int = 4) -> np.ndarray:
    """(n_segments, Z): a slerp through prior samples, a new one every ``segments_per_leg``.

    A stand-in for the song conductor's walker, enough to hear a model.
    """
    legs = math.ceil(n_segments / segments_per_leg)
    anchors = rng.standard_normal((legs + 1, z_size)).astype(np.float32)
    return np.stack([slerp(anchors[i // segments_per_leg], anchors[i // segments_per_leg + 1],
                           (i % segments_per_leg) / segments_per_leg)
                     for i in range(n_segments)])


def render_latent_walk(out_dir: Path, *, bars: int, seed: int, bpm: float, model: str,
                       model_dir: Path | None, temperature: float, threads: int = 1) -> Path:
    """Decode ``bars`` bars along :func:`simple_latent_walk` and write ``out_dir/song.mid``."""
    from engine.music.midi_io import write_midi
    from engine.music.musicvae_runner import load_model
    from engine.music.notes import join_bars

    runner = load_model(model, model_dir=model_dir, threads=threads)
    rng = np.random.default_rng(seed)
    n_segments = math.ceil(bars / runner.bars)
    zs = simple_latent_walk(runner.z_size, n_segments, rng)  # (S, Z)
    decoded = []
    for start in range(0, n_segments, 16):  # bounded batches: noise is (B, T, D)
        decoded += runner.decode(zs[start:start + 16], temperature,
                                 seed=int(rng.integers(2**31)))
    decoded = decoded[:bars]
    parts = {part: join_bars([bar.notes(part) for bar in decoded]) for part in runner.parts}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "song.mid"
    write_midi(path, parts, bpm=bpm)
    counts = ", ".join(f"{len(notes)} {part}" for part, notes in parts.items())
    print(f"wrote {path}: {bars} bars at {bpm:g} bpm ({counts} notes) from {runner.name} "
          f"({runner.decoder_path}), temperature {temperature:g}, seed {seed}")
    print(f"onnxruntime provider: {runner.provider}")
    return path


def _cmd_render(args: argparse.Namespace) -> None:
    render_latent_walk(args.out, bars=args.bars, seed=args.seed, bpm=args.bpm, model=args.model,
                       model_dir=args.model_dir, temperature=args.temperature,
                       threads=args.threads)


# ---- PyTorch side (export extra) --------------------------------------------------------
def _cmd_convert_magenta_js(args: argparse.Namespace) -> None:
    convert = _import_export("export.convert_magenta_js").convert
    for path in convert(args.checkpoint_dir, args.out, name=args.name):
        print(f"wrote {path}")


def _cmd_train_musicvae(args: argparse.Namespace) -> None:
    train_main = _import_export("export.train_musicvae").main
    program, sys.argv[0] = sys.argv[0], "encore train musicvae"  # its argparse prog (help)
    try:
        train_main(list(args.train_args))
    finally:
        sys.argv[0] = program


def _cmd_export_musicvae(args: argparse.Namespace) -> None:
    if not args.checkpoint.is_file():
        raise FileNotFoundError(f"{args.checkpoint}: no such checkpoint; train one with "
                                "`encore train musicvae --out DIR` (DIR/last.pt)")
    load_checkpoint = _import_export("export.musicvae").load_checkpoint
    export_all = _import_export("export.musicvae_onnx").export_all
    model, _ = load_checkpoint(args.checkpoint)
    for path in export_all(model, args.out_dir):
        print(f"wrote {path}")


# ---- the parser ----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="encore",
                                     description="Encore: a generative music engine.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    render = commands.add_parser(
        "render", help="render a song offline to DIR/song.mid",
        description="Decode N bars from a MusicVAE along a seeded latent walk (a slerp "
                    "between prior samples) and write DIR/song.mid.")
    render.add_argument("-o", "--out", type=Path, default=Path("."), metavar="DIR",
                        help="output folder (default: the current one)")
    render.add_argument("--bars", type=_positive_int, default=32, help="bars (default 32)")
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--bpm", type=_positive_float, default=120.0)
    render.add_argument("--model", default="trio_4bar",
                        help="model name (NAME.decoder.onnx in --model-dir, $ENCORE_MODELS or "
                             "models_onnx/) or a path to a .decoder.onnx (default trio_4bar)")
    render.add_argument("--model-dir", type=Path, metavar="DIR",
                        help="look for models here first")
    render.add_argument("--temperature", type=_temperature, default=0.5,
                        help="sampling temperature, 0 = argmax (default 0.5)")
    render.add_argument("--threads", type=_positive_int, default=1,
                        help="ONNX Runtime intra-op threads (default 1)")
    render.set_defaults(func=_cmd_render)

    convert = commands.add_parser("convert", help="convert weights you bring to Encore models")
    convert_kinds = convert.add_subparsers(dest="kind", metavar="KIND", required=True)
    magenta = convert_kinds.add_parser(
        "magenta-js", help="a magenta.js MusicVAE checkpoint folder -> ONNX models",
        description="Convert a magenta.js MusicVAE checkpoint (weights_manifest.json and "
                    "its shards) into Encore ONNX models.")
    magenta.add_argument("checkpoint_dir", type=Path, metavar="DIR")
    magenta.add_argument("out", type=Path, metavar="OUT")
    magenta.add_argument("--name", help="model name (default: the folder's name)")
    magenta.set_defaults(func=_cmd_convert_magenta_js)

    train = commands.add_parser("train", help="train a model (needs the export extra)")
    train_kinds = train.add_subparsers(dest="kind", metavar="KIND", required=True)
    train_kinds.add_parser(
        "musicvae", add_help=False,
        help="train a MusicVAE: --out DIR [--preset mel_2bar|trio_4bar] [--midi-dir DIR] "
             "[--init CKPT.pt] [--minutes M]; --init takes a .pt training checkpoint "
             "(e.g. runs/trio_4bar/last.pt), not a shipped ONNX model; "
             "`encore train musicvae --help` lists every option",
    ).set_defaults(func=_cmd_train_musicvae, passes_through=True)

    export = commands.add_parser("export", help="export a trained checkpoint to ONNX")
    export_kinds = export.add_subparsers(dest="kind", metavar="KIND", required=True)
    musicvae = export_kinds.add_parser(
        "musicvae", help="CKPT.pt -> OUT_DIR/<name>.{encoder,decoder}.onnx",
        description="Export a MusicVAE training checkpoint (.pt) to ONNX encoder and "
                    "decoder graphs with Encore metadata.")
    musicvae.add_argument("checkpoint", type=Path, metavar="CKPT")
    musicvae.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    musicvae.set_defaults(func=_cmd_export_musicvae)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``encore``; returns 0, or raises SystemExit(2) with a message on an error."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passes_through", False):
        args.train_args = rest
    elif rest:
        parser.error(f"unrecognized arguments for `encore {args.command}`: {' '.join(rest)} "
                     f"(see `encore {args.command} --help`)")
    try:
        args.func(args)
    except _ExportExtraMissingError:
        parser.exit(2, f"{EXPORT_EXTRA_MESSAGE}\n")
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"encore: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
