"""Encore's vocoder: a small neural source-filter (NSF) vocoder of the harmonic-plus-noise
kind, 128-bin log mel + f0 -> 44.1 kHz waveform, hop 512.

    voc = Vocoder(VocoderConfig())
    wave = voc(mel, f0)                 # [B, F, 128], [B, F] Hz -> [B, F * 512]
    export_onnx(voc, "model.onnx")      # DiffSinger's vocoder contract

The source is what NSF vocoders use: a sine excitation built from f0 (its harmonics
k * f0, k = 1..``harmonics``, phases from the running sum of f0) and noise. The filter is
learned and conditioned on the mel, but instead of NSF-HiFiGAN's stack of sample-rate
convolutions (upsampling 8, 8, 2, 2, 2; far too slow to train on two CPU cores in the time
we had) it works at the frame rate and is applied by interpolation (DDSP's design):

- a conv net over frames reads the normalized mel and log f0 and gives, per frame, a log
  amplitude for each harmonic and a log gain for each of ``bands`` noise bands;
- each harmonic amplitude is a correction to a *hint* read straight off the mel: the mel's
  value at the harmonic's frequency (interpolated between bins) less the log of the band's
  width, so the untrained model already sounds like the mel, and harmonics above
  ``max_harmonic_hz`` (or Nyquist) are silenced;
- the noise is a fixed, seeded table of white noise, split once into mel-spaced bands by
  FFT masks (stored in the graph, tiled over time), each band scaled by its gain;
- frame values reach samples by linear interpolation between frame centres (the middle of
  each hop, where the mel frames are centred).

So its pitch is exactly the f0 it is given (the sinusoids are built from it), and its
timbre is as good as the frame net's reading of the mel: it cannot produce detail the mel
does not hold, and the noise part is coarse (``bands`` bands). Trained with a
multi-resolution STFT loss (:func:`stft_loss`) on the teacher's audio.

The graph is deterministic: the noise table is fixed and the phase starts at 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SAMPLE_RATE = 44100
HOP = 512
N_MELS = 128
FMIN = 40.0
FMAX = 16000.0
SPEC_MIN = -12.0
SPEC_MAX = 3.0
NOISE_SAMPLES = 1 << 14
NOISE_SEED = 441


@dataclass(frozen=True)
class VocoderConfig:
    """Sizes of the vocoder."""

    hidden: int = 128
    layers: int = 4
    harmonics: int = 64
    bands: int = 24
    max_harmonic_hz: float = 15000.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale (torch, exportable)."""
    f_sp = 200.0 / 3.0
    logstep = math.log(6.4) / 27.0
    lin = hz / f_sp
    log = 15.0 + torch.log(hz.clamp(min=1e-3) / 1000.0) / logstep
    return torch.where(hz >= 1000.0, log, lin)


def _mel_to_hz_np(mel: np.ndarray) -> np.ndarray:
    f_sp, logstep = 200.0 / 3, math.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(logstep * (mel - 15.0)), f_sp * mel)


def _hz_to_mel_np(hz: np.ndarray) -> np.ndarray:
    f_sp, logstep = 200.0 / 3, math.log(6.4) / 27.0
    hz = np.asarray(hz, dtype=np.float64)
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-3) / 1000.0) / logstep,
                    hz / f_sp)


def band_noise(bands: int, n: int = NOISE_SAMPLES, seed: int = NOISE_SEED) -> np.ndarray:
    """[bands, n] float32: one periodic white-noise table split into mel-spaced bands
    (FMIN..Nyquist) with FFT masks; each band has unit variance."""
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    edges = _mel_to_hz_np(np.linspace(_hz_to_mel_np(0.0), _hz_to_mel_np(SAMPLE_RATE / 2),
                                      bands + 1))
    out = np.zeros((bands, n), dtype=np.float64)
    for b in range(bands):
        sel = (freqs >= edges[b]) & (freqs < edges[b + 1]) if b < bands - 1 else \
            freqs >= edges[b]
        x = np.fft.irfft(np.where(sel, spec, 0), n)
        out[b] = x / (x.std() + 1e-12)
    return out.astype(np.float32)


