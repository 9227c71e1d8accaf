"""Encore's acoustic model: a small DiffSinger-architecture model (phonemes + durations +
f0 -> 128-bin log mel), with a rectified-flow mel decoder started from a coarse mel.

    model = AcousticModel(AcousticConfig())
    coarse, cond = model.encode(tokens, durations, f0)     # training: losses in `loss`
    export_onnx(model, "acoustic.onnx")                    # the DiffSinger contract

Architecture (DiffSinger's, scaled down to train on two CPU cores):

- token encoder: phoneme embedding + a linear duration embedding (log(1 + frames)) ->
  ``enc_layers`` gated residual conv blocks over the tokens;
- length regulator: each frame takes its token's encoding (found from the cumulative
  durations, as DiffSinger's graph does), plus a linear embedding of where in the token it
  is (0..1) and of the token's length, plus the pitch embedding: a linear layer on
  log(1 + f0 / 700);
- frame decoder: ``dec_layers`` dilated gated conv blocks -> the condition ``cond`` and,
  through a linear head, the *coarse mel* (DiffSinger's auxiliary decoder; trained with L1);
- velocity network: ``flow_layers`` gated conv blocks on (x_t, cond, t) -> the velocity of a
  rectified flow x_t = (1 - t) noise + t mel (trained with MSE on mel - noise).

Sampling (inside the ONNX graph, as in real DiffSinger graphs): shallow flow from the coarse
mel. With ``depth`` d in 0..1 the flow starts at t0 = 1 - d from
x = d * noise + (1 - d) * coarse and takes ``steps`` Euler steps to t = 1 (depth 0 returns
the coarse mel; depth 1 is a full flow from noise). The noise is a fixed table (seeded,
stored in the graph, tiled over frames), so a phrase renders the same every time.

Mels are scaled to about -1..1 inside the model: (mel - SPEC_MIN) / (SPEC_MAX - SPEC_MIN)
* 2 - 1, as DiffSinger does.

Export: ``torch.onnx.export`` in torch 2.13 defaults to the torch.export (dynamo)
exporter, which cannot turn a loop whose trip count is an input into an ONNX ``Loop``.
The legacy TorchScript exporter (``dynamo=False``, deprecated but present) can: the Euler
loop is a ``torch.jit.script``-ed module (:class:`EulerSampler`) inside a traced wrapper,
and comes out as one ``Loop`` node whose trip count is the ``steps`` input, exactly how
openvpi's DiffSinger exports its diffusion loop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

SPEC_MIN = -12.0
SPEC_MAX = 3.0
NOISE_FRAMES = 512
NOISE_SEED = 20261124


@dataclass(frozen=True)
class AcousticConfig:
    """Sizes of the acoustic model."""

    n_tokens: int = 42
    n_mels: int = 128
    hidden: int = 192
    enc_layers: int = 3
    dec_layers: int = 4
    flow_layers: int = 4
    flow_hidden: int = 192
    kernel: int = 5
    dec_kernel: int = 3

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def normalize(mel: torch.Tensor) -> torch.Tensor:
    """Log mel -> about -1..1."""
    return (mel - SPEC_MIN) / (SPEC_MAX - SPEC_MIN) * 2.0 - 1.0


def denormalize(x: torch.Tensor) -> torch.Tensor:
    return (x + 1.0) / 2.0 * (SPEC_MAX - SPEC_MIN) + SPEC_MIN


class GatedConv(nn.Module):
    """Pre-norm residual block: x + W(GLU(conv(LN(x) + extra))) over [B, T, C]."""

    def __init__(self, channels: int, kernel: int, dilation: int = 1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.conv = nn.Conv1d(channels, 2 * channels, kernel, dilation=dilation,
                              padding=dilation * (kernel - 1) // 2)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, extra: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = (self.norm(x) + extra) * mask
        h = self.conv(h.transpose(1, 2)).transpose(1, 2)
        h = F.glu(h, dim=-1)
        return (x + self.out(h)) * mask


def regulate(encoded: torch.Tensor, durations: torch.Tensor, n_frames_like: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token encodings [B, T, H] onto frames (the length regulator).

    Returns (per-frame encodings [B, F, H], position within the token 0..1 [B, F, 1],
    log(1 + token length) [B, F, 1]); F is ``n_frames_like.shape[1]``. Frame f belongs to
    the token k with ends[k-1] <= f < ends[k]; frames past the last token take the last.
    """
    frames = (torch.ones_like(n_frames_like[0]).cumsum(0) - 1.0)  # [F] 0, 1, ...
    ends = durations.cumsum(1).to(frames.dtype)  # [B, T]
    index = (ends.unsqueeze(1) <= frames.view(1, -1, 1)).sum(-1)  # [B, F]
    index = index.clamp(max=durations.shape[1] - 1)
    dur = durations.to(frames.dtype).clamp(min=1.0)
    start = ends - durations.to(frames.dtype)
    dur_f = torch.gather(dur, 1, index)
    pos = (frames.view(1, -1) - torch.gather(start, 1, index)) / dur_f
    gathered = torch.gather(encoded, 1, index.unsqueeze(-1).expand(-1, -1, encoded.shape[2]))
    return gathered, pos.clamp(0.0, 1.0).unsqueeze(-1), torch.log1p(dur_f).unsqueeze(-1)


