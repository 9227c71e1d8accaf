"""Fixtures shared by the whole test suite.

``tiny_model_dir``: a folder with tiny random-weight MusicVAE models exported to ONNX once
per session (PyTorch is needed to build them; the runtime under test never imports it):

- ``tiny_trio``: melody, bass and drums, 4-bar segments like the shipped ``trio_4bar``;
- ``tiny_duo``: melody and bass only (no drums), for the "not a trio model" refusals.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

TINY_TRIO_NAME = "tiny_trio"
TINY_DUO_NAME = "tiny_duo"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    from export.musicvae import MusicVAE, MusicVAEConfig
    from export.musicvae_onnx import export_all

    configs = {
        TINY_TRIO_NAME: MusicVAEConfig(name=TINY_TRIO_NAME, parts=("melody", "bass", "drums"),
                                       bars=4, enc_size=8, z_size=8, dec_size=8,
                                       dec_layers=2, conductor_size=8, conductor_layers=2),
        TINY_DUO_NAME: MusicVAEConfig(name=TINY_DUO_NAME, parts=("melody", "bass"), bars=4,
                                      enc_size=8, z_size=8, dec_size=8, dec_layers=2,
                                      conductor_size=8, conductor_layers=2),
    }
    out = tmp_path_factory.mktemp("tiny_models")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ONNX exporter's notes
        for seed, cfg in enumerate(configs.values()):
            torch.manual_seed(seed)
            export_all(MusicVAE(cfg).eval(), out)
    return out


@pytest.fixture(scope="session")
def tiny_trio(tiny_model_dir: Path):
    """A MusicVAERunner on ``tiny_trio`` (CPU)."""
    from engine.music.musicvae_runner import load_model

    return load_model(TINY_TRIO_NAME, model_dir=tiny_model_dir,
                      providers=["CPUExecutionProvider"])
