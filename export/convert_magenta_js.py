"""Convert a magenta.js MusicVAE checkpoint folder into an Encore MusicVAE (``.pt`` + ONNX).

    encore convert magenta-js DIR OUT [--name NAME]

A magenta.js checkpoint is a folder with ``config.json`` (``{"type": "MusicVAE",
"dataConverter": {"type": ..., "args": {...}}}``) and ``weights_manifest.json``, which lists
groups of shard files and, per weight, its TF variable name, shape, dtype and optional
quantization. Each group's shards are concatenated and its weights read back to back in
manifest order (what ``tf.io.loadWeights`` does).

Supported layouts (exactly what magenta.js itself builds, plus the Python hierdec encoders):

- data converters: ``MelodyConverter`` (pitches 21..108, 90 classes), ``DrumsConverter`` and
  ``DrumsOneHotConverter`` (9 drum classes, 512 one-hot outputs), ``TrioConverter``
  (melody, bass, drums). ``DrumsConverter``'s encoder reads a 10-column drum roll (9 drums +
  "no drum"); the roll is a linear function of the 512-class one-hot, so its first-layer
  input weights are folded exactly into a one-hot encoder.
- flat decoders (``decoder/multi_rnn_cell/cell_N/lstm_cell``) and hierarchical ones (conductor
  ``decoder/hierarchical_level_0/...``, cores ``core_decoder/decoder/...`` or
  ``core_decoder/core_decoder_{0,1,2}/decoder/...`` for the trio).
- flat bidirectional encoders of any depth (``encoder/cell_N/bidirectional_rnn/{fw,bw}/...``).
  magenta.js's hierarchical encoders (``encoder/hierarchical_level_N/...``) have no
  counterpart in our model: the decoder is converted, the encoder skipped with a warning,
  and only the decoder graph is exported.

TF LSTM cells (``LSTMBlockCell``/``basicLSTMCell``): kernel ``[in + H, 4H]`` with rows
``[x; h]`` and gate blocks i, j, f, o; a forget bias of +1.0 is added at run time. They become
torch ``nn.LSTM`` weights with gates i, f, g, o, the bias (+1.0 on f) in ``bias_ih`` and zeros
in ``bias_hh``. Dense kernels ``[in, out]`` become ``nn.Linear`` weights ``[out, in]``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.music.encoding import (
    DRUM_CLASSES,
    DRUM_PITCHES,
    MELODY_MAX_PITCH,
    MELODY_MIN_PITCH,
    PART_DEPTHS,
)
from engine.output_files import staged
from engine.untrusted import (
    MiB,
    UntrustedFileError,
    check_file,
    excerpt,
    parse_json,
    read_bytes,
    read_text,
)

if TYPE_CHECKING:
    from export.musicvae import MusicVAE
# torch (and the model code) are imported when the checkpoint has been read: a folder that
# cannot be converted is refused in milliseconds, not after seconds of imports

StrPath = str | os.PathLike[str]

CONFIG_FILE = "config.json"
MANIFEST_FILE = "weights_manifest.json"
FORGET_BIAS = 1.0
STEPS_PER_BAR = 16
DRUM_ROLL_DEPTH = len(DRUM_PITCHES) + 1  # 9 drums + a final "no drum" column

_DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4"), "bool": np.dtype("?")}
_QUANT_DTYPES = {"uint8": np.dtype("u1"), "uint16": np.dtype("<u2"), "float16": np.dtype("<f2")}
_SUPPORTED_CONVERTERS = ("MelodyConverter", "DrumsConverter", "DrumsOneHotConverter",
                         "TrioConverter")
_PART_SETS = {"MelodyConverter": ("melody",), "DrumsConverter": ("drums",),
              "DrumsOneHotConverter": ("drums",), "TrioConverter": ("melody", "bass", "drums")}
_CONDUCTOR = "decoder/hierarchical_level_0/"
_ENC_CELL = "encoder/cell_{layer}/bidirectional_rnn/{direction}/multi_rnn_cell/cell_0/lstm_cell/"
_IGNORED = re.compile(r"(^|/)(Adam(_\d+)?|beta\d_power|global_step|Momentum|RMSProp)($|/)")


# ---- reading the folder ---------------------------------------------------------------

def _load_json(path: Path, what: str) -> object:
    if not path.exists():
        raise ValueError(f"{path}: missing {what}; point the converter at the magenta.js "
                         f"checkpoint folder (the one holding {CONFIG_FILE} and {MANIFEST_FILE})")
    fix = "re-download the checkpoint folder"
    try:
        return parse_json(read_text(path, MAX_JSON_BYTES, fix), path, fix)
    except UntrustedFileError as err:
        raise UntrustedFileError(path, f"unreadable {what} ({err.what})", fix) from None


def _short_shard(paths: list[str], sizes: list[int]) -> str:
    """The shard that most likely lost bytes: an inner shard smaller than its peers, else
    the last one (tfjs writes equal-size shards and a shorter last one)."""
    inner = sizes[:-1]
    if inner:
        full = max(inner)
        for path, size in zip(paths, inner, strict=False):
            if size < full:
                return path
    return paths[-1]


def _decode_weight(raw: bytes | memoryview, spec: dict) -> np.ndarray:
    shape = tuple(int(d) for d in spec["shape"])
    quant = spec.get("quantization")
    count = math.prod(shape)
    if quant:
        qdtype = _QUANT_DTYPES[quant["dtype"]]
        values = np.frombuffer(raw, dtype=qdtype, count=count)
        if quant["dtype"] == "float16":
            out = values.astype(np.float32)
        else:  # affine: value = q * scale + min, computed as tfjs does (double, then float32)
            out = (values.astype(np.float64) * float(quant["scale"]) + float(quant["min"])
                   ).astype(np.float32)
    else:
        out = np.frombuffer(raw, dtype=_DTYPES[spec["dtype"]], count=count).copy()
    return out.reshape(shape)


def _weight_nbytes(spec: dict, where: str) -> int:
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: weight entry {excerpt(spec)} is not an object with name, shape "
                         "and dtype; the manifest is damaged, re-download it")
    name = spec.get("name")
    try:
        shape = [int(d) for d in spec["shape"]]
        dtype = spec["dtype"]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: weight entry {excerpt(spec)} lacks a valid name/shape/"
                         f"dtype ({excerpt(str(err))}); the manifest is damaged, re-download "
                         "it") from err
    if not isinstance(name, str) or not isinstance(dtype, str) or any(d < 0 for d in shape):
        raise ValueError(f"{where}: weight entry {excerpt(spec)} has no name, no dtype name or a "
                         "negative dimension; the manifest is damaged, re-download it")
    quant = spec.get("quantization")
    if quant:
        qdtype = quant.get("dtype") if isinstance(quant, dict) else None
        if not isinstance(qdtype, str) or qdtype not in _QUANT_DTYPES:
            raise ValueError(f"{where}: weight '{name}' uses quantization dtype {qdtype!r}; "
                             f"supported: {sorted(_QUANT_DTYPES)}. Re-export the checkpoint "
                             "unquantized or with uint8/uint16/float16 quantization")
        if qdtype != "float16" and not all(
                isinstance(quant.get(k), int | float) and not isinstance(quant.get(k), bool)
                for k in ("scale", "min")):
            raise ValueError(f"{where}: weight '{name}' has {qdtype} quantization without "
                             "numbers for scale and min; the manifest is damaged, re-download "
                             "it")
        return math.prod(shape) * _QUANT_DTYPES[qdtype].itemsize
    if dtype not in _DTYPES:
        raise ValueError(f"{where}: weight '{name}' has dtype {dtype!r}; supported: "
                         f"{sorted(_DTYPES)}. This is not a MusicVAE checkpoint this converter "
                         "can read")
    return math.prod(shape) * _DTYPES[dtype].itemsize


def _shard_file(folder: Path, name: str, manifest_path: Path, index: int) -> Path:
    """The shard ``name`` listed in group ``index`` of the manifest, as the real path of a
    file inside ``folder``.

    tfjs names shards relative to the manifest (``"group1-shard1of1"``). A name that leads
    out of the folder (``../../etc/passwd``, an absolute path, or a symlink whose target is
    elsewhere) is refused with ValueError before anything is read: a downloaded checkpoint
    must not make the converter read other files of this computer.
    """
    where = f"{manifest_path} group {index}"
    fix = (f"A magenta.js manifest names its shards by file name: put the shard files in "
           f"{folder} beside {MANIFEST_FILE} and list them by name (e.g. "
           '"group1-shard1of1"), or re-download the checkpoint')
    try:
        root = folder.resolve(strict=True)
        real = (folder / name).resolve()
    except (OSError, RuntimeError, ValueError) as err:  # a symlink loop, a NUL in the name
        raise ValueError(f"{where}: shard path {name!r} cannot be followed ({err}). {fix}"
                         ) from err
    if real != root and real.is_relative_to(root):
        return real
    if real == root:
        problem = "names the checkpoint folder itself, not a shard file"
    elif Path(name).is_absolute():
        problem = f"is an absolute path, to {real}, outside the checkpoint folder {root}"
    elif ".." in Path(name).parts:
        problem = f"climbs out with .. to {real}, outside the checkpoint folder {root}"
    else:
        problem = f"goes through a symlink to {real}, outside the checkpoint folder {root}"
    raise ValueError(f"{where}: shard path {name!r} {problem}; refused, a checkpoint may only "
                     f"read its own files. {fix}")


def read_checkpoint(dir: StrPath) -> tuple[dict, dict[str, np.ndarray]]:  # noqa: A002
    """Read a magenta.js checkpoint folder -> (config.json as a dict, {TF name: array}).

    Float weights come back as float32 (quantized ones dequantized as ``q * scale + min``,
    float16 ones widened). Raises ValueError naming the file or weight at fault when a file
    is missing, a shard path in the manifest leads outside the folder, or the shard sizes
    disagree with the manifest's shapes.
    """
    folder = Path(dir)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder; pass the magenta.js checkpoint folder "
                         f"(with {CONFIG_FILE}, {MANIFEST_FILE} and the shard files)")
    config = _load_json(folder / CONFIG_FILE, "config.json (the model spec)")
    if not isinstance(config, dict):
        raise ValueError(f"{folder / CONFIG_FILE}: expected a JSON object like "
                         '{"type": "MusicVAE", "dataConverter": {...}}')
    manifest_path = folder / MANIFEST_FILE
    manifest = _load_json(manifest_path, "weights_manifest.json (the weight index)")
    if not isinstance(manifest, list) or not all(
            isinstance(g, dict) and isinstance(g.get("paths"), list)
            and all(isinstance(p, str) for p in g["paths"])
            and isinstance(g.get("weights"), list) for g in manifest):
        raise ValueError(f"{manifest_path}: expected a list of groups, each "
                         '{"paths": ["shard file", ...], "weights": [...]}; re-download the '
                         "checkpoint")
    shards = {(index, p): _shard_file(folder, p, manifest_path, index)
              for index, g in enumerate(manifest) for p in g["paths"]}
    missing = [p for (_, p), path in shards.items() if not path.exists()]
    if missing:
        raise ValueError(f"{folder}: shard files listed in {MANIFEST_FILE} are missing: "
                         f"{excerpt(missing, 200)}; download them into the folder beside "
                         f"{MANIFEST_FILE}")
    needs = [[_weight_nbytes(spec, f"{manifest_path} group {index}") for spec in g["weights"]]
             for index, g in enumerate(manifest)]
    if sum(map(sum, needs)) > MAX_CHECKPOINT_BYTES:
        raise UntrustedFileError(manifest_path, f"its weights take {sum(map(sum, needs)):,} "
                                 f"bytes, more than the {MAX_CHECKPOINT_BYTES >> 20} MiB of any "
                                 "MusicVAE checkpoint", "re-download the checkpoint folder")
    weights: dict[str, np.ndarray] = {}
    for index, group in enumerate(manifest):
        paths = [str(p) for p in group["paths"]]
        where = f"{manifest_path} group {index}"
        sizes_needed = needs[index]
        need = sum(sizes_needed)
        # each shard is checked (a regular file: no FIFO, no device) and sized before any
        # is read; together they must hold exactly what the manifest's weights take
        sizes = [check_file(shards[index, p], "re-download the checkpoint folder").st_size
                 for p in paths]
        if need > sum(sizes):
            _truncated(folder, paths, sizes, group["weights"], sizes_needed, index)
        if need < sum(sizes):
            raise ValueError(
                f"{where}: shards {excerpt(paths, 200)} hold {sum(sizes)} bytes but the "
                f"manifest's weights take {need}; the shard sizes disagree with the shapes "
                "(shards from another export, or a wrong file). Re-download the checkpoint "
                "folder")
        data = b"".join(read_bytes(shards[index, p], size, "re-download the checkpoint folder")
                        for p, size in zip(paths, sizes, strict=True))
        if len(data) != need:  # a shard changed size while it was read
            raise ValueError(f"{where}: shards {excerpt(paths, 200)} changed while they were read; "
                             "convert again once the download has finished")
        view, offset = memoryview(data), 0  # weights are views of the shards, not copies
        for spec, nbytes in zip(group["weights"], sizes_needed, strict=True):
            name = spec["name"]
            if name in weights:
                raise ValueError(f"{where}: weight '{name}' is listed twice; the manifest is "
                                 "damaged, re-download it")
            weights[name] = _decode_weight(view[offset:offset + nbytes], spec)
            offset += nbytes
    return config, weights


def _truncated(folder: Path, paths: list[str], sizes: list[int], specs: list[dict],
               sizes_needed: list[int], index: int) -> None:
    """Raise the error for a group whose shards hold fewer bytes than its weights take."""
    have, need = sum(sizes), sum(sizes_needed)
    if not paths:
        raise ValueError(f"{folder / MANIFEST_FILE} group {index}: weights of {need} bytes but "
                         "no shard files listed; the manifest is damaged, re-download it")
    ends = np.cumsum(sizes_needed)
    first = int(np.argmax(ends > have))  # the first weight running past the end
    spec, nbytes = specs[first], sizes_needed[first]
    offset = int(ends[first]) - nbytes
    shard = _short_shard(paths, sizes)
    raise ValueError(
        f"{folder / shard}: shard looks truncated: weight {excerpt(spec['name'])} (shape "
        f"{excerpt(spec['shape'])}) needs bytes {offset}..{offset + nbytes} of group {index}'s "
        f"shards {excerpt(paths, 200)}, which hold {have} bytes in all (the group needs "
        f"{need}). Re-download {shard} (or the whole checkpoint folder); the manifest "
        "and the shards must come from the same export")


# ---- config -----------------------------------------------------------------------------

def _check_args_object(args: object, what: str) -> None:
    if not isinstance(args, dict):
        raise ValueError(f"config.json: {what} args are {args!r}, not an object like "
                         '{"numSteps": 32, ...}; the config is damaged, re-download it')


def _check_melody_args(args: dict, what: str) -> None:
    _check_args_object(args, what)
    lo, hi = args.get("minPitch"), args.get("maxPitch")
    if (lo, hi) != (MELODY_MIN_PITCH, MELODY_MAX_PITCH):
        raise ValueError(
            f"config.json: {what} has minPitch/maxPitch {lo}/{hi}; Encore's melody encoding "
            f"is fixed at {MELODY_MIN_PITCH}/{MELODY_MAX_PITCH} (90 classes, as in the "
            "mel_2bar/mel_16bar/trio checkpoints). Use a checkpoint trained on that range")


def _check_drum_args(args: dict, what: str) -> None:
    _check_args_object(args, what)
    classes = args.get("pitchClasses")
    if classes is not None and (not isinstance(classes, list)
                                or len(classes) != len(DRUM_PITCHES)):
        count = len(classes) if isinstance(classes, list) else repr(classes)
        raise ValueError(
            f"config.json: {what} has {count} drum pitch classes; Encore's drum "
            f"encoding has {len(DRUM_PITCHES)} (kick, snare, closed hat, open hat, 3 toms, "
            "crash, ride -> 512 classes). Use a checkpoint with the default drum classes")


def _parse_config(config: dict) -> tuple[tuple[str, ...], str, int, int]:
    """-> parts, converter type, numSteps, numSegments (0 when absent)."""
    if not isinstance(config, dict) or config.get("type") != "MusicVAE":
        kind = config.get("type") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"config.json: type is {kind!r}; this converter reads MusicVAE "
                         'checkpoints (config.json {"type": "MusicVAE", ...}). MusicRNN and '
                         "other magenta.js models are not supported")
    if config.get("chordEncoder"):
        raise ValueError(f"config.json: chord-conditioned model (chordEncoder "
                         f"{config['chordEncoder']!r}); Encore's MusicVAE has no chord input. "
                         "Use an unconditioned checkpoint (mel_2bar, drums_2bar, trio_16bar, ...)")
    spec = config.get("dataConverter")
    if not isinstance(spec, dict):
        raise ValueError("config.json: no dataConverter object; expected e.g. "
                         '{"type": "MelodyConverter", "args": {"numSteps": 32, ...}}')
    kind = spec.get("type")
    args = spec.get("args") or {}
    if kind not in _SUPPORTED_CONVERTERS:
        hint = {"DrumRollConverter": " (its decoder emits a 9-drum roll, not 512 classes)",
                "MultitrackConverter": " (multitrack performance events)",
                "GrooveConverter": " (GrooVAE)"}.get(kind, "")
        raise ValueError(f"config.json: dataConverter type {kind!r}{hint} is not supported; "
                         f"supported: {list(_SUPPORTED_CONVERTERS)}")
    _check_args_object(args, f"dataConverter {kind}")
    if kind == "MelodyConverter":
        _check_melody_args(args, "MelodyConverter")
    elif kind in ("DrumsConverter", "DrumsOneHotConverter"):
        _check_drum_args(args, kind)
    else:
        for key, what in (("melArgs", "melody"), ("bassArgs", "bass")):
            _check_melody_args(args.get(key) or {}, f"TrioConverter.{key} ({what})")
        _check_drum_args(args.get("drumsArgs") or {}, "TrioConverter.drumsArgs")
    steps = args.get("numSteps")
    if type(steps) is not int or not 0 < steps <= MAX_STEPS:
        raise ValueError(f"config.json: dataConverter.args.numSteps is {excerpt(steps)}; it "
                         "must be the sequence length in 16th-note steps (e.g. 32 for 2 bars), "
                         f"at most {MAX_STEPS} ({MAX_STEPS // STEPS_PER_BAR} bars)")
    segments = args.get("numSegments") or 0
    if type(segments) is not int or not 0 <= segments <= MAX_STEPS // STEPS_PER_BAR:
        raise ValueError(f"config.json: dataConverter.args.numSegments is {segments!r}; it "
                         "must be the number of conductor steps (bars) of a hierarchical model")
    return _PART_SETS[kind], kind, steps, segments


MAX_STEPS = 512
"""The longest sequence converted: 32 bars (magenta.js models go to 16 bars, 256 steps);
the decoder graph is unrolled step by step, so the graph grows with it."""
MAX_JSON_BYTES = 16 * MiB
MAX_CHECKPOINT_BYTES = 1024 * MiB
"""The most weight bytes a manifest may declare (the largest magenta.js MusicVAE
checkpoints are a few hundred MB); the shard files must then hold exactly that many."""


# ---- weights ----------------------------------------------------------------------------

class _Weights:
    """Name lookup that records what was used and explains what is missing."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights
        self.used: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.weights

    def get(self, name: str, ndim: int) -> np.ndarray:
        if name not in self.weights:
            raise ValueError(f"checkpoint has no weight '{name}'. {self.listing(name)}")
        value = self.weights[name]
        if value.ndim != ndim or value.dtype.kind != "f":
            raise ValueError(f"weight '{name}' has shape {list(value.shape)} and dtype "
                             f"{value.dtype}; expected a {ndim}-d float tensor. The checkpoint "
                             "is not a MusicVAE this converter knows")
        self.used.add(name)
        return value.astype(np.float32)

    def listing(self, near: str = "") -> str:
        scope = near.split("/")[0] if near else ""
        names = sorted(n for n in self.weights if not _IGNORED.search(n))
        close = [n for n in names if scope and n.startswith(scope + "/")] or names
        shown = ", ".join(close[:40]) + (" ..." if len(close) > 40 else "")
        return (f"Names found{' under ' + scope + '/' if close is not names else ''}: "
                f"[{shown}]. Is this a magenta.js MusicVAE checkpoint of a supported layout?")


