"""Tiny DiffSinger voicebanks built in the tests: OpenUtau folders whose ONNX graphs have
the real contract's tensor names, types and dynamic axes (built with the onnx helper API).

The graphs echo what they are fed, so a test can read it back from the audio:

- acoustic: ``mel[0, f, c]`` is channel ``c`` of :data:`CH` at frame ``f``: the token id
  sounding at frame ``f`` (found from ``durations`` as a length regulator would; a
  duration sum short of n_frames makes the graph fail), the f0, the sum of durations, the
  steps (or speedup), depth, gender, velocity, ``spk_embed[..., 0]``, the language id and
  the four variance curves; absent inputs give 0;
- vocoder: hop = number of mel bins = 16, and ``waveform[f * 16 + c]`` is ``mel[f, c]`` for
  ``c < 15`` and the vocoder's own f0 input at ``c = 15``;
- linguistic / dur / pitch / variance: tokens in, ``ph_dur_pred`` = 5 frames per token,
  ``pitch_pred`` = the given pitch + 12 semitones, ``energy_pred`` = 0.25 and
  ``breathiness_pred`` = -0.5.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

SR, HOP, BINS, HIDDEN = 16000, 16, 16, 4
FPS = SR / HOP  # 1000 frames a second: one frame is 1 ms
CH = {name: i for i, name in enumerate(
    ["token", "f0", "total", "steps", "depth", "gender", "velocity", "spk", "lang",
     "energy", "breathiness", "voicing", "tension"])}
VOCODER_F0 = BINS - 1
DUR_FRAMES = 5.0
PHONEMES = tuple(("<PAD> SP AP aa ae ah ao aw ay eh er ey ih iy ow oy uh uw b ch d dh f g hh jh "
                  "k l m n ng p r s sh t th v w y z zh").split())
SPEAKERS = {"alto": 0.25, "tenor": 0.75}
ALL_ACOUSTIC = ("languages", "gender", "velocity", "spk_embed", "depth", "steps")
AUDIO = {"sample_rate": SR, "hop_size": HOP, "num_mel_bins": BINS, "mel_fmin": 40,
         "mel_fmax": 8000, "mel_base": "e", "win_size": 64, "fft_size": 64}
F32, I64, BOOL = 1, 7, 9
"""onnx.TensorProto's FLOAT, INT64 and BOOL (onnx is imported only when a graph is built, so
that the other tests of this folder run without it)."""


def _onnx():
    return pytest.importorskip("onnx")


class GraphBuilder:
    """A few conveniences over onnx.helper: auto-named nodes and constants."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []
        self._n = 0

    def name(self) -> str:
        self._n += 1
        return f"v{self._n}"

    def input(self, name: str, dtype: int, shape: Sequence[int | str]) -> str:
        self.inputs.append(_onnx().helper.make_tensor_value_info(name, dtype, list(shape)))
        return name

    def output(self, name: str, dtype: int, shape: Sequence[int | str]) -> None:
        self.outputs.append(_onnx().helper.make_tensor_value_info(name, dtype, list(shape)))

    def const(self, value: Any, dtype: Any = np.int64) -> str:
        name = self.name()
        self.inits.append(_onnx().numpy_helper.from_array(np.array(value, dtype=dtype), name))
        return name

    def op(self, kind: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        out = out or self.name()
        self.nodes.append(_onnx().helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def save(self, path: Path) -> Path:
        onnx = _onnx()
        helper = onnx.helper
        graph = helper.make_graph(self.nodes, "g", self.inputs, self.outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
        return path


def _scalar_input(g: GraphBuilder, name: str, dtype: int, rank: int) -> str:
    return g.input(name, dtype, [] if rank == 0 else [1])


def build_acoustic(path: Path, inputs: Iterable[str] = ALL_ACOUSTIC, *, scalar_rank: int = 0,
                   depth_type: int = F32, bins: int = BINS, extra: Sequence[str] = (),
                   token_type: int = I64) -> Path:
    """The echoing acoustic graph; ``inputs`` picks the optional inputs it declares."""
    inputs = set(inputs)
    g = GraphBuilder()
    tokens = g.input("tokens", token_type, [1, "n_tokens"])
    durations = g.input("durations", I64, [1, "n_tokens"])
    f0 = g.input("f0", F32, [1, "n_frames"]) if "no_f0" not in inputs else None
    if token_type != I64:
        tokens = g.op("Cast", tokens, to=I64)
    if "languages" in inputs:
        g.input("languages", I64, [1, "n_tokens"])
    for name in ("gender", "velocity", "energy", "breathiness", "voicing", "tension"):
        if name in inputs:
            g.input(name, F32, [1, "n_frames"])
    if "spk_embed" in inputs:
        g.input("spk_embed", F32, [1, "n_frames", HIDDEN])
    if "depth" in inputs:
        _scalar_input(g, "depth", depth_type, scalar_rank)
    for name in ("steps", "speedup"):
        if name in inputs:
            _scalar_input(g, name, I64, scalar_rank)
    known = {"languages", "gender", "velocity", "energy", "breathiness", "voicing", "tension",
             "spk_embed", "depth", "steps", "speedup", "no_f0"}
    for name in sorted(set(extra) | (inputs - known)):
        g.input(name, F32, [1, "n_frames"])
    frames_of = f0 if f0 is not None else g.op("Cast", durations, to=F32)
    n = g.op("Gather", g.op("Shape", frames_of), g.const(1))  # scalar n_frames
    n1 = g.op("Reshape", n, g.const([1]))
    frames = g.op("Range", g.const(0), n, g.const(1))  # [F]
    ends = g.op("CumSum", g.op("Reshape", durations, g.const([1, -1])), g.const(1))  # [1, T]
    passed = g.op("LessOrEqual", ends, g.op("Unsqueeze", frames, g.const([1])))  # [F, T]
    index = g.op("ReduceSum", g.op("Cast", passed, to=I64), g.const([1]), keepdims=0)  # [F]

    def at_frames(name: str) -> str:  # a token-level [1, T] input, per frame, as float
        flat = g.op("Reshape", name, g.const([-1]))
        return g.op("Cast", g.op("Gather", flat, index), to=F32)

    def spread(scalar: str) -> str:  # any 0-d / [1] value -> [F] float
        value = g.op("Cast", g.op("Reshape", scalar, g.const([], np.int64)), to=F32)
        return g.op("Expand", value, n1)

    def frame_curve(name: str) -> str:
        return g.op("Reshape", name, g.const([-1]))

    zero = spread(g.const(0.0, np.float32))
    channels = {
        "token": at_frames(tokens),
        "f0": frame_curve(f0) if f0 is not None else zero,
        "total": spread(g.op("ReduceSum", durations, keepdims=0)),
        "steps": spread("steps") if "steps" in inputs else
        spread("speedup") if "speedup" in inputs else zero,
        "depth": spread("depth") if "depth" in inputs else zero,
        "spk": frame_curve(g.op("Gather", "spk_embed", g.const(0), axis=2))
        if "spk_embed" in inputs else zero,
        "lang": at_frames("languages") if "languages" in inputs else zero,
    }
    for name in ("gender", "velocity", "energy", "breathiness", "voicing", "tension"):
        channels[name] = frame_curve(name) if name in inputs else zero
    columns = [g.op("Unsqueeze", channels[name], g.const([1])) for name in CH]
    columns += [g.op("Unsqueeze", zero, g.const([1]))] * (bins - len(CH))
    mel = g.op("Concat", *columns, axis=1)  # [F, bins]
    g.op("Unsqueeze", mel, g.const([0]), out="mel")
    g.output("mel", F32, [1, "n_frames", bins])
    return g.save(path)


def build_vocoder(path: Path, bins: int = BINS) -> Path:
    g = GraphBuilder()
    g.input("mel", F32, [1, "n_frames", bins])
    g.input("f0", F32, [1, "n_frames"])
    head = g.op("Slice", "mel", g.const([0]), g.const([bins - 1]), g.const([2]))
    both = g.op("Concat", head, g.op("Unsqueeze", "f0", g.const([2])), axis=2)
    g.op("Reshape", both, g.const([1, -1]), out="waveform")
    g.output("waveform", F32, [1, "n_samples"])
    return g.save(path)


def build_linguistic(path: Path, *, word_level: bool = True, languages: bool = False) -> Path:
    g = GraphBuilder()
    g.input("tokens", I64, [1, "n_tokens"])
    if languages:
        g.input("languages", I64, [1, "n_tokens"])
    if word_level:
        g.input("word_div", I64, [1, "n_words"])
        g.input("word_dur", I64, [1, "n_words"])
    else:
        g.input("ph_dur", I64, [1, "n_tokens"])
    as_float = g.op("Unsqueeze", g.op("Cast", "tokens", to=F32), g.const([2]))
    g.op("Mul", as_float, g.const(np.ones(HIDDEN), np.float32), out="encoder_out")
    g.op("Greater", "tokens", g.const(-1), out="x_masks")
    g.output("encoder_out", F32, [1, "n_tokens", HIDDEN])
    g.output("x_masks", BOOL, [1, "n_tokens"])
    return g.save(path)


def build_dur(path: Path) -> Path:
    g = GraphBuilder()
    g.input("encoder_out", F32, [1, "n_tokens", HIDDEN])
    g.input("x_masks", BOOL, [1, "n_tokens"])
    g.input("ph_midi", I64, [1, "n_tokens"])
    zeros = g.op("Mul", g.op("Cast", "ph_midi", to=F32), g.const(0.0, np.float32))
    g.op("Add", zeros, g.const(DUR_FRAMES, np.float32), out="ph_dur_pred")
    g.output("ph_dur_pred", F32, [1, "n_tokens"])
    return g.save(path)


def build_pitch(path: Path, scalar_rank: int = 0) -> Path:
    g = GraphBuilder()
    g.input("encoder_out", F32, [1, "n_tokens", HIDDEN])
    g.input("ph_dur", I64, [1, "n_tokens"])
    g.input("note_midi", F32, [1, "n_notes"])
    g.input("note_rest", BOOL, [1, "n_notes"])
    g.input("note_dur", I64, [1, "n_notes"])
    g.input("pitch", F32, [1, "n_frames"])
    g.input("expr", F32, [1, "n_frames"])
    g.input("retake", BOOL, [1, "n_frames"])
    _scalar_input(g, "steps", I64, scalar_rank)
    g.op("Add", "pitch", g.const(12.0, np.float32), out="pitch_pred")
    g.output("pitch_pred", F32, [1, "n_frames"])
    return g.save(path)


def build_variance(path: Path) -> Path:
    g = GraphBuilder()
    g.input("encoder_out", F32, [1, "n_tokens", HIDDEN])
    g.input("ph_dur", I64, [1, "n_tokens"])
    g.input("pitch", F32, [1, "n_frames"])
    g.input("energy", F32, [1, "n_frames"])
    g.input("breathiness", F32, [1, "n_frames"])
    g.input("retake", BOOL, [1, "n_frames", 2])
    _scalar_input(g, "steps", I64, 0)
    zeros = g.op("Mul", "pitch", g.const(0.0, np.float32))
    g.op("Add", zeros, g.const(0.25, np.float32), out="energy_pred")
    g.op("Add", zeros, g.const(-0.5, np.float32), out="breathiness_pred")
    g.output("energy_pred", F32, [1, "n_frames"])
    g.output("breathiness_pred", F32, [1, "n_frames"])
    return g.save(path)


ACOUSTIC_NAME = "acoustic"
"""The exporter names every file after the experiment (``hparams['exp_name']``)."""
VARIANCE_NAME = "variance"


@dataclass(frozen=True)
class BankSpec:
    """What :func:`make_bank` writes; change one field per variant with ``replace``.

    The default is what openvpi/DiffSinger's exporter (``scripts/export.py``) writes today,
    arranged in OpenUtau's layout: files named after the experiment
    (``<exp>.onnx``, ``<exp>.phonemes.json``, ``<exp>.languages.json``, ``<exp>.<spk>.emb``,
    speakers listed as ``<exp>.<spk>``), its dsconfig.yaml keys (``use_continuous_acceleration:
    true``, ``use_variable_depth``, ``max_depth`` in 0..1, ``mel_base: e``, ``mel_scale:
    slaney``), 0-d ``depth`` (float) and ``steps`` (int64). ``legacy=True`` writes what it
    wrote before 2024-04: ``<exp>.phonemes.txt``, ``use_shallow_diffusion``, ``max_depth`` in
    1000-step units, no ``use_continuous_acceleration``, ``speedup`` and an int64 ``depth``,
    and (older still) no ``mel_base``: log10 mels.
    """

    acoustic_inputs: tuple[str, ...] = ALL_ACOUSTIC
    acoustic_extra: tuple[str, ...] = ()
    scalar_rank: int = 0
    depth_type: int = F32
    phonemes_format: str = "json"
    """"json", "txt" or "prefixed" (json with en/ prefixes and a languages file)."""
    phonemes: tuple[str, ...] = PHONEMES
    vocoder: str = "dsvocoder"
    """"dsvocoder" (inside the bank) or "named" (a package beside the bank)."""
    vocoder_audio: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    """Extra or replaced dsconfig.yaml keys (a None value removes the key)."""
    speakers: tuple[str, ...] = ("alto", "tenor")
    variance: tuple[str, ...] = ()
    """Subfolders to add: "dur", "pitch", "variance"."""
    dsdict: dict[str, Any] | None = None
    dsdict_language: str = ""
    """"" writes dsdict.yaml, "en" writes dsdict-en.yaml."""
    character: str = "name=Test Singer\n"
    legacy: bool = False


LEGACY = {"acoustic_inputs": ("languages", "gender", "velocity", "spk_embed", "depth",
                              "speedup"),
          "depth_type": I64, "phonemes_format": "txt", "legacy": True}
"""``bank_factory(**LEGACY)``: a bank from the exporter of before 2024-04."""


def _write_phonemes(folder: Path, spec: BankSpec) -> str:
    if spec.phonemes_format == "txt":
        name = f"{ACOUSTIC_NAME}.phonemes.txt"
        (folder / name).write_text("\n".join(spec.phonemes) + "\n")
        return name
    names = list(spec.phonemes)
    if spec.phonemes_format == "prefixed":
        names = [p if p.startswith("<") or p in ("SP", "AP") else f"en/{p}" for p in names]
    name = f"{ACOUSTIC_NAME}.phonemes.json"
    (folder / name).write_text(json.dumps({p: i for i, p in enumerate(names)}, indent=2))
    return name


def _acoustic_config(folder: Path, spec: BankSpec) -> dict[str, Any]:
    """dsconfig.yaml as the exporter writes it, keys in its order."""
    multilingual = spec.phonemes_format == "prefixed" or "languages" in spec.acoustic_inputs
    config: dict[str, Any] = {"phonemes": _write_phonemes(folder, spec)}
    if not spec.legacy:
        languages = f"{ACOUSTIC_NAME}.languages.json"
        (folder / languages).write_text(json.dumps({"en": 1, "ja": 2} if multilingual else {}))
        config.update(languages=languages, use_lang_id=multilingual)
    config.update(acoustic=f"{ACOUSTIC_NAME}.onnx", hidden_size=HIDDEN, vocoder="test_hifigan")
    if spec.speakers:
        config["speakers"] = [f"{ACOUSTIC_NAME}.{s}" for s in spec.speakers]
    config["augmentation_args"] = {"random_pitch_shifting": {"range": [-5, 5]}}
    inputs = set(spec.acoustic_inputs)
    config.update(use_key_shift_embed="gender" in inputs, use_speed_embed="velocity" in inputs)
    for curve in ("energy", "breathiness", "voicing", "tension"):
        config[f"use_{curve}_embed"] = curve in inputs
    if spec.legacy:
        config.update(use_shallow_diffusion="depth" in inputs, max_depth=600)
    else:
        config.update(use_continuous_acceleration=True, use_variable_depth="depth" in inputs,
                      max_depth=0.6)
    config.update(AUDIO)
    if spec.legacy:
        del config["mel_base"]  # before mel_base existed: log10 mels
    if spec.legacy and multilingual:  # hand-edited, as users of such banks did
        (folder / "languages.json").write_text(json.dumps({"en": 1, "ja": 2}))
        config.update(languages="languages.json", use_lang_id=True)
    return config


def _variance_config(sub: Path, kind: str, spec: BankSpec) -> dict[str, Any]:
    phonemes = f"{VARIANCE_NAME}.phonemes.json"
    (sub / phonemes).write_text(json.dumps({p: i for i, p in enumerate(PHONEMES)}))
    (sub / f"{VARIANCE_NAME}.languages.json").write_text("{}")
    config: dict[str, Any] = {
        "phonemes": phonemes, "languages": f"{VARIANCE_NAME}.languages.json",
        "use_lang_id": False, "linguistic": f"{VARIANCE_NAME}.linguistic.onnx",
        "hidden_size": HIDDEN, "predict_dur": kind == "dur",
        kind: f"{VARIANCE_NAME}.{kind}.onnx"}
    if kind == "pitch":
        config.update(use_expr=False, use_note_rest=True)
    if kind == "variance":
        config.update(predict_energy=True, predict_breathiness=True, predict_voicing=False,
                      predict_tension=False)
    if not spec.legacy:
        config["use_continuous_acceleration"] = True
    config.update(sample_rate=SR, hop_size=HOP)
    return config


def make_bank(root: Path, spec: BankSpec = BankSpec()) -> Path:
    """Write a voicebank into ``root/bank`` (and a named vocoder into ``root/vocoders``)."""
    folder = root / "bank"
    folder.mkdir(parents=True)
    (folder / "character.txt").write_text(spec.character)
    config = _acoustic_config(folder, spec)
    for key, value in spec.config.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "dsconfig.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for s in spec.speakers:
        np.full(HIDDEN, SPEAKERS[s], "<f4").tofile(folder / f"{ACOUSTIC_NAME}.{s}.emb")
    build_acoustic(folder / f"{ACOUSTIC_NAME}.onnx", spec.acoustic_inputs + spec.acoustic_extra,
                   scalar_rank=spec.scalar_rank, depth_type=spec.depth_type)
    vocoder_dir = (folder / "dsvocoder" if spec.vocoder == "dsvocoder"
                   else root / "vocoders" / "test_hifigan")
    vocoder_dir.mkdir(parents=True)
    (vocoder_dir / "vocoder.yaml").write_text(yaml.safe_dump(
        {"name": "test_hifigan", "model": "test_hifigan.onnx", **AUDIO, "mel_scale": "slaney",
         "pitch_controllable": True, "force_on_cpu": False, **spec.vocoder_audio},
        sort_keys=False))
    build_vocoder(vocoder_dir / "test_hifigan.onnx")
    names = {"dur": "dsdur", "pitch": "dspitch", "variance": "dsvariance"}
    builders = {"dur": build_dur, "pitch": build_pitch, "variance": build_variance}
    for kind in spec.variance:
        sub = folder / names[kind]
        sub.mkdir()
        build_linguistic(sub / f"{VARIANCE_NAME}.linguistic.onnx", word_level=kind == "dur")
        builders[kind](sub / f"{VARIANCE_NAME}.{kind}.onnx")
        (sub / "dsconfig.yaml").write_text(yaml.safe_dump(_variance_config(sub, kind, spec),
                                                           sort_keys=False))
    if spec.dsdict is not None:
        name = f"dsdict-{spec.dsdict_language}.yaml" if spec.dsdict_language else "dsdict.yaml"
        (folder / name).write_text(yaml.safe_dump(spec.dsdict))
    return folder


@pytest.fixture(scope="session")
def vb():
    """This module: its constants and builders (pytest's importlib mode cannot import it by
    name)."""
    return sys.modules[__name__]


@pytest.fixture(scope="session")
def bank_factory(tmp_path_factory):
    """``bank_factory(**changes)``: a fresh bank folder for ``BankSpec(**changes)``."""

    def make(**changes: Any) -> Path:
        return make_bank(tmp_path_factory.mktemp("vb"), replace(BankSpec(), **changes))

    return make


@pytest.fixture(scope="session")
def full_bank(bank_factory) -> Path:
    return bank_factory()
