"""MusicVAE in PyTorch, faithful to Magenta's music_vae (flat and hierarchical decoders).

Encoder: a bidirectional LSTM stack over the one-hot inputs of all parts; the code is the
concat of the last layer's final forward h and final backward h; ``mu = Dense(code)``,
``sigma = softplus(Dense(code))``.

Core decoder: a stacked LSTM whose initial state is ``tanh(Dense(cond))`` split in the order
c0, h0, c1, h1, ... and whose input each step is ``concat(previous output one-hot, cond)``;
logits = ``Dense(output_depth)``. In the flat model cond is z; in the hierarchical model a
conductor LSTM (state from z, zero input) emits one embedding per bar and each bar's core
decoder uses that embedding as its cond. Bar u starts from the last token of bar u-1. The
trio has one core decoder per part (melody, bass, drums) sharing the conductor.

Parameter names mirror Magenta's variable scopes so checkpoints convert one to one.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.music.encoding import PART_DEPTHS
from engine.untrusted import UntrustedFileError, check_file, excerpt, parse_json

FORMAT_VERSION = 1


@dataclass
class MusicVAEConfig:
    name: str = "mel_2bar"
    parts: tuple[str, ...] = ("melody",)
    bars: int = 2
    steps_per_bar: int = 16
    enc_size: int = 256  # units per direction
    enc_layers: int = 1
    z_size: int = 128
    dec_size: int = 256
    dec_layers: int = 2
    conductor_size: int = 0  # 0: flat decoder
    conductor_layers: int = 2
    free_bits: float = 0.0
    max_beta: float = 0.2
    beta_rate: float = 0.99999
    sampling_rate: float = 1000.0  # inverse-sigmoid scheduled sampling k; 0 = teacher forcing
    learning_rate: float = 1e-3
    decay_rate: float = 0.9999
    min_learning_rate: float = 1e-5
    clip_norm: float = 1.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.parts = tuple(self.parts)
        unknown = [p for p in self.parts if p not in PART_DEPTHS]
        if unknown:
            raise ValueError(f"unknown parts {unknown}; choose from {sorted(PART_DEPTHS)}")
        if not self.hierarchical and len(self.parts) != 1:
            raise ValueError("a flat decoder has one part; set conductor_size > 0 for several")

    @property
    def hierarchical(self) -> bool:
        return self.conductor_size > 0

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(PART_DEPTHS[p] for p in self.parts)

    @property
    def steps(self) -> int:
        return self.bars * self.steps_per_bar

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MusicVAEConfig:
        return cls(**json.loads(text))


class Encoder(nn.Module):
    def __init__(self, cfg: MusicVAEConfig):
        super().__init__()
        self.rnn = nn.LSTM(sum(cfg.depths), cfg.enc_size, cfg.enc_layers, batch_first=True,
                           bidirectional=True)
        self.mu = nn.Linear(2 * cfg.enc_size, cfg.z_size)
        self.sigma = nn.Linear(2 * cfg.enc_size, cfg.z_size)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, T, D) one-hot of all parts -> mu, sigma: (B, Z)."""
        _, (h, _) = self.rnn(x)  # h: (layers*2, B, H)
        code = torch.cat([h[-2], h[-1]], dim=-1)  # (B, 2H) final fw h, final bw h
        return self.mu(code), F.softplus(self.sigma(code))


def _initial_state(dense: nn.Linear, cond: Tensor, layers: int, size: int) -> tuple[Tensor, Tensor]:
    """tanh(Dense(cond)) split as c0, h0, c1, h1, ... -> (h, c) each (layers, B, H)."""
    flat = torch.tanh(dense(cond)).view(cond.shape[0], layers, 2, size)  # (B, L, [c,h], H)
    c = flat[:, :, 0].transpose(0, 1).contiguous()
    h = flat[:, :, 1].transpose(0, 1).contiguous()
    return h, c