def _lstm_layers(w: _Weights, prefixes: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) of ``<prefix>cell_N/lstm_cell/`` for N = 0, 1, ... (first prefix found)."""
    for prefix in prefixes:
        layers = []
        while f"{prefix}cell_{len(layers)}/lstm_cell/kernel" in w:
            cell = f"{prefix}cell_{len(layers)}/lstm_cell/"
            layers.append((w.get(cell + "kernel", 2), w.get(cell + "bias", 1)))
        if layers:
            return layers
    tried = ", ".join(f"'{p}cell_0/lstm_cell/kernel'" for p in prefixes)
    raise ValueError(f"checkpoint has no LSTM weights at {tried}. {w.listing(prefixes[0])}")


def _lstm_sizes(layers: list[tuple[np.ndarray, np.ndarray]], what: str) -> tuple[int, int]:
    """-> (hidden size, input size of layer 0); checks every layer's shapes."""
    size = layers[0][1].shape[0] // 4
    for index, (kernel, bias) in enumerate(layers):
        if bias.shape[0] != 4 * size or kernel.shape[1] != 4 * size:
            raise ValueError(f"{what} layer {index}: kernel {list(kernel.shape)} / bias "
                             f"{list(bias.shape)}; every layer must have the same size (4H = "
                             f"{4 * size}) for a torch nn.LSTM stack")
        if index and kernel.shape[0] != 2 * size:
            raise ValueError(f"{what} layer {index}: kernel rows {kernel.shape[0]}, expected "
                             f"{2 * size} (H inputs + H hidden)")
    return size, layers[0][0].shape[0] - size


