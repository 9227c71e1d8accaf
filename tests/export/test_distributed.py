"""Training on many ranks and devices (export/distributed.py and the trainers using it).

- every trainer under ``torchrun --standalone --nproc_per_node 2`` on the CPU (gloo):
  finite losses, one set of checkpoints written by rank 0, and the ranks trained on
  different windows (each run records the windows every rank saw);
- one DDP step on 2 ranks gives the parameters of one single-process step on the
  concatenated batch (within 1e-6, float32 reduction order aside);
- the sampler deals disjoint shards, a pure function of the step, so a resumed run repeats
  the unbroken one exactly (checked on the MusicVAE trainer);
- ``--device cuda`` without a GPU is refused with the fix; on a machine with a GPU the
  MusicVAE trainer runs there in mixed precision.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

from export.distributed import (  # noqa: E402
    ShardedSampler,
    resolve_device,
    resolve_precision,
    torchrun_env,
)

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_step_worker.py")
RUN_TIMEOUT = 240  # seconds for one torchrun job (a loaded 2-core machine)


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ...`` with this worktree's code."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def assert_ranks_disjoint(path: Path, world: int = 2) -> None:
    """Within every epoch, no window was trained on by two ranks; each rank trained."""
    record = json.loads(path.read_text())
    assert record["world_size"] == world
    ranks = record["ranks"]
    assert len(ranks) == world and all(len(r) > 0 for r in ranks)
    assert [len(r) for r in ranks] == [len(ranks[0])] * world, "ranks stopped at other steps"
    epochs = {epoch for r in ranks for _, epoch, _ in r}
    for epoch in epochs:
        seen = [{i for _, e, idx in r if e == epoch for i in idx} for r in ranks]
        for a in range(world):
            for b in range(a + 1, world):
                assert not seen[a] & seen[b], f"epoch {epoch}: ranks {a} and {b} share windows"


# ---- data for the trainers ----------------------------------------------------------------
@pytest.fixture(scope="module")
def duet_windows(tmp_path_factory) -> Path:
    """A folder with ``duet_4bar.npz``: the 4-bar soprano/bass windows of 16 Bach chorales
    from music21's corpus (the trio preset's data, much smaller)."""
    pytest.importorskip("music21")
    from export.corpus_music21 import _corpus_paths, _parse_file, windows

    events, sources = [], []
    for path in [p for p in _corpus_paths("bach") if Path(p).name.startswith("bwv")][:16]:
        for piece in _parse_file((path, True)):
            if len(piece.lines) == 2:
                for w in windows(piece, 4):
                    events.append(w)
                    sources.append(piece.source)
    if len(events) < 40:
        pytest.skip("music21's corpus has too few Bach chorales here")
    folder = tmp_path_factory.mktemp("duet")
    np.savez_compressed(folder / "duet_4bar.npz", events=np.array(events, dtype=np.int16),
                        source=np.array(sources))
    return folder


@pytest.fixture(scope="module")
def voice_corpus(tmp_path_factory) -> Path:
    """Teacher data for the voice: 12 phrases and a held-out shard of 2, sung by espeak-ng
    through WORLD (the real teacher, a few seconds)."""
    import ctypes.util

    if not ctypes.util.find_library("espeak-ng"):
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from export import voice_data as vd

    folder = tmp_path_factory.mktemp("voice")
    vd.generate(12, 1, folder, shard_size=12, log=False)
    vd.generate(2, 999, folder / "heldout", shard_size=2, log=False)
    return folder


# ---- the trainers under torchrun --------------------------------------------------------------
def test_musicvae_trains_on_two_ranks(duet_windows: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = torchrun("-m", "engine.cli", "train", "musicvae", "--preset", "trio_4bar",
                    "--minutes", "0.2", "--max-steps", "12", "--batch-size", "8",
                    "--data", str(duet_windows), "--out", str(out), "--record-windows",
                    cwd=tmp_path)
    assert "2 rank(s): batch 8 a rank, effective batch 16" in done.stdout
    assert done.stdout.count("effective batch") == 1, "only rank 0 prints"
    assert sorted(p.name for p in out.iterdir()) == [
        "last.pt", "metrics.json", "train_log.jsonl", "windows.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["effective_batch"] == 16 and metrics["steps"] > 0
    assert math.isfinite(metrics["final_train_loss"])
    assert math.isfinite(metrics["held_out"]["tf_acc_melody"])
    blob = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert blob["step"] == metrics["steps"]
    assert all(torch.isfinite(v).all() for v in blob["state_dict"].values())
    assert_ranks_disjoint(out / "windows.json")


def test_lyrics_fine_tune_on_two_ranks(tiny_gpt2_hf_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "lyrics.txt"
    verses = ["hold the light tonight\nthe road is long\nwe sing of the sea\nmorning comes",
              "over the hills the morning comes\nand the river runs\nto the open sea"]
    text.write_text("\n\n".join(verses * 12))
    out = tmp_path / "run"
    done = torchrun("-m", "engine.cli", "train", "lyrics", "--from", str(tiny_gpt2_hf_dir),
                    "--text", str(text), "--out", str(out), "--minutes", "0.2",
                    "--steps", "16", "--batch", "2", "--block", "16", "--record-windows",
                    cwd=tmp_path)
    assert done.stdout.count("effective batch 4") == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "hf", "log.jsonl", "metrics.json", "train_state.pt", "windows.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["steps"] > 0
    assert math.isfinite(metrics["held_out_loss"])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train_loss"]) for r in log if "train_loss" in r)
    assert_ranks_disjoint(out / "windows.json")


@pytest.mark.parametrize("part", ["acoustic", "vocoder"])
def test_voice_trains_on_two_ranks(part: str, voice_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    small = (["--hidden", "24", "--flow-hidden", "24", "--enc-layers", "1", "--dec-layers",
              "1", "--flow-layers", "1"] if part == "acoustic" else
             ["--hidden", "16", "--harmonics", "8", "--bands", "4"])
    done = torchrun("-m", "engine.cli", "train", "voice", part, "--data", str(voice_corpus),
                    "--out", str(out), "--minutes", "0.2", "--steps", "8", "--batch", "2",
                    "--log-every", "4", "--record-windows", *small, cwd=tmp_path)
    assert done.stdout.count("effective batch 4") == 1
    assert sorted(p.name for p in out.iterdir()) == [
        f"{part}.log", f"{part}.pt", f"{part}.windows.json"]
    losses = []
    for line in (out / f"{part}.log").read_text().splitlines():
        words = line.split()
        if len(words) > 2 and words[1] == "step":
            losses += [float(words[words.index(k) + 1]) for k in ("l1", "flow", "stft")
                       if k in words]
    assert losses and all(math.isfinite(v) for v in losses)
    blob = torch.load(out / f"{part}.pt", map_location="cpu", weights_only=False)
    assert blob["ranks"] == 2 and blob["step"] > 0
    assert all(torch.isfinite(v).all() for v in blob["model"].values())
    assert_ranks_disjoint(out / f"{part}.windows.json")


# ---- DDP step == big-batch step -------------------------------------------------------------
def test_one_ddp_step_equals_one_step_on_the_concatenated_batch(tmp_path: Path) -> None:
    """Gradients averaged over 2 ranks of 4 blocks = the gradient of the 8-block batch, so
    the parameters after one step agree (AdamW as the lyricist trains, and plain SGD,
    whose step is proportional to the gradient, so a sum-instead-of-mean bug shows)."""
    pytest.importorskip("transformers")
    sys.path.insert(0, str(WORKER.parent))
    try:
        import ddp_step_worker as worker
    finally:
        sys.path.remove(str(WORKER.parent))
    from export.distributed import Run

    out = tmp_path / "ddp.pt"
    torchrun(str(WORKER), str(out), cwd=tmp_path)
    ddp = torch.load(out, weights_only=False)
    assert ddp["backend"] == "gloo"
    alone = Run(device=torch.device("cpu"))
    for name in ("adamw", "sgd"):
        model, optim, batch = worker.equivalence_case(name)
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        worker.step(alone, model, optim, batch)
        moved = 0.0
        for key, value in model.state_dict().items():
            diff = (ddp["params"][name][key] - value).abs().max().item()
            assert diff <= 1e-6, f"{name} {key}: DDP and single-process differ by {diff:.2e}"
            moved = max(moved, (value - before[key]).abs().max().item())
        assert moved > 1e-4, "the step must move the parameters for the test to mean anything"


# ---- sampler, seeds, resume ------------------------------------------------------------
def test_sampler_shards_are_disjoint_cover_the_data_and_depend_on_the_step_only() -> None:
    world, n, batch = 3, 100, 8
    samplers = [ShardedSampler(n, batch, rank, world, seed=5) for rank in range(world)]
    per_epoch = samplers[0].steps_per_epoch
    assert per_epoch == (n // world) // batch
    for epoch in range(3):
        shards = [set(s.shard(epoch).tolist()) for s in samplers]
        assert sum(len(s) for s in shards) == len(set().union(*shards)) == world * (n // world)
    fresh = ShardedSampler(n, batch, 1, world, seed=5)
    for step in (0, 7, per_epoch, 5 * per_epoch + 2):  # in any order, as after a resume
        assert np.array_equal(fresh.batch(step), samplers[1].batch(step))
    assert not np.array_equal(samplers[0].shard(0), samplers[0].shard(1)), "epochs reshuffle"
    small = ShardedSampler(5, 8, 0, 2, seed=0)  # a shard smaller than a batch wraps around
    assert len(small.batch(0)) == 8 and set(small.batch(0).tolist()) == set(
        small.shard(0).tolist())
    with pytest.raises(ValueError, match="each rank needs"):
        ShardedSampler(1, 4, 0, 2)


def test_seeds_differ_per_rank_and_repeat() -> None:
    from export.distributed import Run

    ranks = [Run(device=torch.device("cpu"), rank=r, world_size=2) for r in range(2)]
    assert ranks[0].step_seed(3, 10) != ranks[1].step_seed(3, 10)
    assert ranks[0].step_seed(3, 10) != ranks[0].step_seed(3, 11)
    assert ranks[1].step_seed(3, 10) == Run(torch.device("cpu"), rank=1).step_seed(3, 10)


def test_torchrun_env_and_device_choices(monkeypatch) -> None:
    assert torchrun_env({}) == (0, 0, 1)
    assert torchrun_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}) == (3, 1, 4)
    with pytest.raises(ValueError, match="torchrun"):
        torchrun_env({"RANK": "4", "WORLD_SIZE": "4"})
    assert resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(ValueError, match="needs a GPU"):
        resolve_precision("fp16", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="--device cpu"):
        resolve_device("cuda")


def test_cli_refuses_cuda_without_a_gpu(tmp_path: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from engine.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "musicvae", "--device", "cuda", "--out", str(tmp_path / "x"),
              "--data", str(tmp_path)])
    assert exit_.value.code == 2
    assert "encore: error: --device cuda: this PyTorch sees no CUDA device" in (
        capsys.readouterr().err)


def tiny_trio():
    from export.train_musicvae import PRESETS

    return replace(PRESETS["trio_4bar"], enc_size=32, z_size=16, dec_size=32,
                   conductor_size=32, dec_layers=1, conductor_layers=1)


def test_musicvae_resume_repeats_the_unbroken_run(duet_windows: Path, tmp_path: Path) -> None:
    from export.musicvae_data import load_windows
    from export.train_musicvae import train

    data = load_windows(duet_windows / "duet_4bar.npz")
    kw = dict(minutes=5.0, batch_size=4, seed=2, threads=1, device="cpu")
    train(tiny_trio(), data, tmp_path / "whole", max_steps=6, **kw)
    train(tiny_trio(), data, tmp_path / "split", max_steps=3, **kw)
    train(tiny_trio(), data, tmp_path / "split", max_steps=6, resume=tmp_path / "split" /
          "last.pt", **kw)
    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)
    split = torch.load(tmp_path / "split" / "last.pt", weights_only=False)
    assert whole["step"] == split["step"] == 6
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, split["state_dict"][key]), key
    other = train(tiny_trio(), data, tmp_path / "other", max_steps=6, **(kw | {"seed": 3}))
    assert other["steps"] == 6
    changed = torch.load(tmp_path / "other" / "last.pt", weights_only=False)["state_dict"]
    assert any(not torch.equal(v, changed[k]) for k, v in whole["state_dict"].items())


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA device here (CPU-only PyTorch or no GPU): the GPU path "
                           "is checked on machines that have one")
def test_musicvae_trains_on_cuda_in_mixed_precision(duet_windows: Path, tmp_path: Path) -> None:
    from export.musicvae import load_checkpoint
    from export.musicvae_data import load_windows
    from export.train_musicvae import train

    data = load_windows(duet_windows / "duet_4bar.npz")
    metrics = train(tiny_trio(), data, tmp_path / "gpu", minutes=2.0, max_steps=20,
                    batch_size=16, seed=0, device="cuda", precision="auto")
    assert metrics["device"] == "cuda" and metrics["precision"] in ("bf16", "fp16")
    assert metrics["steps"] == 20 and math.isfinite(metrics["final_train_loss"])
    model, blob = load_checkpoint(tmp_path / "gpu" / "last.pt")  # loads on the CPU
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert "optimizer" in blob["training"]


def test_every_train_command_takes_the_device_options(capsys) -> None:
    from engine.cli import main

    for argv in (["train", "musicvae", "--help"], ["train", "lyrics", "--help"],
                 ["train", "lyrics", "--from", "x", "--help"],
                 ["train", "voice", "acoustic", "--help"], ["train", "voice", "vocoder", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "--device {auto,cpu,cuda}" in out and "--precision" in out, argv
        assert "--resume" in out and "--record-windows" in out, argv