class _Block(nn.Module):
    def __init__(self, ch: int, dilation: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(ch)
        self.conv = nn.Conv1d(ch, 2 * ch, 3, dilation=dilation, padding=dilation)
        self.out = nn.Linear(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.norm(x).transpose(1, 2)).transpose(1, 2)
        return x + self.out(F.glu(h, dim=-1))


def frames_to_samples(x: torch.Tensor, hop: int = HOP) -> torch.Tensor:
    """[B, F, C] frame values -> [B, F * hop, C], linear between frame centres (sample
    f * hop + hop / 2), held before the first centre and after the last."""
    n_frames = x.shape[1]
    idx = torch.ones_like(x[0, :, 0]).repeat_interleave(hop).cumsum(0) - 1.0  # 0..N-1
    pos = (idx - hop / 2 + 0.5) / hop
    pos = pos.clamp(min=0.0)
    i0 = pos.floor()
    w = (pos - i0).unsqueeze(0).unsqueeze(-1)
    i0 = i0.long().clamp(max=n_frames - 1)
    i1 = (i0 + 1).clamp(max=n_frames - 1)
    return x[:, i0] * (1.0 - w) + x[:, i1] * w


class Vocoder(nn.Module):
    """See the module notes. ``forward(mel [B, F, 128], f0 [B, F] Hz) -> [B, F * 512]``."""

    def __init__(self, cfg: VocoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.inp = nn.Linear(N_MELS + 1, h)
        self.blocks = nn.ModuleList([_Block(h, (1, 2, 4, 1)[i % 4]) for i in range(cfg.layers)])
        self.harm = nn.Linear(h, cfg.harmonics)
        self.noise_gain = nn.Linear(h, cfg.bands)
        for lin in (self.harm, self.noise_gain):
            nn.init.zeros_(lin.weight)
        nn.init.zeros_(self.harm.bias)
        nn.init.constant_(self.noise_gain.bias, -4.0)
        self.register_buffer("k", torch.arange(1, cfg.harmonics + 1, dtype=torch.float32))
        self.register_buffer("noise", torch.from_numpy(band_noise(cfg.bands)))
        mel_lo, mel_hi = float(_hz_to_mel_np(FMIN)), float(_hz_to_mel_np(FMAX))
        self.mel_lo = mel_lo
        self.mel_step = (mel_hi - mel_lo) / (N_MELS + 1)
        edges = _mel_to_hz_np(np.linspace(_hz_to_mel_np(0.0), _hz_to_mel_np(SAMPLE_RATE / 2),
                                          cfg.bands + 1))
        centres = np.sqrt(np.maximum(edges[:-1], 20.0) * edges[1:])
        pos = (_hz_to_mel_np(centres) - mel_lo) / self.mel_step - 1.0
        self.register_buffer("band_pos", torch.tensor(np.clip(pos, 0, N_MELS - 1),
                                                      dtype=torch.float32))

    def _mel_at(self, mel: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """mel [B, F, M] read at fractional bin positions pos [B, F, K] (clamped)."""
        pos = pos.clamp(0.0, N_MELS - 1.0)
        i0 = pos.floor()
        w = pos - i0
        i0 = i0.long()
        i1 = (i0 + 1).clamp(max=N_MELS - 1)
        return torch.gather(mel, 2, i0) * (1.0 - w) + torch.gather(mel, 2, i1) * w

    def controls(self, mel: torch.Tensor, f0: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per frame: harmonic amplitudes [B, F, K] (0 above the limit) and noise band gains
        [B, F, bands]."""
        f0 = f0.clamp(min=20.0)
        x = (mel - SPEC_MIN) / (SPEC_MAX - SPEC_MIN) * 2.0 - 1.0
        h = self.inp(torch.cat([x, torch.log(f0 / 200.0).unsqueeze(-1)], -1))
        for block in self.blocks:
            h = block(h)
        freqs = f0.unsqueeze(-1) * self.k.view(1, 1, -1)  # [B, F, K]
        mel_hz = _hz_to_mel(freqs)
        pos = (mel_hz - self.mel_lo) / self.mel_step - 1.0
        # band width in Hz at each harmonic: d(Hz)/d(mel) times two mel steps
        dhz = torch.where(freqs >= 1000.0, freqs * (math.log(6.4) / 27.0),
                          torch.full_like(freqs, 200.0 / 3.0)) * (2.0 * self.mel_step)
        hint = self._mel_at(mel, pos) + torch.log(dhz / 2048.0) - torch.log(
            (dhz / f0.unsqueeze(-1)).clamp(min=1.0))
        log_amp = (hint + self.harm(h)).clamp(max=2.0)
        limit = min(self.cfg.max_harmonic_hz, SAMPLE_RATE / 2 - 500.0)
        amp = torch.exp(log_amp) * (freqs < limit).to(mel.dtype)
        band_mel = self._mel_at(mel, self.band_pos.view(1, 1, -1).expand(
            mel.shape[0], mel.shape[1], -1))
        gain = torch.exp((0.5 * band_mel + self.noise_gain(h)).clamp(max=2.0))
        return amp, gain

    def forward(self, mel: torch.Tensor, f0: torch.Tensor,
                noise_offset: int = 0, phase0: torch.Tensor | None = None) -> torch.Tensor:
        amp, gain = self.controls(mel, f0)
        f0_s = frames_to_samples(f0.unsqueeze(-1)).squeeze(-1)  # [B, N]
        inc = f0_s.double() * (2.0 * math.pi / SAMPLE_RATE)
        phase = torch.remainder(torch.cumsum(inc, dim=1), 2.0 * math.pi).float()
        if phase0 is not None:
            phase = phase + phase0.view(-1, 1)
        amp_s = frames_to_samples(amp)  # [B, N, K]
        harmonic = (torch.sin(phase.unsqueeze(-1) * self.k.view(1, 1, -1)) * amp_s).sum(-1)
        n = f0_s.shape[1]
        idx = (torch.ones_like(f0_s[0]).cumsum(0) - 1.0).long()
        idx = (idx + noise_offset) % self.noise.shape[1]
        noise = self.noise[:, idx]  # [bands, N]
        gain_s = frames_to_samples(gain)  # [B, N, bands]
        noisy = (gain_s * noise.t().unsqueeze(0)).sum(-1)
        return (harmonic + noisy)[:, :n]


def stft_loss(pred: torch.Tensor, target: torch.Tensor,
              resolutions: tuple[tuple[int, int], ...] = ((2048, 512), (1024, 256), (512, 128),
                                                          (256, 64))) -> torch.Tensor:
    """Multi-resolution STFT loss (Parallel WaveGAN's): per (n_fft, hop), spectral
    convergence plus L1 of log magnitudes, averaged."""
    total = pred.new_zeros(())
    for n_fft, hop in resolutions:
        window = torch.hann_window(n_fft, device=pred.device)
        p = torch.stft(pred, n_fft, hop, window=window, return_complex=True).abs() + 1e-5
        t = torch.stft(target, n_fft, hop, window=window, return_complex=True).abs() + 1e-5
        sc = torch.linalg.norm(t - p) / torch.linalg.norm(t)
        mag = (torch.log(p) - torch.log(t)).abs().mean()
        total = total + sc + mag
    return total / len(resolutions)


class _OnnxVocoder(nn.Module):
    def __init__(self, voc: Vocoder) -> None:
        super().__init__()
        self.voc = voc

    def forward(self, mel: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
        return self.voc(mel, f0)


def export_onnx(voc: Vocoder, path: str | Path) -> Path:
    """Write ``voc`` as a DiffSinger vocoder graph (opset 17): mel float32 [1, n_frames,
    128], f0 float32 [1, n_frames] -> waveform float32 [1, n_samples]."""
    import warnings

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _OnnxVocoder(voc.eval()).eval()
    mel = torch.full((1, 6, N_MELS), -5.0)
    f0 = torch.full((1, 6), 220.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (mel, f0), str(path), dynamo=False, opset_version=17,
                          input_names=["mel", "f0"], output_names=["waveform"],
                          dynamic_axes={"mel": {1: "n_frames"}, "f0": {1: "n_frames"},
                                        "waveform": {1: "n_samples"}})
    return path