def _gates_to_torch(block: np.ndarray) -> np.ndarray:
    """Reorder TF gate blocks (i, j, f, o) on the last axis to torch's (i, f, g=j, o)."""
    i, j, f, o = np.split(block, 4, axis=-1)
    return np.concatenate([i, f, j, o], axis=-1)


def _lstm_to_torch(kernel: np.ndarray, bias: np.ndarray, in_size: int, suffix: str,
                   out: dict[str, np.ndarray], prefix: str) -> None:
    """TF kernel [in + H, 4H] / bias [4H] -> torch ``weight_ih``/``weight_hh``/biases."""
    size = bias.shape[0] // 4
    x_rows, h_rows = kernel[:in_size], kernel[in_size:]
    tf_bias = bias.copy()
    tf_bias[2 * size:3 * size] += FORGET_BIAS  # the f block (TF order i, j, f, o)
    out[f"{prefix}weight_ih_{suffix}"] = _gates_to_torch(x_rows).T
    out[f"{prefix}weight_hh_{suffix}"] = _gates_to_torch(h_rows).T
    out[f"{prefix}bias_ih_{suffix}"] = _gates_to_torch(tf_bias)
    out[f"{prefix}bias_hh_{suffix}"] = np.zeros_like(tf_bias)


def _dense(w: _Weights, scope: str, out: dict[str, np.ndarray], prefix: str,
           shape: tuple[int | None, int | None]) -> np.ndarray:
    kernel, bias = w.get(scope + "kernel", 2), w.get(scope + "bias", 1)
    for got, want, axis in ((kernel.shape[0], shape[0], "in"), (kernel.shape[1], shape[1], "out")):
        if want is not None and got != want:
            raise ValueError(f"'{scope}kernel' has shape {list(kernel.shape)}: {axis} size "
                             f"{got}, expected {want}. The checkpoint's layers do not fit "
                             "together as a MusicVAE")
    if bias.shape[0] != kernel.shape[1]:
        raise ValueError(f"'{scope}bias' has {bias.shape[0]} values for a kernel with "
                         f"{kernel.shape[1]} outputs; the checkpoint is damaged")
    out[prefix + "weight"] = kernel.T
    out[prefix + "bias"] = bias
    return kernel


