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


@dataclass(frozen=True)
class BankSpec:
    """What :func:`make_bank` writes; change one field per variant with ``replace``."""

    acoustic_inputs: tuple[str, ...] = ALL_ACOUSTIC
    acoustic_extra: tuple[str, ...] = ()
    scalar_rank: int = 0
    depth_type: int = F32
    phonemes_format: str = "json"
    """"json", "txt" or "prefixed" (json with en/ prefixes and languages.json)."""
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
    character: str = "name=Test Singer\n"


def _write_phonemes(folder: Path, spec: BankSpec) -> str:
    if spec.phonemes_format == "txt":
        (folder / "phonemes.txt").write_text("\n".join(spec.phonemes) + "\n")
        return "phonemes.txt"
    names = list(spec.phonemes)
    if spec.phonemes_format == "prefixed":
        names = [p if p.startswith("<") or p in ("SP", "AP") else f"en/{p}" for p in names]
    (folder / "phonemes.json").write_text(json.dumps({p: i for i, p in enumerate(names)}))
    return "phonemes.json"


def make_bank(root: Path, spec: BankSpec = BankSpec()) -> Path:
    """Write a voicebank into ``root/bank`` (and a named vocoder into ``root/vocoders``)."""
    folder = root / "bank"
    folder.mkdir(parents=True)
    (folder / "character.txt").write_text(spec.character)
    config: dict[str, Any] = {
        "acoustic": "acoustic.onnx", "phonemes": _write_phonemes(folder, spec),
        "vocoder": "test_hifigan", "hidden_size": HIDDEN, "use_variable_depth": True,
        "use_shallow_diffusion": True, "max_depth": 0.6, **AUDIO,
        "speakers": [f"embeds/{s}" for s in spec.speakers],
        "augmentation_args": {"random_pitch_shifting": {"range": [-5, 5]}},
    }
    if spec.phonemes_format == "prefixed" or "languages" in spec.acoustic_inputs:
        (folder / "languages.json").write_text(json.dumps({"en": 1, "ja": 2}))
        config.update(languages="languages.json", use_lang_id=True)
    for key, value in spec.config.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "dsconfig.yaml").write_text(yaml.safe_dump(config))
    (folder / "embeds").mkdir()
    for s in spec.speakers:
        np.full(HIDDEN, SPEAKERS[s], "<f4").tofile(folder / "embeds" / f"{s}.emb")
    build_acoustic(folder / "acoustic.onnx", spec.acoustic_inputs + spec.acoustic_extra,
                   scalar_rank=spec.scalar_rank, depth_type=spec.depth_type)
    vocoder_dir = (folder / "dsvocoder" if spec.vocoder == "dsvocoder"
                   else root / "vocoders" / "test_hifigan")
    vocoder_dir.mkdir(parents=True)
    (vocoder_dir / "vocoder.yaml").write_text(yaml.safe_dump(
        {"name": "test_hifigan", "model": "model.onnx", "pitch_controllable": True,
         **AUDIO, **spec.vocoder_audio}))
    build_vocoder(vocoder_dir / "model.onnx")
    names = {"dur": "dsdur", "pitch": "dspitch", "variance": "dsvariance"}
    builders = {"dur": build_dur, "pitch": build_pitch, "variance": build_variance}
    for kind in spec.variance:
        sub = folder / names[kind]
        sub.mkdir()
        (sub / "phonemes.json").write_text(json.dumps({p: i for i, p in enumerate(PHONEMES)}))
        build_linguistic(sub / "linguistic.onnx", word_level=kind == "dur")
        builders[kind](sub / f"{kind}.onnx")
        (sub / "dsconfig.yaml").write_text(yaml.safe_dump(
            {"linguistic": "linguistic.onnx", kind: f"{kind}.onnx", "phonemes": "phonemes.json",
             "hidden_size": HIDDEN, "sample_rate": SR, "hop_size": HOP,
             "predict_dur": kind == "dur"}))
    if spec.dsdict is not None:
        (folder / "dsdict.yaml").write_text(yaml.safe_dump(spec.dsdict))
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
