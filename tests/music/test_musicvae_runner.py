"""MusicVAERunner (ONNX Runtime) against the PyTorch model it was exported from.

Tiny models are built in code: a flat melody model and a hierarchical trio, each exported
once per module into a temporary folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from engine.music.encoding import DRUM_PITCHES, MELODY_MAX_PITCH, MELODY_MIN_PITCH
from engine.music.musicvae_runner import MusicVAERunner, find_model, load_model
from engine.music.notes import STEPS_PER_BAR, Bar
from export.musicvae import MusicVAE, MusicVAEConfig
from export.musicvae_onnx import export_all

pytestmark = [pytest.mark.filterwarnings("ignore::Warning:torch"),  # the ONNX exporter notes
              pytest.mark.filterwarnings("ignore::DeprecationWarning:export")]
REPO = Path(__file__).resolve().parents[2]
ORT_VS_TORCH_ATOL = 1e-4

TINY = {
    "tiny_mel": MusicVAEConfig(name="tiny_mel", parts=("melody",), bars=2, enc_size=8, z_size=4,
                               dec_size=8, dec_layers=2),
    "tiny_trio": MusicVAEConfig(name="tiny_trio", parts=("melody", "bass", "drums"), bars=2,
                                enc_size=8, z_size=4, dec_size=8, dec_layers=2,
                                conductor_size=8, conductor_layers=2),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[MusicVAE, Path]]:
    out = tmp_path_factory.mktemp("models")
    models = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the export of a tiny model goes faster on one thread
    try:
        for seed, (name, cfg) in enumerate(TINY.items()):
            torch.manual_seed(seed)
            model = MusicVAE(cfg).eval()
            export_all(model, out)
            models[name] = (model, out)
    finally:
        torch.set_num_threads(threads)
    return models


@pytest.fixture(scope="module", params=sorted(TINY))
def pair(request, exported) -> tuple[MusicVAE, MusicVAERunner]:
    model, folder = exported[request.param]
    return model, load_model(request.param, model_dir=folder)


def torch_decode(model: MusicVAE, z: np.ndarray, temperature: float, uniform: np.ndarray):
    with torch.no_grad():
        events, logits = model.decode(torch.from_numpy(z), torch.tensor(temperature),
                                      torch.from_numpy(uniform))
    return events.numpy(), logits.numpy()


def test_properties_come_from_metadata(pair) -> None:
    model, runner = pair
    assert runner.parts == model.cfg.parts
    assert runner.bars == model.cfg.bars
    assert runner.z_size == model.cfg.z_size
    assert runner.provider == "CPUExecutionProvider"
    assert runner.has_encoder


def test_argmax_decode_equals_torch(pair) -> None:
    model, runner = pair
    z = runner.sample_z(np.random.default_rng(1), batch=3)
    events = runner.decode_events(z, temperature=0.0, seed=5)
    expected, _ = torch_decode(model, z, 0.0, runner.uniform(3, 5))
    assert events.shape == (3, len(runner.parts), runner.bars * STEPS_PER_BAR)
    np.testing.assert_array_equal(events, expected)


def test_sampled_logits_match_torch(pair) -> None:
    model, runner = pair
    z = np.random.default_rng(2).standard_normal((1, runner.z_size)).astype(np.float32)
    uniform = runner.uniform(1, seed=7)
    events, logits = runner.run_decoder(z, 1.0, uniform)
    expected_events, expected_logits = torch_decode(model, z, 1.0, uniform)
    np.testing.assert_array_equal(events, expected_events)
    np.testing.assert_allclose(logits, expected_logits, atol=ORT_VS_TORCH_ATOL, rtol=0)


def test_batch_decode_equals_single_decodes(pair) -> None:
    _, runner = pair
    z = runner.sample_z(np.random.default_rng(3), batch=2)
    uniform = runner.uniform(2, seed=4)
    both, _ = runner.run_decoder(z, 1.0, uniform)
    for i in range(2):
        one, _ = runner.run_decoder(z[i], 1.0, uniform[i:i + 1])
        np.testing.assert_array_equal(both[i], one[0])


def test_seed_decides_the_bars(pair) -> None:
    _, runner = pair
    z = runner.sample_z(np.random.default_rng(4))
    first = runner.decode(z, temperature=1.0, seed=11)
    assert first == runner.decode(z, temperature=1.0, seed=11)
    assert first != runner.decode(z, temperature=1.0, seed=12)


def test_bars_hold_notes_in_range(pair) -> None:
    _, runner = pair
    z = runner.sample_z(np.random.default_rng(5), batch=2)
    bars = runner.decode(z, temperature=1.0, seed=0)
    assert len(bars) == 2 * runner.bars
    drum_pitches = {ps[0] for ps in DRUM_PITCHES}
    seen = 0
    for index, bar in enumerate(bars):
        assert isinstance(bar, Bar)
        np.testing.assert_array_equal(bar.z, z[index // runner.bars])
        assert set(bar.parts) == set(runner.parts)
        steps_left = (runner.bars - index % runner.bars) * STEPS_PER_BAR
        for part in runner.parts:
            for note in bar.notes(part):
                seen += 1
                assert 0 <= note.start < STEPS_PER_BAR
                assert note.start < note.end <= steps_left  # held at most to segment end
                if part == "drums":
                    assert note.pitch in drum_pitches
                    assert note.end == note.start + 1
                else:
                    assert MELODY_MIN_PITCH <= note.pitch <= MELODY_MAX_PITCH
    assert seen > 0


def test_encode_returns_mu_sigma(pair) -> None:
    model, runner = pair
    bars = runner.decode(runner.sample_z(np.random.default_rng(6)), temperature=0.5, seed=1)
    mu, sigma = runner.encode(bars)
    assert mu.shape == sigma.shape == (runner.z_size,)
    assert (sigma > 0).all()
    with pytest.raises(ValueError, match="encodes 2 bars"):
        runner.encode(bars[:1])


def test_z_of_wrong_shape_is_refused(pair) -> None:
    _, runner = pair
    with pytest.raises(ValueError, match="z must have shape"):
        runner.decode(np.zeros(runner.z_size + 1, dtype=np.float32))


def test_file_without_metadata_is_refused(exported, tmp_path) -> None:
    _, folder = exported["tiny_mel"]
    proto = onnx.load(str(folder / "tiny_mel.decoder.onnx"))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.decoder.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ValueError, match="not an Encore model.*encore convert magenta-js"):
        MusicVAERunner(bare)


def test_unknown_version_is_refused(exported, tmp_path) -> None:
    _, folder = exported["tiny_mel"]
    proto = onnx.load(str(folder / "tiny_mel.decoder.onnx"))
    for prop in proto.metadata_props:
        if prop.key == "encore.version":
            prop.value = "99"
    future = tmp_path / "future.decoder.onnx"
    onnx.save(proto, str(future))
    with pytest.raises(ValueError, match="version '99'"):
        MusicVAERunner(future)


def test_encoder_passed_as_decoder_is_refused(exported) -> None:
    _, folder = exported["tiny_mel"]
    with pytest.raises(ValueError, match="encore.kind"):
        MusicVAERunner(folder / "tiny_mel.encoder.onnx")


def test_missing_model_names_where_it_looked(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ENCORE_MODELS", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as info:
        find_model("nope", model_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "nope.decoder.onnx") in message
    assert str(tmp_path / "env" / "nope.decoder.onnx") in message


def test_engine_imports_no_torch() -> None:
    code = ("import sys, engine.music.musicvae_runner, engine.cli; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
