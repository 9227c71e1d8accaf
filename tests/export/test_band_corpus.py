"""The band corpus: windows from band pieces, lines a source lacks left out of the loss,
and ``--corpus band`` training a real (tiny) trio end to end, exported and decoded."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.music.encoding import DRUM_PITCHES
from export import band_corpus
from export.music_eval import Hit, Song, Tone
from export.musicvae import MusicVAE
from export.musicvae_data import UNKNOWN, WindowSet, make_batch

WADS_PRESENT = all(w.is_file() for w in __import__(
    "export.freedoom_corpus", fromlist=["DEFAULT_WADS"]).DEFAULT_WADS)


def band_song(bars: int = 8, drum_bars: int = 4, bass_from_bar: int = 0) -> Song:
    melody = tuple(Tone(b * 0.5, b * 0.5 + 0.5, 72 + b % 5) for b in range(bars * 8))
    bass = tuple(Tone(b, b + 1.0, 36 + b % 3) for b in range(bass_from_bar * 4, bars * 4))
    drums = tuple(Hit(b, 36 if b % 2 == 0 else 38) for b in range(drum_bars * 4))
    return Song("test", melody, bass, drums)


def test_song_windows_encode_three_lines_and_skip_where_the_bass_rests():
    windows = list(band_corpus.song_windows(band_song(drum_bars=2, bass_from_bar=3)))
    # 8 bars give 5 windows of 4 bars; the one on bar 0 has bass in a quarter of it only
    assert len(windows) == 4
    first = windows[0]  # bars 1..4: drums in bar 1 only
    assert first.shape == (3, 64)
    kick = 1 << 0
    assert first[2][0] == kick and first[2][4] == 1 << 1  # beat 1 kick, beat 2 snare
    assert not first[2][16:].any()
    assert (first[0] >= 2).sum() == 32  # the melody's 8th notes
    last = windows[-1]  # bars 4..7: no drum stroke at all
    assert (last[2] == UNKNOWN).all()
    assert DRUM_PITCHES[0][0] == 36


def test_a_line_the_source_lacks_adds_no_loss_and_no_gradient():
    cfg = replace(__import__("export.train_musicvae", fromlist=["PRESETS"])
                  .PRESETS["trio_4bar"], enc_size=16, z_size=8, dec_size=16,
                  conductor_size=16)
    torch.manual_seed(0)
    model = MusicVAE(cfg)
    events = np.zeros((4, 3, 64), dtype=np.int64)
    events[:, 0, ::4] = 40
    events[:, 1] = UNKNOWN  # folk tunes: no bass
    events[:, 2, ::4] = 1
    windows = WindowSet(events, np.array(["folk/a"] * 4))
    rng = np.random.default_rng(0)
    x = torch.from_numpy(make_batch(windows, np.arange(4), cfg.parts, cfg.depths, rng))
    assert x[..., 90:180].sum() == 0  # the bass one-hot rows are empty
    loss, stats = model.loss(x, step=0)
    loss.backward()
    bass_grads = [p.grad for p in model.cores[1].parameters()]
    assert all(g is None or float(g.abs().max()) == 0.0 for g in bass_grads)
    melody_grads = [p.grad for p in model.cores[0].parameters()]
    assert any(g is not None and float(g.abs().max()) > 0.0 for g in melody_grads)
    assert stats["acc_bass"] == 0.0  # nothing to count


def test_windows_without_drums_take_real_drum_windows_or_library_ones():
    events = np.zeros((200, 3, 64), dtype=np.int64)
    events[:, 0, 0] = 40
    events[:, 1, 0] = 30
    events[:100, 2] = UNKNOWN
    events[100:, 2, 1::2] = 5  # a real pattern no library groove has (odd 16ths only)
    windows = WindowSet(events, np.array(["x"] * 200))
    rng = np.random.default_rng(3)
    x = make_batch(windows, np.arange(100), ("melody", "bass", "drums"), (90, 90, 512), rng)
    drums = x[..., 180:].argmax(-1)
    real = (drums[:, 1::2] == 5).all(1) & (drums[:, ::2] == 0).all(1)
    assert 25 < real.sum() < 75  # about half, REAL_DRUM_SHARE
    assert (x[..., 180:].sum(-1) == 1).all()  # every step has a drum class


@pytest.mark.skipif(not WADS_PRESENT, reason="Debian's freedoom package is not installed")
def test_corpus_band_trains_a_tiny_trio_that_exports_and_plays(tmp_path: Path):
    from engine.music.musicvae_runner import MusicVAERunner
    from export.musicvae import load_checkpoint
    from export.musicvae_onnx import export_all
    from export.onnx_to_checkpoint import model_from_onnx
    from export.train_musicvae import PRESETS, band_windows, train

    summary = band_corpus.build(tmp_path / "cache", chorales=2, folk=0, band_pieces=3,
                                processes=1)
    assert summary["band_windows"] > 50 and summary["band_windows_with_drums"] > 0
    assert summary["chorale_windows"] > 0
    cfg = replace(PRESETS["trio_4bar"], name="trio_tiny", enc_size=16, z_size=8,
                  dec_size=16, conductor_size=16)
    data = band_windows(tmp_path / "cache", cfg)
    metrics = train(cfg, data, tmp_path / "run", minutes=1.0, max_steps=4, batch_size=8,
                    seed=0, threads=1, device="cpu")
    assert metrics["steps"] == 4 and metrics["train_windows"] > 0
    model, _ = load_checkpoint(tmp_path / "run" / "last.pt")
    encoder, decoder = export_all(model, tmp_path / "models")
    runner = MusicVAERunner(decoder, encoder)
    bars = runner.decode(np.zeros(8, dtype=np.float32), temperature=1.0, seed=1)
    assert len(bars) == 4
    assert sum(len(b.notes("drums")) for b in bars) > 0
    # the weights come back out of the ONNX files exactly (a shipped model can be fine-tuned)
    rebuilt = model_from_onnx("trio_tiny", tmp_path / "models").state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt[key], value), key