def _core_prefixes(w: _Weights, parts: tuple[str, ...], hierarchical: bool) -> list[str]:
    if not hierarchical:
        expected = ["decoder/"]
    elif len(parts) == 1:
        expected = ["core_decoder/decoder/"]
    else:
        expected = [f"core_decoder/core_decoder_{i}/decoder/" for i in range(len(parts))]
    if all(p + "z_to_initial_state/kernel" in w for p in expected):
        return expected
    # Be lenient about an extra outer scope: find the cores by their initial-state dense.
    found = sorted(n[:-len("z_to_initial_state/kernel")] for n in w.weights
                   if n.endswith("z_to_initial_state/kernel") and "hierarchical_level" not in n)
    if len(parts) > 1:
        numbered = {}
        for prefix in found:
            match = re.search(r"core_decoder_(\d+)/", prefix)
            if match:
                numbered[int(match.group(1))] = prefix
        if sorted(numbered) == list(range(len(parts))):
            return [numbered[i] for i in range(len(parts))]
    elif len(found) == 1:
        return found
    raise ValueError(
        f"expected {len(parts)} core decoder(s) for parts {list(parts)} at "
        f"{[p + 'z_to_initial_state/kernel' for p in expected]}; found initial-state weights "
        f"{[p + 'z_to_initial_state/kernel' for p in found]}. {w.listing('decoder')}")


