"""Fixtures shared by the whole test suite.

Tiny random-weight MusicVAE models, exported to ONNX once per session (PyTorch builds them;
the runtime under test never imports it):

- ``tiny_model_dir``: a folder with ``tiny_trio`` (melody, bass and drums in 4-bar
  segments, like the shipped ``trio_4bar``); ``tiny_trio`` is a runner on it;
- ``tiny_mel_dir``: a folder with ``tiny_mel`` (melody only, 2 bars), for refusals of
  models that are not trios.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest


def _export(out: Path, seed: int, **config) -> Path:
    torch = pytest.importorskip("torch")
    from export.musicvae import MusicVAE, MusicVAEConfig
    from export.musicvae_onnx import export_all

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ONNX exporter's notes
        export_all(MusicVAE(MusicVAEConfig(**config)).eval(), out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("tiny_trio"), 0, name="tiny_trio",
                   parts=("melody", "bass", "drums"), bars=4, enc_size=8, z_size=8,
                   dec_size=8, dec_layers=2, conductor_size=8, conductor_layers=2)


@pytest.fixture(scope="session")
def tiny_mel_dir(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("tiny_mel"), 1, name="tiny_mel",
                   parts=("melody",), bars=2, enc_size=8, z_size=4, dec_size=8,
                   dec_layers=2)


@pytest.fixture(scope="session")
def tiny_trio(tiny_model_dir: Path):
    """A MusicVAERunner on ``tiny_trio`` (CPU)."""
    from engine.music.musicvae_runner import load_model

    return load_model("tiny_trio", model_dir=tiny_model_dir,
                      providers=["CPUExecutionProvider"])
