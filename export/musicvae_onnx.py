"""Export a MusicVAE to ONNX: an encoder graph and a whole-segment decoder graph.

Decoder graph (``<name>.decoder.onnx``), one call per segment:
  inputs  z float32 (B, Z); temperature float32 () (0 = argmax);
          uniform float32 (B, T, D) noise in (0, 1) that the runner draws from its seed
  outputs events int64 (B, P, T); logits float32 (B, T, D) along the decoded path
Encoder graph (``<name>.encoder.onnx``):
  inputs  inputs float32 (B, T, D) one-hot of all parts
  outputs mu float32 (B, Z); sigma float32 (B, Z)
Both carry metadata: ``encore.kind``, ``encore.config`` (json), ``encore.version``.

The decode loop is unrolled into the graph (T steps x parts): measured against a one-step
graph driven from Python in ``benchmarks/bench_musicvae.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from engine.output_files import staged
from export.musicvae import FORMAT_VERSION, MusicVAE, check_model_name

OPSET = 17


class _SegmentDecoder(nn.Module):
    def __init__(self, model: MusicVAE):
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, temperature: Tensor, uniform: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.decode(z, temperature, uniform)


class _Encoder(nn.Module):
    def __init__(self, model: MusicVAE):
        super().__init__()
        self.encoder = model.encoder

    def forward(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(inputs)


class _StepDecoder(nn.Module):
    """One step of a flat model's decoder, state in and out (for the graph-shape benchmark)."""

    def __init__(self, model: MusicVAE):
        super().__init__()
        self.core = model.cores[0]

    def forward(self, z: Tensor, prev: Tensor, h: Tensor, c: Tensor):
        logits, (h, c) = self.core.step(z, prev, (h, c))
        return logits, h, c


def _set_metadata(path: Path, kind: str, model: MusicVAE) -> None:
    proto = onnx.load(str(path))
    meta = {"encore.kind": kind, "encore.config": model.cfg.to_json(),
            "encore.version": str(FORMAT_VERSION),
            "encore.parts": json.dumps(list(model.cfg.parts)),
            "encore.depths": json.dumps(list(model.cfg.depths))}
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict) -> None:
    torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                      dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)


def export_decoder(model: MusicVAE, path: Path) -> Path:
    cfg = model.cfg
    model.eval()
    args = (torch.zeros(1, cfg.z_size), torch.tensor(0.0), torch.full((1, cfg.steps,
                                                                         sum(cfg.depths)), 0.5))
    _export(_SegmentDecoder(model), args, path, ["z", "temperature", "uniform"],
            ["events", "logits"], {"z": {0: "batch"}, "uniform": {0: "batch"},
                                   "events": {0: "batch"}, "logits": {0: "batch"}})
    _set_metadata(path, "musicvae.decoder", model)
    return path


def export_encoder(model: MusicVAE, path: Path) -> Path:
    cfg = model.cfg
    model.eval()
    _export(_Encoder(model), (torch.zeros(1, cfg.steps, sum(cfg.depths)),), path, ["inputs"],
            ["mu", "sigma"], {"inputs": {0: "batch"}, "mu": {0: "batch"}, "sigma": {0: "batch"}})
    _set_metadata(path, "musicvae.encoder", model)
    return path


def export_step_decoder(model: MusicVAE, path: Path) -> Path:
    """A one-step graph of a flat model (used only to choose the graph shape by measurement)."""
    cfg = model.cfg
    if cfg.hierarchical:
        raise ValueError("the step graph is only built for flat models")
    core = model.cores[0]
    h = torch.zeros(cfg.dec_layers, 1, cfg.dec_size)
    args = (torch.zeros(1, cfg.z_size), torch.zeros(1, core.depth), h, h.clone())
    _export(_StepDecoder(model), args, path, ["z", "prev", "h", "c"], ["logits", "h_out", "c_out"],
            {})
    _set_metadata(path, "musicvae.step", model)
    return path


def export_all(model: MusicVAE, out_dir: Path) -> tuple[Path, Path]:
    """Write ``<name>.encoder.onnx`` and ``<name>.decoder.onnx`` into ``out_dir``: both or
    neither (written aside, moved in when both are done); a model of that name already
    there is refused, never replaced."""
    out_dir = Path(out_dir)
    name = check_model_name(model.cfg.name, out_dir)
    names = (f"{name}.encoder.onnx", f"{name}.decoder.onnx")
    with staged(out_dir, names, fix=f"a model named {name!r} is there; export into another "
                                    "folder, or train with another --name") as stage, \
            torch.no_grad():
        export_encoder(model, stage / names[0])
        export_decoder(model, stage / names[1])
    return out_dir / names[0], out_dir / names[1]