def _drum_roll_matrix() -> np.ndarray:
    """(10, 512): the drum roll (9 drum bits + "no drum") of each one-hot drum class."""
    classes = np.arange(DRUM_CLASSES)
    bits = (classes[None, :] >> np.arange(len(DRUM_PITCHES))[:, None]) & 1
    return np.concatenate([bits, (classes == 0)[None, :]], axis=0).astype(np.float32)


def _encoder(w: _Weights, parts: tuple[str, ...], z_size: int, out: dict[str, np.ndarray]
             ) -> tuple[int, int, str]:
    """Convert a flat BiLSTM encoder into ``out``. -> (enc_size, enc_layers, note); (0, 0,
    reason) when it has to be skipped."""
    if any(n.startswith("encoder/hierarchical_level_") for n in w.weights):
        return 0, 0, ("magenta.js hierarchical encoder (encoder/hierarchical_level_N/...); "
                      "Encore's MusicVAE has a flat BiLSTM encoder only")
    layers: list[tuple[tuple[np.ndarray, np.ndarray], ...]] = []
    while _ENC_CELL.format(layer=len(layers), direction="fw") + "kernel" in w:
        layer = len(layers)
        pair = []
        for direction in ("fw", "bw"):
            cell = _ENC_CELL.format(layer=layer, direction=direction)
            pair.append((w.get(cell + "kernel", 2), w.get(cell + "bias", 1)))
        layers.append(tuple(pair))
    if not layers:
        return 0, 0, ("no encoder weights at '" + _ENC_CELL.format(layer=0, direction="fw")
                      + "kernel'")
    depth = sum(PART_DEPTHS[p] for p in parts)
    sizes = {bias.shape[0] // 4 for layer in layers for _, bias in layer}
    if len(sizes) != 1:
        return 0, 0, (f"encoder layers have different sizes {sorted(sizes)}; a torch "
                      "nn.LSTM stack needs one size")
    size = sizes.pop()
    note = "converted"
    for layer, pair in enumerate(layers):
        for (kernel, bias), suffix in zip(pair, ("", "_reverse"), strict=True):
            in_size = kernel.shape[0] - size
            what = f"encoder layer {layer} ({'bw' if suffix else 'fw'})"
            if kernel.shape[1] != 4 * size or bias.shape[0] != 4 * size:
                raise ValueError(f"{what}: kernel {list(kernel.shape)} / bias "
                                 f"{list(bias.shape)} do not agree (expected 4H = {4 * size})")
            if layer == 0 and in_size == DRUM_ROLL_DEPTH and parts == ("drums",):
                # DrumsConverter feeds the encoder a drum roll; fold roll = M @ one-hot.
                kernel = np.concatenate([_drum_roll_matrix().T @ kernel[:in_size],
                                         kernel[in_size:]], axis=0)
                in_size = DRUM_CLASSES
                note = "converted (drum-roll input folded into one-hot input weights)"
            want = depth if layer == 0 else 2 * size
            source = f"one-hot of {list(parts)}" if layer == 0 else "fw + bw outputs"
            if in_size != want:
                raise ValueError(f"{what}: kernel {list(kernel.shape)} implies {in_size} "
                                 f"inputs, expected {want} ({source}). The checkpoint's data "
                                 "converter does not match its weights")
            _lstm_to_torch(kernel, bias, in_size, f"l{layer}{suffix}", out, "encoder.rnn.")
    _dense(w, "encoder/mu/", out, "encoder.mu.", (2 * size, z_size))
    if "encoder/sigma/kernel" in w:
        _dense(w, "encoder/sigma/", out, "encoder.sigma.", (2 * size, z_size))
    else:
        warnings.warn("checkpoint has no encoder/sigma (magenta.js encodes to mu only); "
                      "sigma is set to 1 (the prior) for every input", UserWarning, stacklevel=3)
        out["encoder.sigma.weight"] = np.zeros((z_size, 2 * size), np.float32)
        out["encoder.sigma.bias"] = np.full(z_size, math.log(math.expm1(1.0)), np.float32)
        note += "; sigma missing, set to 1"
    return size, len(layers), note


def to_musicvae(config_json: dict, weights: dict[str, np.ndarray], name: str = "magenta_js"
                ) -> MusicVAE:
    """Build our MusicVAE from a magenta.js ``config.json`` dict and its TF-named weights.

    Sizes come from the weight shapes; the decoder is hierarchical when the checkpoint has
    ``decoder/hierarchical_level_0/...`` weights. ``model.cfg.extra["encoder"]`` says whether
    the encoder was converted ("converted...") or skipped ("skipped: ..."; its weights are
    zeros and must not be used). Raises ValueError for unsupported or inconsistent layouts.
    """
    parts, converter, num_steps, num_segments = _parse_config(config_json)
    w = _Weights(weights)
    if any(n.startswith("decoder/hierarchical_level_1/") for n in weights):
        raise ValueError("checkpoint has two conductor levels (decoder/hierarchical_level_1/); "
                         "Encore's MusicVAE has one conductor. Use a one-level hierdec model")
    hierarchical = any(n.startswith(_CONDUCTOR) for n in weights)
    if hierarchical != bool(num_segments):
        raise ValueError(
            f"config.json's dataConverter.args.numSegments is {num_segments or 'absent'} but "
            f"the weights {'have' if hierarchical else 'have no'} conductor "
            f"({_CONDUCTOR}...); set numSegments to the number of bars for a hierarchical "
            "model and leave it out for a flat one")
    if not hierarchical and len(parts) > 1:
        raise ValueError(f"{converter} needs a hierarchical decoder (one core per part) but the "
                         f"checkpoint has no {_CONDUCTOR}... weights")
    if hierarchical:
        if num_steps % num_segments:
            raise ValueError(f"config.json: numSteps {num_steps} is not a multiple of "
                             f"numSegments {num_segments}")
        bars, steps_per_bar = num_segments, num_steps // num_segments
        if steps_per_bar != STEPS_PER_BAR:
            warnings.warn(f"conductor segments are {steps_per_bar} steps long, not one 4/4 bar "
                          f"({STEPS_PER_BAR}); the model is converted as {bars} 'bars' of "
                          f"{steps_per_bar} steps", UserWarning, stacklevel=2)
    else:
        if num_steps % STEPS_PER_BAR:
            raise ValueError(f"config.json: numSteps {num_steps} is not a whole number of "
                             f"{STEPS_PER_BAR}-step bars; Encore models are whole bars")
        bars, steps_per_bar = num_steps // STEPS_PER_BAR, STEPS_PER_BAR

    sd: dict[str, np.ndarray] = {}
    # Core decoders.
    cores = []
    for index, (part, prefix) in enumerate(zip(parts, _core_prefixes(w, parts, hierarchical),
                                               strict=True)):
        if prefix + "nade/w_enc" in w:
            raise ValueError(f"'{prefix}nade/...': the decoder has a NADE output (drum-roll "
                             "model); Encore decodes 512-class one-hot drums only")
        layers = _lstm_layers(w, [prefix + "multi_rnn_cell/", prefix])
        size, in_size = _lstm_sizes(layers, f"core decoder '{prefix}'")
        depth = PART_DEPTHS[part]
        out_kernel = w.get(prefix + "output_projection/kernel", 2)
        if out_kernel.shape[1] != depth:
            raise ValueError(f"'{prefix}output_projection/kernel' has {out_kernel.shape[1]} "
                             f"outputs; the {part} part has {depth} classes. Roll/NADE outputs "
                             "and other encodings are not supported")
        cond = w.get(prefix + "z_to_initial_state/kernel", 2).shape[0]
        if in_size != depth + cond:
            raise ValueError(f"core decoder '{prefix}' layer 0 takes {in_size} inputs; "
                             f"expected {depth} ({part} one-hot) + {cond} (z or conductor "
                             "output). Control inputs (chords) are not supported")
        core = f"cores.{index}."
        _dense(w, prefix + "z_to_initial_state/", sd, core + "z_to_initial_state.",
               (cond, 2 * size * len(layers)))
        _dense(w, prefix + "output_projection/", sd, core + "output_projection.", (size, depth))
        for layer, (kernel, bias) in enumerate(layers):
            _lstm_to_torch(kernel, bias, kernel.shape[0] - size, f"l{layer}", sd, core + "rnn.")
        cores.append((size, len(layers), cond))
    if len(set(cores)) != 1:
        raise ValueError(f"core decoders differ in (size, layers, cond) {cores}; Encore's "
                         "MusicVAE shares one core shape across parts")
    dec_size, dec_layers, cond = cores[0]

    # Conductor.
    conductor_size = conductor_layers = 0
    if hierarchical:
        layers = _lstm_layers(w, [_CONDUCTOR, _CONDUCTOR + "multi_rnn_cell/"])
        conductor_size, cond_in = _lstm_sizes(layers, "conductor")
        conductor_layers = len(layers)
        if conductor_size != cond:
            raise ValueError(f"conductor size {conductor_size} differs from the core decoders' "
                             f"conditioning size {cond}; the checkpoint's parts do not fit")
        init = _dense(w, _CONDUCTOR + "initial_state/", sd, "conductor_initial_state.",
                      (None, 2 * conductor_size * conductor_layers))
        z_size = init.shape[0]
        for layer, (kernel, bias) in enumerate(layers):
            in_size = kernel.shape[0] - conductor_size
            _lstm_to_torch(kernel, bias, in_size, f"l{layer}", sd, "conductor.")
        # The conductor's input is always zeros: its layer-0 input weights never matter, so
        # an input of any width becomes our 1-wide zero input exactly.
        if cond_in != 1:
            sd["conductor.weight_ih_l0"] = np.zeros((4 * conductor_size, 1), np.float32)
    else:
        z_size = cond

    enc_size, enc_layers, enc_note = _encoder(w, parts, z_size, sd)
    if not enc_layers:
        warnings.warn(f"encoder not converted: {enc_note}. The decoder is converted; export "
                      "is decoder-only (sample or walk z; no encoding of MIDI into z)",
                      UserWarning, stacklevel=2)
        enc_size, enc_layers, enc_note = 1, 1, f"skipped: {enc_note}"

    unused = sorted(n for n in weights if n not in w.used and not _IGNORED.search(n)
                    and not (enc_note.startswith("skipped") and n.startswith("encoder/")))
    if unused:
        warnings.warn(f"{len(unused)} checkpoint weights are not used by the conversion: "
                      f"{unused[:10]}{' ...' if len(unused) > 10 else ''}", UserWarning,
                      stacklevel=2)

    import torch

    from export.musicvae import MusicVAE, MusicVAEConfig

    cfg = MusicVAEConfig(
        name=name, parts=parts, bars=bars, steps_per_bar=steps_per_bar, enc_size=enc_size,
        enc_layers=enc_layers, z_size=z_size, dec_size=dec_size, dec_layers=dec_layers,
        conductor_size=conductor_size, conductor_layers=conductor_layers or 2,
        extra={"source": "magenta-js", "data_converter": config_json.get("dataConverter"),
               "encoder": enc_note})
    model = MusicVAE(cfg)
    state = model.state_dict()
    for key, value in state.items():
        if key.startswith("encoder.") and key not in sd:
            sd[key] = np.zeros(tuple(value.shape), np.float32)  # skipped encoder: zeros
    missing = sorted(set(state) - set(sd))
    if missing:  # a bug here, not in the checkpoint
        raise RuntimeError(f"conversion left parameters unset: {missing}")
    for key, value in sd.items():
        if tuple(state[key].shape) != value.shape:
            raise RuntimeError(f"converted {key} has shape {value.shape}, model wants "
                               f"{tuple(state[key].shape)}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, np.float32))
                           for k, v in sd.items()}, strict=True)
    model.eval()
    return model


