"""Real-time factor of the DiffSinger voicebank runner on graphs of the published shapes.

    python benchmarks/bench_voicebank.py                    # steps 4, 10, 20; 3 runs each
    python benchmarks/bench_voicebank.py --steps 4 --runs 5 --threads 2
    python benchmarks/bench_voicebank.py --small            # tiny shapes: a quick smoke run
    python benchmarks/bench_voicebank.py --compare          # today's path vs the live one

No real voicebank ships with the repository (nor can one be downloaded here), so this
builds one: random weights of DiffSinger's published shapes, exported into an OpenUtau
voicebank folder in the temporary directory and kept there for the next run (the folder's
name hashes the shapes and this file's source). Random weights are fine for timing: the
work a graph does does not depend on its weights' values.

- acoustic (``acoustic.onnx``, the modern input set: tokens, languages, durations, f0,
  gender, velocity, spk_embed, depth, steps): phoneme + language embeddings, a 4-layer
  256-wide FFT encoder (2-head attention, conv FFN 1024 wide, kernel 9), length regulator,
  f0 / gender / velocity / speaker conditioning, then a rectified-flow sampler whose Euler
  loop runs ``steps`` times *inside the graph* (an ONNX Loop) over a WaveNet denoiser
  (20 residual layers, 512 channels, 128 mels): ~69M parameters in all;
- vocoder (``dsvocoder/model.onnx``): NSF-HiFiGAN, upsampling 8, 8, 2, 2, 2 (hop 512) from
  512 channels, resblocks with kernels 3, 7, 11 and dilations 1, 3, 5, a harmonic sine
  source from f0 injected at each stage: ~14M parameters.

Each setting renders the same phrase (``--seconds`` long, one syllable a beat at 120 bpm,
plus the runner's 0.5 s head and 8 tail frames) ``--runs`` times after one warm-up; the
figure is the median. RTF = render time / seconds of audio rendered (below 1: faster than
real time). The vocoder's share is timed apart (it does not depend on steps).

``--compare``: today's path (``DiffSingerRunner(bank)``: the float vocoder, ONNX Runtime's
spinning threads) against the live one (``DiffSingerRunner(bank, live=True)``: the int8
vocoder copy, idle threads sleeping), side by side, alternating, per stage (acoustic,
vocoder; this random bank has no duration, pitch or variance models) and whole phrase, in
wall-clock real-time factor and in CPU seconds per second of audio (what the render costs
whoever else runs), first as the machine is, then with ``--busy`` processes each keeping a
core busy (single-thread float matrix products at normal priority: a stand-in for the
show's music worker and lyricist, which are burstier). Then the quality cost, against the
unaccelerated bank at 20 steps: the mel at fewer steps (RMS difference in log-mel units),
the int8 vocoder's waveform (signal-to-difference ratio) and sung pitch (WORLD's harvest on
both waveforms, cents). With random weights the step figures are numerical differences,
not a judgement of how a trained voice sounds; the vocoder figures hold for the arithmetic.
The int8 copy is made into ``$ENCORE_CACHE`` (default: ``encore-bench-cache`` in the
temporary directory). ``--bank FOLDER`` compares on a voicebank of your own instead (trained
weights: ``models_onnx/encore_voice``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import yaml
from onnx import TensorProto, helper
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.lyrics.phrase import PhrasePlan, SungNote, SungSyllable  # noqa: E402
from engine.voice.diffsinger import DiffSingerRunner, RenderSettings  # noqa: E402

PHONEMES = ["<PAD>", "SP", "AP"] + (
    "aa ae ah ao aw ay eh er ey ih iy ow oy uh uw b ch d dh f g hh jh k l m n ng p r s sh t "
    "th v w y z zh").split()
OPSET = 17


@dataclass(frozen=True)
class Shapes:
    """The sizes of the random-weight bank."""

    hidden: int = 256
    enc_layers: int = 4
    enc_heads: int = 2
    enc_ffn: int = 1024
    enc_kernel: int = 9
    mels: int = 128
    res_channels: int = 512
    res_layers: int = 20
    dilation_cycle: int = 4
    voc_channels: int = 512
    upsample: tuple[int, ...] = (8, 8, 2, 2, 2)
    upsample_kernels: tuple[int, ...] = (16, 16, 4, 4, 4)
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    harmonics: int = 8
    sample_rate: int = 44100

    @property
    def hop(self) -> int:
        return math.prod(self.upsample)


SMALL = Shapes(hidden=64, enc_layers=2, enc_ffn=128, enc_kernel=3, res_channels=64,
               res_layers=4, voc_channels=64)


# ---- acoustic: encoder + WaveNet denoiser -------------------------------------------------

class FFTLayer(nn.Module):
    """Pre-norm self-attention + conv feed-forward, as DiffSinger's FFT encoder."""

    def __init__(self, s: Shapes) -> None:
        super().__init__()
        self.heads = s.enc_heads
        self.ln1, self.ln2 = nn.LayerNorm(s.hidden), nn.LayerNorm(s.hidden)
        self.qkv, self.out = nn.Linear(s.hidden, 3 * s.hidden), nn.Linear(s.hidden, s.hidden)
        self.ffn1 = nn.Conv1d(s.hidden, s.enc_ffn, s.enc_kernel, padding=s.enc_kernel // 2)
        self.ffn2 = nn.Linear(s.enc_ffn, s.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, T, H)
        b, t, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(h // self.heads), dim=-1)
        x = x + self.out((att @ v).transpose(1, 2).reshape(b, t, h))
        y = self.ffn1(self.ln2(x).transpose(1, 2)).transpose(1, 2)  # (1, T, ffn)
        return x + self.ffn2(torch.nn.functional.gelu(y))


class Encoder(nn.Module):
    """Tokens -> frames -> the denoiser's condition (1, H, F)."""

    def __init__(self, s: Shapes) -> None:
        super().__init__()
        self.tokens = nn.Embedding(len(PHONEMES), s.hidden)
        self.languages = nn.Embedding(8, s.hidden)
        self.dur = nn.Linear(1, s.hidden)
        self.layers = nn.ModuleList(FFTLayer(s) for _ in range(s.enc_layers))
        self.f0, self.gender, self.velocity = (nn.Linear(1, s.hidden) for _ in range(3))

    def forward(self, tokens, languages, durations, f0, gender, velocity, spk_embed):
        x = self.tokens(tokens) + self.languages(languages)  # (1, T, H)
        x = x + self.dur(torch.log1p(durations.float())[..., None])
        for layer in self.layers:
            x = layer(x)
        ends = torch.cumsum(durations[0], 0)  # (T,)
        frames = torch.arange(f0.shape[1])  # (F,)
        index = (ends[None, :] <= frames[:, None]).long().sum(-1).clamp(max=x.shape[1] - 1)
        x = x[:, index]  # (1, F, H): the length regulator
        x = x + self.f0(torch.log1p(f0 / 700)[..., None]) + spk_embed
        x = x + self.gender(gender[..., None]) + self.velocity(velocity[..., None])
        return x.transpose(1, 2)  # (1, H, F)


class ResidualLayer(nn.Module):
    def __init__(self, s: Shapes, dilation: int) -> None:
        super().__init__()
        c = s.res_channels
        self.step = nn.Linear(c, c)
        self.conv = nn.Conv1d(c, 2 * c, 3, padding=dilation, dilation=dilation)
        self.cond = nn.Conv1d(s.hidden, 2 * c, 1)
        self.out = nn.Conv1d(c, 2 * c, 1)

    def forward(self, x, cond, step):  # (1, C, F), (1, H, F), (1, C)
        y = self.conv(x + self.step(step)[..., None]) + self.cond(cond)
        gate, filt = y.chunk(2, dim=1)
        residual, skip = self.out(torch.sigmoid(gate) * torch.tanh(filt)).chunk(2, dim=1)
        return (x + residual) / math.sqrt(2.0), skip


class WaveNet(nn.Module):
    """The denoiser: velocity of the flow at mel ``x``, time ``t`` (0..1000)."""

    def __init__(self, s: Shapes) -> None:
        super().__init__()
        c = s.res_channels
        self.channels = c
        self.input = nn.Conv1d(s.mels, c, 1)
        self.mlp = nn.Sequential(nn.Linear(c, 4 * c), nn.Mish(), nn.Linear(4 * c, c))
        self.layers = nn.ModuleList(ResidualLayer(s, 2 ** (i % s.dilation_cycle))
                                    for i in range(s.res_layers))
        self.skip = nn.Conv1d(c, c, 1)
        self.output = nn.Conv1d(c, s.mels, 1)

    def forward(self, x, t, cond):  # (1, M, F), (1,), (1, H, F)
        half = self.channels // 2
        freqs = torch.exp(torch.arange(half) * (-math.log(10000.0) / (half - 1)))
        step = self.mlp(torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)],
                                  dim=-1))  # (1, C)
        x = torch.relu(self.input(x))
        skips = 0
        for layer in self.layers:
            x, skip = layer(x, cond, step)
            skips = skips + skip
        return self.output(torch.relu(self.skip(skips / math.sqrt(len(self.layers)))))