def pitch_feature(f0: torch.Tensor) -> torch.Tensor:
    """[B, F] Hz -> [B, F, 1]: log(1 + f0 / 700), DiffSinger's pitch embedding input."""
    return torch.log1p(f0.clamp(min=1.0) / 700.0).unsqueeze(-1)


class TimeEmbedding(nn.Module):
    """t in 0..1 -> [B, 1, C]: sinusoids and a small MLP."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / max(half - 1, 1))
        self.register_buffer("freqs", freqs * 1000.0, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * half, channels), nn.SiLU(),
                                 nn.Linear(channels, channels))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = t.reshape(-1, 1) * self.freqs.view(1, -1)
        emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)
        return self.mlp(emb).unsqueeze(1)


class Velocity(nn.Module):
    """The flow's velocity network: v(x_t, t | cond), all [B, F, n_mels] / [B, F, H]."""

    def __init__(self, cfg: AcousticConfig) -> None:
        super().__init__()
        h = cfg.flow_hidden
        self.inp = nn.Linear(cfg.n_mels, h)
        self.cond = nn.Linear(cfg.hidden, h)
        self.time = TimeEmbedding(h)
        self.blocks = nn.ModuleList([GatedConv(h, 3, 2 ** (i % 4))
                                     for i in range(cfg.flow_layers)])
        self.out = nn.Linear(h, cfg.n_mels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(x[:, :, :1])
        c = self.cond(cond) + self.time(t)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c, mask)
        return self.out(h)