class CoreDecoder(nn.Module):
    """Stacked LSTM over one part, conditioned on ``cond`` (z or a conductor embedding)."""

    def __init__(self, depth: int, cond_size: int, size: int, layers: int):
        super().__init__()
        self.depth, self.size, self.layers = depth, size, layers
        self.z_to_initial_state = nn.Linear(cond_size, 2 * size * layers)
        self.rnn = nn.LSTM(depth + cond_size, size, layers, batch_first=True)
        self.output_projection = nn.Linear(size, depth)

    def initial_state(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        return _initial_state(self.z_to_initial_state, cond, self.layers, self.size)

    def teacher_forced(self, cond: Tensor, inputs: Tensor) -> Tensor:
        """cond (B, C), inputs (B, T, depth) previous tokens -> logits (B, T, depth)."""
        state = self.initial_state(cond)
        x = torch.cat([inputs, cond[:, None].expand(-1, inputs.shape[1], -1)], dim=-1)
        out, _ = self.rnn(x, state)  # (B, T, H)
        return self.output_projection(out)

    def step(self, cond: Tensor, prev: Tensor, state: tuple[Tensor, Tensor]
             ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One step: prev (B, depth) -> logits (B, depth), new state."""
        out, state = self.rnn(torch.cat([prev, cond], dim=-1)[:, None], state)  # (B, 1, H)
        return self.output_projection(out[:, 0]), state


def select(logits: Tensor, temperature: Tensor, uniform: Tensor) -> Tensor:
    """Categorical sample at ``temperature`` by the Gumbel-max trick; argmax at 0.

    logits, uniform: (B, depth); temperature: 0-d. Returns class indices (B,).
    """
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-10, 1.0 - 1e-7)))
    return torch.argmax(logits + temperature * gumbel, dim=-1)


class MusicVAE(nn.Module):
    def __init__(self, cfg: MusicVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        cond = cfg.conductor_size if cfg.hierarchical else cfg.z_size
        if cfg.hierarchical:
            self.conductor_initial_state = nn.Linear(cfg.z_size,
                                                     2 * cfg.conductor_size * cfg.conductor_layers)
            self.conductor = nn.LSTM(1, cfg.conductor_size, cfg.conductor_layers, batch_first=True)
        self.cores = nn.ModuleList(
            CoreDecoder(d, cond, cfg.dec_size, cfg.dec_layers) for d in cfg.depths)

    # ---- decoder pieces -------------------------------------------------------------
    def bar_conds(self, z: Tensor) -> Tensor:
        """z (B, Z) -> per-bar conditioning (B, U, C): conductor outputs, or z for flat."""
        cfg = self.cfg
        if not cfg.hierarchical:
            return z[:, None]
        state = _initial_state(self.conductor_initial_state, z, cfg.conductor_layers,
                               cfg.conductor_size)
        zeros = z.new_zeros(z.shape[0], cfg.bars, 1)
        out, _ = self.conductor(zeros, state)  # (B, U, C)
        return out

    def split_parts(self, x: Tensor) -> list[Tensor]:
        return list(torch.split(x, list(self.cfg.depths), dim=-1))

    def teacher_forced_logits(self, z: Tensor, targets: Tensor) -> list[Tensor]:
        """targets (B, T, D) one-hot -> per-part logits [(B, T, depth)].

        All bars run as one batch: bar u's core decoder starts from its own conductor
        embedding and from the ground-truth last token of bar u-1.
        """
        conds = self.bar_conds(z)  # (B, U, C)
        batch, units = conds.shape[:2]
        seg = targets.shape[1] // units
        flat_conds = conds.reshape(batch * units, -1)  # (B*U, C)
        logits = []
        for core, part in zip(self.cores, self.split_parts(targets), strict=True):
            prev = torch.cat([part.new_zeros(batch, 1, part.shape[2]), part[:, :-1]], 1)
            prev = prev.reshape(batch * units, seg, -1)  # (B*U, seg, depth)
            out = core.teacher_forced(flat_conds, prev)  # (B*U, seg, depth)
            logits.append(out.reshape(batch, units * seg, -1))
        return logits

    def sampled_logits(self, z: Tensor, targets: Tensor, sample_prob: float,
                       generator: torch.Generator | None = None) -> list[Tensor]:
        """Scheduled sampling: each step's input is the model's own sample with
        probability ``sample_prob``, else the ground truth (Magenta's sampling schedule)."""
        conds = self.bar_conds(z)
        units = conds.shape[1]
        seg = targets.shape[1] // units
        batch = z.shape[0]
        all_logits = []
        for core, part in zip(self.cores, self.split_parts(targets), strict=True):
            prev = part.new_zeros(batch, part.shape[2])
            steps = []
            for u in range(units):
                state = core.initial_state(conds[:, u])
                for t in range(u * seg, (u + 1) * seg):
                    logits, state = core.step(conds[:, u], prev, state)
                    steps.append(logits)
                    with torch.no_grad():
                        sampled = torch.distributions.Categorical(logits=logits).sample()
                        use = torch.rand(batch, generator=generator, device=z.device) < sample_prob
                        own = F.one_hot(sampled, core.depth).to(part.dtype)
                        prev = torch.where(use[:, None], own, part[:, t])
            all_logits.append(torch.stack(steps, dim=1))
        return all_logits

    def decode(self, z: Tensor, temperature: Tensor, uniform: Tensor) -> tuple[Tensor, Tensor]:
        """Free-running decode of a whole segment.

        z (B, Z); temperature 0-d (0 = argmax); uniform (B, T, D) noise in (0, 1).
        Returns events (B, P, T) int64 and the logits of the decoded path (B, T, D).
        """
        conds = self.bar_conds(z)
        units = conds.shape[1]
        seg = self.cfg.steps // units
        noise = self.split_parts(uniform)
        events, logits_out = [], []
        for core, part_noise in zip(self.cores, noise, strict=True):
            prev = z.new_zeros(z.shape[0], core.depth)
            part_events, part_logits = [], []
            for u in range(units):
                state = core.initial_state(conds[:, u])
                for t in range(u * seg, (u + 1) * seg):
                    logits, state = core.step(conds[:, u], prev, state)
                    index = select(logits, temperature, part_noise[:, t])
                    prev = F.one_hot(index, core.depth).to(z.dtype)
                    part_events.append(index)
                    part_logits.append(logits)
            events.append(torch.stack(part_events, dim=1))
            logits_out.append(torch.stack(part_logits, dim=1))
        return torch.stack(events, dim=1), torch.cat(logits_out, dim=-1)

    # ---- losses -------------------------------------------------------------------
    def loss(self, x: Tensor, step: int, generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        """x (B, T, D) one-hot. Magenta's loss: mean recon + beta * mean(KL beyond free bits).
        A step whose part is all zeros (a line the window's source lacks) adds no loss."""
        cfg = self.cfg
        mu, sigma = self.encoder(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        z = mu + sigma * eps
        if cfg.sampling_rate > 0:
            k = cfg.sampling_rate
            sample_prob = 1.0 - k / (k + math.exp(step / k))
            logits = self.sampled_logits(z, x, sample_prob, generator)
        else:
            sample_prob = 0.0
            logits = self.teacher_forced_logits(z, x)
        recon = x.new_zeros(x.shape[0])
        correct = []
        for part_logits, part in zip(logits, self.split_parts(x), strict=True):
            target = part.argmax(-1)
            known = part.sum(-1)  # 1, or 0 where the data has no such line (left out)
            recon = recon + (F.cross_entropy(part_logits.transpose(1, 2), target,
                                             reduction="none") * known).sum(-1)
            hits = (part_logits.argmax(-1) == target).float() * known
            correct.append((hits.sum() / known.sum().clamp(min=1.0)).item())
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - 1.0 - torch.log(sigma.pow(2) + 1e-12)).sum(-1)
        kl_cost = torch.clamp(kl - cfg.free_bits * math.log(2.0), min=0.0)
        beta = (1.0 - cfg.beta_rate ** step) * cfg.max_beta
        loss = recon.mean() + beta * kl_cost.mean()
        stats = {"loss": loss.item(), "recon": recon.mean().item(), "kl_bits":
                 kl.mean().item() / math.log(2.0), "beta": beta, "sample_prob": sample_prob}
        for name, acc in zip(cfg.parts, correct, strict=True):
            stats[f"acc_{name}"] = acc
        return loss, stats


def learning_rate(cfg: MusicVAEConfig, step: int) -> float:
    """Magenta's decay: (lr - min) * decay^step + min."""
    return (cfg.learning_rate - cfg.min_learning_rate) * cfg.decay_rate ** step + \
        cfg.min_learning_rate


def save_checkpoint(path, model: MusicVAE, step: int, extra: dict | None = None,
                    training: dict | None = None) -> None:
    """Config, weights and step; ``training`` (optimiser state etc.) lets a run resume. The
    file is written aside and renamed into place: a run killed while saving keeps its
    previous checkpoint whole."""
    from export.distributed import save_atomic

    blob = {"format_version": FORMAT_VERSION, "config": model.cfg.to_json(), "step": step,
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            "extra": extra or {}}
    if training is not None:
        blob["training"] = training
    save_atomic(blob, Path(path))


MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
"""A model name: it names files (``<name>.decoder.onnx``), so it is one plain file name."""
CONFIG_LIMITS = {"bars": 64, "steps_per_bar": 96, "enc_size": 4096, "enc_layers": 8,
                 "z_size": 4096, "dec_size": 4096, "dec_layers": 8, "conductor_size": 4096,
                 "conductor_layers": 8}
"""The largest value of each size a checkpoint's config may give (ours are 128..512)."""
MAX_CHECKPOINT_BYTES = 512 * 2**20  # ours are a few MB
CHECKPOINT_FIX = ("make one with `encore train musicvae` or `encore convert magenta-js`; a "
                  ".pt file from elsewhere is read as weights only")


def check_model_name(name: object, where: object) -> str:
    """``name`` when it is a plain file name (letters, digits, _ . -), else refused: a name
    read from a file never becomes a path outside the folder the user named."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name) or ".." in name:
        raise UntrustedFileError(where, f"model name {excerpt(name)}: a name is letters, digits, "
                                        "'_', '-' and '.' (at most 64, no '..')",
                                 "rename it: `encore train musicvae --name NAME`")
    return name


def checked_config(text: object, where: object) -> MusicVAEConfig:
    """A checkpoint's config (JSON text) into a MusicVAEConfig, every field checked."""
    fix = CHECKPOINT_FIX
    if not isinstance(text, str):
        raise UntrustedFileError(where, "its config is not JSON text", fix)
    data = parse_json(text, where, fix)
    if not isinstance(data, dict):
        raise UntrustedFileError(where, f"its config is not an object: {excerpt(data)}", fix)
    known = {f.name: f for f in fields(MusicVAEConfig)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UntrustedFileError(where, f"unknown config keys {excerpt(unknown)}", fix)
    for key, value in data.items():
        if key in CONFIG_LIMITS:
            low = 0 if key == "conductor_size" else 1
            if type(value) is not int or not low <= value <= CONFIG_LIMITS[key]:
                raise UntrustedFileError(where, f"config {key} = {excerpt(value)}; it must be "
                                                f"a whole number {low}..{CONFIG_LIMITS[key]}",
                                         fix)
        elif key == "parts":
            if not isinstance(value, list) or not 1 <= len(value) <= 3 or \
                    not all(isinstance(p, str) and p in PART_DEPTHS for p in value):
                raise UntrustedFileError(where, f"config parts = {excerpt(value)}; parts are "
                                                f"{sorted(PART_DEPTHS)}", fix)
        elif key == "extra":
            if not isinstance(value, dict):
                raise UntrustedFileError(where, "config extra is not an object", fix)
        elif key != "name" and (type(value) not in (int, float) or not math.isfinite(value)):
            raise UntrustedFileError(where, f"config {key} = {excerpt(value)}; a number", fix)
    check_model_name(data.get("name", MusicVAEConfig.name), where)
    try:
        return MusicVAEConfig(**data)
    except (TypeError, ValueError) as err:
        raise UntrustedFileError(where, f"its config cannot be used ({excerpt(str(err), 160)})",
                                 fix) from None


def load_checkpoint(path) -> tuple[MusicVAE, dict]:
    """A MusicVAE and the checkpoint's contents from ``path``, read as weights only: a
    pickled object of any other kind (which could run code when unpickled) is refused,
    so is a config out of range or weights that do not fit it."""
    fix = CHECKPOINT_FIX
    check_file(path, fix)
    if Path(path).stat().st_size > MAX_CHECKPOINT_BYTES:
        raise UntrustedFileError(path, "larger than 512 MiB; no MusicVAE checkpoint is", fix)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UntrustedFileError(path, "it holds objects other than weights, which could run "
                                       "code: it is not loaded", fix) from None
    except Exception as err:  # noqa: BLE001 - the unpickler and zip reader raise many types
        raise UntrustedFileError(path, "not a checkpoint of weights Encore can read "
                                       f"({type(err).__name__}: {excerpt(str(err), 160)})",
                                 fix) from None
    if not isinstance(blob, dict) or "config" not in blob or "state_dict" not in blob:
        raise UntrustedFileError(path, "not an Encore MusicVAE checkpoint (no config/state_dict)",
                                 fix)
    cfg = checked_config(blob["config"], path)
    state = blob["state_dict"]
    with torch.device("meta"):  # the shapes the config implies, nothing allocated
        expected = {k: tuple(v.shape) for k, v in MusicVAE(cfg).state_dict().items()}
    if not isinstance(state, dict) or \
            {k: tuple(v.shape) if isinstance(v, Tensor) else None for k, v in state.items()} \
            != expected:
        raise UntrustedFileError(path, "its weights do not fit its config (other names or "
                                       "shapes)", fix)
    model = MusicVAE(cfg)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as err:
        raise UntrustedFileError(path, f"its weights cannot be loaded ({excerpt(str(err), 160)})",
                                 fix) from None
    return model, blob