# ---- whole conversion -------------------------------------------------------------------

def _default_name(folder: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.resolve().name).strip("._")
    return name or "magenta_js"


def convert(dir: StrPath, out_dir: StrPath, name: str | None = None) -> list[Path]:  # noqa: A002
    """Convert the magenta.js checkpoint folder ``dir`` into ``out_dir``.

    Writes ``<name>.pt`` (export.musicvae checkpoint) and ``<name>.encoder.onnx`` +
    ``<name>.decoder.onnx`` (only the decoder when the encoder had to be skipped). ``name``
    defaults to the folder's name. Returns the written paths.
    """
    folder = Path(dir)
    name = name or _default_name(folder)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"model name {name!r}: use letters, digits, '_', '-' and '.' only")
    config, weights = read_checkpoint(folder)
    import torch

    from export import musicvae_onnx
    from export.musicvae import save_checkpoint

    try:
        model = to_musicvae(config, weights, name=name)
    except ValueError as err:  # the config and weights disagree: name the folder they are in
        if str(folder) in str(err):
            raise
        raise ValueError(f"{folder}: {err}") from None
    out = Path(out_dir)
    names = [f"{name}.pt", f"{name}.encoder.onnx", f"{name}.decoder.onnx"]
    if model.cfg.extra["encoder"].startswith("skipped"):
        del names[1]
    with staged(out, names, fix=f"a model named {name!r} is there; convert into another "
                                "folder, or give another --name") as stage, torch.no_grad():
        save_checkpoint(stage / names[0], model, step=0,
                        extra={"source": "magenta-js", "source_dir": str(folder),
                               "encoder": model.cfg.extra["encoder"]})
        if len(names) == 3:
            musicvae_onnx.export_encoder(model, stage / names[1])
        musicvae_onnx.export_decoder(model, stage / names[-1])
    return [out / n for n in names]


def main(argv: list[str] | None = None) -> int:
    """``encore convert magenta-js DIR OUT [--name NAME]``."""
    parser = argparse.ArgumentParser(prog="encore convert magenta-js",
                                     description="Convert a magenta.js MusicVAE checkpoint "
                                                 "folder to an Encore .pt + ONNX models")
    parser.add_argument("dir", help="magenta.js checkpoint folder (config.json, "
                                    "weights_manifest.json, shards)")
    parser.add_argument("out", help="output folder")
    parser.add_argument("--name", help="model name (default: the folder's name)")
    args = parser.parse_args(argv)
    try:
        paths = convert(args.dir, args.out, args.name)
    except ValueError as err:
        parser.exit(2, f"encore convert magenta-js: {err}\n")
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