class AcousticModel(nn.Module):
    """See the module notes."""

    def __init__(self, cfg: AcousticConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.embed = nn.Embedding(cfg.n_tokens, h, padding_idx=0)
        self.dur_embed = nn.Linear(1, h)
        self.encoder = nn.ModuleList([GatedConv(h, cfg.kernel) for _ in range(cfg.enc_layers)])
        self.pos_embed = nn.Linear(2, h)
        self.pitch_embed = nn.Linear(1, h)
        self.decoder = nn.ModuleList([GatedConv(h, cfg.dec_kernel, (1, 2, 4, 1)[i % 4])
                                      for i in range(cfg.dec_layers)])
        self.coarse = nn.Linear(h, cfg.n_mels)
        self.velocity = Velocity(cfg)
        gen = torch.Generator().manual_seed(NOISE_SEED)
        self.register_buffer("noise", torch.randn(NOISE_FRAMES, cfg.n_mels, generator=gen))

    def encode(self, tokens: torch.Tensor, durations: torch.Tensor, f0: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(coarse mel, normalized [B, F, n_mels]; cond [B, F, H]) for a batch."""
        tok_mask = (durations > 0).to(f0.dtype).unsqueeze(-1)
        x = self.embed(tokens) + self.dur_embed(torch.log1p(durations.to(f0.dtype)).unsqueeze(-1))
        x = x * tok_mask
        zero = torch.zeros_like(x[:, :1, :])
        for block in self.encoder:
            x = block(x, zero, tok_mask)
        frames, pos, logdur = regulate(x, durations, f0)
        y = frames + self.pos_embed(torch.cat([pos, logdur], -1)) + self.pitch_embed(
            pitch_feature(f0))
        frame_mask = torch.ones_like(y[:, :, :1])
        zero = torch.zeros_like(y[:, :1, :])
        for block in self.decoder:
            y = block(y, zero, frame_mask)
        return self.coarse(y), y

    def loss(self, tokens: torch.Tensor, durations: torch.Tensor, f0: torch.Tensor,
             mel: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training losses: L1 of the coarse mel and the flow's velocity MSE (masked frames
        [B, F]); mels are log mels, normalized here."""
        target = normalize(mel)
        coarse, cond = self.encode(tokens, durations, f0)
        m = mask.unsqueeze(-1)
        denom = m.sum() * target.shape[-1]
        l1 = ((coarse - target).abs() * m).sum() / denom
        t = torch.rand(target.shape[0], device=target.device)
        noise = torch.randn_like(target)
        tt = t.view(-1, 1, 1)
        x_t = (1 - tt) * noise + tt * target
        v = self.velocity(x_t, t, cond)
        flow = (((v - (target - noise)) ** 2) * m).sum() / denom
        return {"l1": l1, "flow": flow}

    @torch.no_grad()
    def sample(self, tokens: torch.Tensor, durations: torch.Tensor, f0: torch.Tensor,
               steps: int, depth: float) -> torch.Tensor:
        """Log mel [B, F, n_mels], as the ONNX graph computes it (PyTorch loop)."""
        coarse, cond = self.encode(tokens, durations, f0)
        x, t0 = start_point(coarse, self.noise, depth)
        dt = (1.0 - t0) / steps
        t = torch.full((coarse.shape[0],), t0)
        for _ in range(steps):
            x = x + dt * self.velocity(x, t, cond)
            t = t + dt
        return denormalize(x)


def tiled_noise(noise: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The fixed noise table [NOISE_FRAMES, M] tiled to ``like``'s [B, F, M]."""
    frames = (torch.ones_like(like[0, :, 0]).cumsum(0) - 1.0).long() % noise.shape[0]
    return noise[frames].unsqueeze(0).expand_as(like)


def start_point(coarse: torch.Tensor, noise: torch.Tensor, depth: torch.Tensor | float
                ) -> tuple[torch.Tensor, torch.Tensor | float]:
    """(x at t0, t0) of the shallow flow: t0 = 1 - depth."""
    d = depth.clamp(0.0, 1.0) if isinstance(depth, torch.Tensor) else min(max(depth, 0.0), 1.0)
    return d * tiled_noise(noise, coarse) + (1.0 - d) * coarse, 1.0 - d


class EulerSampler(nn.Module):
    """The Euler loop, written for ``torch.jit.script`` (so it exports as an ONNX Loop)."""

    def __init__(self, velocity: Velocity) -> None:
        super().__init__()
        self.velocity = velocity

    def forward(self, x: torch.Tensor, cond: torch.Tensor, t0: torch.Tensor,
                steps: torch.Tensor) -> torch.Tensor:
        n = int(steps)
        dt = (1.0 - t0) / steps.to(torch.float32)
        t = t0.reshape(1)
        for _ in range(n):
            x = x + dt * self.velocity(x, t, cond)
            t = t + dt
        return x


class _OnnxAcoustic(nn.Module):
    """tokens, durations, f0, steps, depth -> mel (the DiffSinger acoustic contract)."""

    def __init__(self, model: AcousticModel) -> None:
        super().__init__()
        self.model = model
        self.sampler = EulerSampler(model.velocity)
        self.spec_min = SPEC_MIN
        self.spec_range = SPEC_MAX - SPEC_MIN

    def forward(self, tokens: torch.Tensor, durations: torch.Tensor, f0: torch.Tensor,
                steps: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        coarse, cond = self.model.encode(tokens, durations, f0)
        d = depth.to(torch.float32).reshape(()).clamp(0.0, 1.0)
        x = d * tiled_noise(self.model.noise, coarse) + (1.0 - d) * coarse
        x = self.sampler(x, cond, 1.0 - d, steps.reshape(()).clamp(min=1))
        return (x + 1.0) / 2.0 * self.spec_range + self.spec_min


def export_onnx(model: AcousticModel, path: str | Path) -> Path:
    """Write ``model`` as a DiffSinger acoustic graph (opset 17): inputs tokens int64
    [1, n_tokens], durations int64 [1, n_tokens], f0 float32 [1, n_frames], steps int64
    0-d, depth float32 0-d; output mel float32 [1, n_frames, n_mels]."""
    import warnings

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    tokens = torch.tensor([[1, 5, 20, 1]], dtype=torch.long)
    durations = torch.tensor([[4, 3, 5, 4]], dtype=torch.long)
    f0 = torch.full((1, 16), 220.0)
    args = (tokens, durations, f0, torch.tensor(3, dtype=torch.long), torch.tensor(0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = torch.jit.script(_OnnxAcoustic(model).eval())
        torch.onnx.export(
            wrapper, args, str(path), dynamo=False, opset_version=17,
            input_names=["tokens", "durations", "f0", "steps", "depth"], output_names=["mel"],
            dynamic_axes={"tokens": {1: "n_tokens"}, "durations": {1: "n_tokens"},
                          "f0": {1: "n_frames"}, "mel": {1: "n_frames"}})
    return path