# ---- vocoder: NSF-HiFiGAN -------------------------------------------------------------------

class ResBlock(nn.Module):
    def __init__(self, c: int, k: int, dilations=(1, 3, 5)) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(c, c, k, dilation=d, padding=d * (k - 1) // 2)
                                    for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(c, c, k, padding=(k - 1) // 2) for _ in dilations)

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            x = x + c2(nn.functional.leaky_relu(c1(nn.functional.leaky_relu(x, 0.1)), 0.1))
        return x


class NsfHifiGan(nn.Module):
    def __init__(self, s: Shapes) -> None:
        super().__init__()
        self.s = s
        self.source = nn.Linear(s.harmonics + 1, 1)
        self.pre = nn.Conv1d(s.mels, s.voc_channels, 7, padding=3)
        self.ups, self.noise_convs, self.blocks = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c = s.voc_channels
        for i, (rate, k) in enumerate(zip(s.upsample, s.upsample_kernels, strict=True)):
            out = c // 2 ** (i + 1)
            self.ups.append(nn.ConvTranspose1d(c // 2 ** i, out, k, rate, padding=(k - rate) // 2))
            rest = math.prod(s.upsample[i + 1:])
            self.noise_convs.append(nn.Conv1d(1, out, 2 * rest, rest, padding=rest // 2)
                                    if rest > 1 else nn.Conv1d(1, out, 1))
            self.blocks.append(nn.ModuleList(ResBlock(out, k) for k in s.resblock_kernels))
        self.post = nn.Conv1d(c // 2 ** len(s.upsample), 1, 7, padding=3)

    def forward(self, mel, f0):  # (1, F, M), (1, F)
        s = self.s
        f0_up = f0[:, :, None].expand(-1, -1, s.hop).reshape(1, -1)  # (1, N)
        phase = torch.cumsum(f0_up / s.sample_rate, dim=1) * (2 * math.pi)
        k = torch.arange(1, s.harmonics + 1, dtype=torch.float32)
        sines = torch.sin(phase[..., None] * k) * 0.1  # (1, N, K)
        source = torch.tanh(self.source(torch.cat([sines, phase[..., None] * 0], -1)))
        source = source.transpose(1, 2)  # (1, 1, N)
        x = self.pre(mel.transpose(1, 2))
        for up, noise, blocks in zip(self.ups, self.noise_convs, self.blocks, strict=True):
            x = up(nn.functional.leaky_relu(x, 0.1))
            x = x + noise(source)[..., :x.shape[-1]]
            x = sum(b(x) for b in blocks) / len(blocks)
        return torch.tanh(self.post(nn.functional.leaky_relu(x)))[:, 0]  # (1, N)


# ---- export -----------------------------------------------------------------------------------

def _export(model: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            axes: dict[str, dict[int, str]]) -> onnx.ModelProto:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=inputs, output_names=outputs, dynamic_axes=axes)
    return onnx.load(str(path))


def _prefixed(graph: onnx.GraphProto, prefix: str, keep: dict[str, str]) -> None:
    """Rename every value of ``graph`` to ``prefix + name``, except those in ``keep``
    (renamed to their mapping)."""
    def rename(name: str) -> str:
        return name if not name else keep.get(name, prefix + name)
    for node in graph.node:
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
        node.name = prefix + node.name
    for init in graph.initializer:
        init.name = rename(init.name)


def build_acoustic(s: Shapes, folder: Path) -> Path:
    """The acoustic graph: the encoder, then ``steps`` Euler steps of the denoiser in a Loop."""
    t, f = 7, 50
    encoder = _export(
        Encoder(s), (torch.zeros(1, t, dtype=torch.long), torch.zeros(1, t, dtype=torch.long),
                     torch.full((1, t), 7, dtype=torch.long), torch.full((1, f), 220.0),
                     torch.zeros(1, f), torch.ones(1, f), torch.zeros(1, f, s.hidden)),
        folder / "encoder.tmp.onnx",
        ["tokens", "languages", "durations", "f0", "gender", "velocity", "spk_embed"], ["cond"],
        {"tokens": {1: "n_tokens"}, "languages": {1: "n_tokens"}, "durations": {1: "n_tokens"},
         "f0": {1: "n_frames"}, "gender": {1: "n_frames"}, "velocity": {1: "n_frames"},
         "spk_embed": {1: "n_frames"}, "cond": {2: "n_frames"}})
    denoiser = _export(
        WaveNet(s), (torch.zeros(1, s.mels, f), torch.zeros(1), torch.zeros(1, s.hidden, f)),
        folder / "denoiser.tmp.onnx", ["x", "t", "cond"], ["v"],
        {"x": {2: "n_frames"}, "cond": {2: "n_frames"}, "v": {2: "n_frames"}})
    (folder / "encoder.tmp.onnx").unlink()
    (folder / "denoiser.tmp.onnx").unlink()
    body_graph = denoiser.graph
    _prefixed(body_graph, "den/", {"x": "x_in", "t": "t_1000", "cond": "cond"})
    const = helper.make_tensor
    body_nodes = [
        helper.make_node("Cast", ["i"], ["i_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["i_f", "dt"], ["i_dt"]),
        helper.make_node("Add", ["i_dt", "t_start"], ["t_now"]),
        helper.make_node("Mul", ["t_now", "thousand"], ["t_scaled"]),
        helper.make_node("Reshape", ["t_scaled", "one_shape"], ["t_1000"]),
        *body_graph.node,
        helper.make_node("Mul", ["den/v", "dt"], ["dx"]),
        helper.make_node("Add", ["x_in", "dx"], ["x_out"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    body = helper.make_graph(
        body_nodes, "euler_step",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1, s.mels, "n_frames"])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1, s.mels, "n_frames"])])
    main_nodes = [
        *encoder.graph.node,
        helper.make_node("Shape", ["f0"], ["f0_shape"]),
        helper.make_node("Gather", ["f0_shape", "one_index"], ["n_frames_1"], axis=0),
        helper.make_node("Concat", ["batch_mels", "n_frames_1"], ["x_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["x_shape"], ["x_zeros"],
                         value=const("z", TensorProto.FLOAT, [1], [0.0])),
        helper.make_node("RandomNormalLike", ["x_zeros"], ["noise"], seed=0.0),
        helper.make_node("Reshape", ["depth", "scalar_shape"], ["depth_0"]),
        helper.make_node("Reshape", ["steps", "scalar_shape"], ["steps_0"]),
        helper.make_node("Cast", ["steps_0"], ["steps_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["depth_0", "steps_f"], ["dt"]),
        helper.make_node("Sub", ["one_f", "depth_0"], ["t_start"]),
        helper.make_node("Loop", ["steps_0", "", "noise"], ["x_final"], body=body),
        helper.make_node("Transpose", ["x_final"], ["mel"], perm=[0, 2, 1]),
    ]
    inits = [
        *encoder.graph.initializer, *body_graph.initializer,
        const("one_index", TensorProto.INT64, [1], [1]),
        const("batch_mels", TensorProto.INT64, [2], [1, s.mels]),
        const("scalar_shape", TensorProto.INT64, [0], []),
        const("one_shape", TensorProto.INT64, [1], [1]),
        const("one_f", TensorProto.FLOAT, [], [1.0]),
        const("thousand", TensorProto.FLOAT, [], [1000.0]),
    ]
    inputs = [*encoder.graph.input,
              helper.make_tensor_value_info("depth", TensorProto.FLOAT, []),
              helper.make_tensor_value_info("steps", TensorProto.INT64, [])]
    graph = helper.make_graph(main_nodes, "acoustic", inputs,
                              [helper.make_tensor_value_info("mel", TensorProto.FLOAT,
                                                             [1, "n_frames", s.mels])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = encoder.ir_version
    path = folder / "acoustic.onnx"
    onnx.save(model, str(path))
    return path


def build_vocoder(s: Shapes, folder: Path) -> Path:
    path = folder / "model.onnx"
    _export(NsfHifiGan(s), (torch.zeros(1, 50, s.mels), torch.full((1, 50), 220.0)), path,
            ["mel", "f0"], ["waveform"],
            {"mel": {1: "n_frames"}, "f0": {1: "n_frames"}, "waveform": {1: "n_samples"}})
    return path


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_bank(s: Shapes, folder: Path) -> None:
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    audio = {"sample_rate": s.sample_rate, "hop_size": s.hop, "num_mel_bins": s.mels,
             "mel_fmin": 40, "mel_fmax": 16000, "mel_base": "e", "win_size": 2048,
             "fft_size": 2048}
    (folder / "character.txt").write_text("name=Random Weights\n")
    (folder / "phonemes.json").write_text(json.dumps({p: i for i, p in enumerate(PHONEMES)}))
    (folder / "languages.json").write_text(json.dumps({"en": 1}))
    np.random.default_rng(0).standard_normal(s.hidden).astype("<f4").tofile(
        folder / "random.emb")
    (folder / "dsconfig.yaml").write_text(yaml.safe_dump({
        "acoustic": "acoustic.onnx", "phonemes": "phonemes.json", "languages": "languages.json",
        "use_lang_id": True, "vocoder": "nsf_hifigan", "hidden_size": s.hidden,
        "use_key_shift_embed": True, "use_speed_embed": True, "use_variable_depth": True,
        "use_continuous_acceleration": True, "max_depth": 1.0, "speakers": ["random"],
        "mel_scale": "slaney", **audio}))
    build_acoustic(s, folder)
    (folder / "dsvocoder").mkdir(exist_ok=True)
    (folder / "dsvocoder" / "vocoder.yaml").write_text(yaml.safe_dump(
        {"name": "nsf_hifigan", "model": "model.onnx", "pitch_controllable": True, **audio}))
    build_vocoder(s, folder / "dsvocoder")
    (folder / "READY").write_text("")


def bank_folder(s: Shapes, rebuild: bool) -> Path:
    digest = hashlib.sha256(json.dumps(asdict(s)).encode() + Path(__file__).read_bytes())
    folder = Path(tempfile.gettempdir()) / f"encore-bench-voicebank-{digest.hexdigest()[:12]}"
    if rebuild or not (folder / "READY").is_file():
        start = time.perf_counter()
        build_bank(s, folder)
        print(f"built the random-weight bank in {time.perf_counter() - start:.1f} s: {folder}")
    else:
        print(f"reusing the random-weight bank in {folder}")
    return folder


# ---- the benchmark ----------------------------------------------------------------------------

def phrase(seconds: float, tempo: float = 120.0) -> PhrasePlan:
    """One syllable a beat: ``seconds`` of singing at ``tempo``."""
    words = [("n ay t", "night"), ("l ay t", "light"), ("s ow", "so"), ("b r ay t", "bright"),
             ("w iy", "we"), ("s ih ng", "sing"), ("t uw", "to"), ("dh ah", "the")]
    beats = max(1, round(seconds * tempo / 60))
    syllables = tuple(
        SungSyllable(text=w, word=w, phonemes=tuple(ph.split()),
                     notes=(SungNote(60 + (2 * i) % 12, 4.0 + i, 1.0),))
        for i, (ph, w) in ((i, words[i % len(words)]) for i in range(beats)))
    return PhrasePlan(bar=1, section="verse", text=" ".join(s.word for s in syllables),
                      syllables=syllables)


# ---- today vs the live path ------------------------------------------------------------------

BUSY_CODE = ("import numpy as np\n"
             "a = np.random.default_rng(0).random((400, 400), dtype=np.float32)\n"
             "while True:\n    a = (a @ a) / 400.0\n")


def _busy(n: int) -> list:
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, "-c", BUSY_CODE], env=env) for _ in range(n)]


def _stop(processes: list) -> None:
    for p in processes:
        p.terminate()
    for p in processes:
        p.wait(5)


def _spread(values: list[float]) -> str:
    return (f"{statistics.median(values):6.3f} [{min(values):.3f}-{max(values):.3f}]"
            if values else "     -")


def _timed_runs(paths: dict, timing, steps_list: list[int], runs: int,
                audio_seconds: float) -> dict:
    """{(path, steps): {"acoustic": [...], "vocoder": [...], "phrase": [...], "cpu": [...]}}
    in real-time factors, the paths alternating within each run (run 0 is a warm-up)."""
    out: dict = {}
    for run in range(runs + 1):
        for steps in steps_list:
            for name, runner in paths.items():
                cpu, wall = time.process_time(), time.perf_counter()
                runner.synthesize(timing, steps)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if run == 0:
                    continue
                row = out.setdefault((name, steps), {})
                for stage, seconds in runner.stage_seconds.items():
                    row.setdefault(stage, []).append(seconds / audio_seconds)
                row.setdefault("phrase", []).append(wall / audio_seconds)
                row.setdefault("cpu", []).append(cpu / audio_seconds)
    return out


def _print_runs(title: str, results: dict, steps_list: list[int]) -> None:
    print(f"\n{title}: real-time factor, median [min-max]; cpu = CPU s per s of audio")
    print(f"{'steps':>5}  {'path':<6} {'acoustic':>22} {'vocoder':>22} {'phrase':>22} "
          f"{'cpu':>22}")
    for steps in steps_list:
        for name in ("today", "live"):
            row = results.get((name, steps), {})
            print(f"{steps:>5}  {name:<6} {_spread(row.get('acoustic', [])):>22} "
                  f"{_spread(row.get('vocoder', [])):>22} {_spread(row.get('phrase', [])):>22} "
                  f"{_spread(row.get('cpu', [])):>22}", flush=True)


def _cents(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    both = (a > 0) & (b > 0)
    return 1200 * np.abs(np.log2(a[both] / b[both]))


def _quality(today, live, timing, steps_list: list[int], random_weights: bool) -> None:
    from engine.voice.fallback_singer import _load_pyworld

    world = _load_pyworld()
    mel20, f0 = today._mel(timing, 20)
    print("\nquality against the unaccelerated bank at 20 steps"
          + (" (random weights: see the notes)" if random_weights else ""))
    for steps in sorted(set(steps_list) | {20}):  # 20 again: the graph draws new noise
        mel, _ = today._mel(timing, steps)
        print(f"  mel at {steps:>2} steps vs 20: RMS difference "
              f"{np.sqrt(np.mean((mel - mel20) ** 2)):.3f} log-mel units (mel RMS "
              f"{np.sqrt(np.mean(mel20 ** 2)):.3f}; 20 vs 20 is the run-to-run spread)")
    ref = today.vocoder.run({"mel": mel20, "f0": f0[None]})["waveform"].reshape(-1)
    got = live.vocoder.run({"mel": mel20, "f0": f0[None]})["waveform"].reshape(-1)
    snr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((got - ref) ** 2.0))
    print(f"  int8 vocoder vs float, same mel: waveform signal-to-difference {snr:.1f} dB, "
          f"peak difference {np.abs(got - ref).max():.4f} (peak {np.abs(ref).max():.3f})")
    period = 1000 * today.hop_size / today.sample_rate
    tracks = {}
    for name, wave in (("float", ref), ("int8", got)):
        track, _ = world.harvest(wave.astype(np.float64), today.sample_rate,
                                 f0_floor=60.0, f0_ceil=1100.0, frame_period=period)
        tracks[name] = track[:len(f0)]
    between = _cents(tracks["int8"], tracks["float"])
    print(f"  sung pitch, int8 vs float vocoder: median {np.median(between):.1f} cents, p90 "
          f"{np.percentile(between, 90):.1f} cents over {between.size} frames voiced in both")
    for name, track in tracks.items():
        off = _cents(track, f0[:len(track)].astype(np.float64))
        print(f"  sung pitch vs the f0 asked for ({name}): median {np.median(off):.1f} cents "
              f"over {off.size} voiced frames")


def compare(folder: Path, args: argparse.Namespace) -> None:
    from engine.voice.accelerate import CACHE_ENV

    os.environ.setdefault(CACHE_ENV, str(Path(tempfile.gettempdir()) / "encore-bench-cache"))
    began = time.perf_counter()
    today = DiffSingerRunner(folder, RenderSettings(), threads=args.threads)
    loaded = time.perf_counter()
    live = DiffSingerRunner(folder, RenderSettings(), threads=args.threads, live=True)
    print(f"loaded: today {loaded - began:.1f} s, live {time.perf_counter() - loaded:.1f} s "
          f"(the first live load makes the int8 vocoder copy; later ones read it: "
          f"{live.vocoder.path})")
    timing = today.prepare(phrase(args.seconds), 120.0)
    audio_seconds = timing.n_frames * today.hop_size / today.sample_rate
    paths = {"today": today, "live": live}
    print(f"phrase: {audio_seconds:.2f} s of audio; {args.runs} runs after a warm-up; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} (a shared machine)")
    quiet = _timed_runs(paths, timing, args.steps, args.runs, audio_seconds)
    _print_runs(f"as the machine is (load average now {os.getloadavg()[0]:.2f})", quiet,
                args.steps)
    if args.busy:
        processes = _busy(args.busy)
        try:
            time.sleep(1.0)
            busy = _timed_runs(paths, timing, args.steps, args.runs, audio_seconds)
            _print_runs(f"with {args.busy} busy process(es) (load average now "
                        f"{os.getloadavg()[0]:.2f})", busy, args.steps)
        finally:
            _stop(processes)
    _quality(today, live, timing, args.steps, random_weights=args.bank is None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 10, 20])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime intra-op threads (default: its own choice)")
    parser.add_argument("--small", action="store_true", help="tiny shapes: a smoke run")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--compare", action="store_true",
                        help="today's path vs the live path, per stage, with quality costs")
    parser.add_argument("--busy", type=int, default=1,
                        help="--compare: busy processes for the second half (0: none)")
    parser.add_argument("--bank", default=None,
                        help="--compare: a voicebank folder instead of the random-weight one "
                             "(e.g. models_onnx/encore_voice: trained weights)")
    args = parser.parse_args()

    if args.compare and args.bank:
        compare(Path(args.bank), args)
        return
    shapes = SMALL if args.small else Shapes()
    folder = bank_folder(shapes, args.rebuild)
    if args.compare:
        compare(folder, args)
        return
    acoustic_params = parameters(Encoder(shapes)) + parameters(WaveNet(shapes))
    vocoder_params = parameters(NsfHifiGan(shapes))
    singer = DiffSingerRunner(folder, RenderSettings(), threads=args.threads)
    plan = phrase(args.seconds)
    timing = singer.prepare(plan, 120.0)
    audio_seconds = timing.n_frames * singer.hop_size / singer.sample_rate
    print(f"acoustic {acoustic_params / 1e6:.1f}M parameters, vocoder "
          f"{vocoder_params / 1e6:.1f}M; {singer.acoustic.provider}, threads "
          f"{args.threads or 'default'}, {os.cpu_count()} CPUs ({platform.processor() or '?'}), "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"phrase: {len(plan.syllables)} syllables, {args.seconds:.1f} s sung, "
          f"{audio_seconds:.2f} s of audio ({timing.n_frames} frames); median of {args.runs} "
          f"runs after a warm-up; random weights are fine for timing")

    mel = singer.acoustic.run({
        "tokens": timing.token_ids[None], "languages": np.zeros((1, len(timing.phonemes)),
                                                                np.int64),
        "durations": timing.durations[None], "f0": timing.f0[None],
        "gender": np.zeros((1, timing.n_frames), np.float32),
        "velocity": np.ones((1, timing.n_frames), np.float32),
        "spk_embed": np.zeros((1, timing.n_frames, shapes.hidden), np.float32),
        "depth": np.array(1.0, np.float32), "steps": np.array(1, np.int64)})["mel"]
    vocoder_times = []
    for _ in range(args.runs + 1):
        start = time.perf_counter()
        singer.vocoder.run({"mel": mel, "f0": timing.f0[None]})
        vocoder_times.append(time.perf_counter() - start)
    vocoder_s = statistics.median(vocoder_times[1:])
    print(f"vocoder alone: {vocoder_s:.3f} s, RTF {vocoder_s / audio_seconds:.3f}")
    print(f"{'steps':>5}  {'render s':>9}  {'RTF':>6}  {'acoustic RTF':>12}")
    for steps in args.steps:
        times = []
        for _ in range(args.runs + 1):
            start = time.perf_counter()
            audio = singer.render(plan, 120.0, steps=steps)
            times.append(time.perf_counter() - start)
        assert len(audio.samples) == timing.n_frames * singer.hop_size
        total = statistics.median(times[1:])
        print(f"{steps:>5}  {total:>9.3f}  {total / audio_seconds:>6.3f}  "
              f"{(total - vocoder_s) / audio_seconds:>12.3f}", flush=True)


if __name__ == "__main__":
    main()
