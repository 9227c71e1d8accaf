"""Nothing a user made is overwritten: every command that writes refuses a named folder
holding its files (or, for a default folder, picks a fresh one), and a command that fails
leaves the folder as it found it.

The folders are filled here with random bytes under the names each command writes (so a
replaced file shows as changed bytes), and each check compares every file before and after.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from engine.cli import main
from engine.output_files import OutputExistsError, claim, free_names, staged


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _fill(folder: Path, names: list[str], seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(rng.randbytes(rng.randint(1, 4000)))
    return _snapshot(folder)


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("encore: error: ") and "Traceback" not in err, err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    return err


# ---- the helper itself, with random names and failures ------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_staged_moves_all_or_nothing_and_never_replaces(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    names = [f"f{n}.{rng.choice(['mid', 'wav', 'json', 'onnx'])}" for n in range(rng.randint(1, 5))]
    folder = tmp_path / "out"
    other = _fill(folder, [f"keep{n}" for n in range(rng.randint(0, 3))], seed)
    fail_after = rng.randint(0, len(names))  # == len(names): success
    try:
        with staged(folder, names) as stage:
            for n, name in enumerate(names):
                if n == fail_after:
                    raise RuntimeError("the command failed")
                (stage / name).write_bytes(rng.randbytes(100))
    except RuntimeError:
        assert _snapshot(folder) == other  # as it was: no file, no hidden folder left
        assert [p.name for p in folder.iterdir()] == sorted(other) or \
            sorted(p.name for p in folder.iterdir()) == sorted(other)
    else:
        assert sorted(p.name for p in folder.iterdir()) == sorted([*other, *names])
    before = _snapshot(folder)
    if fail_after == len(names):
        with pytest.raises(OutputExistsError, match=names[0]), staged(folder, names):
            pytest.fail("entered a stage whose files are there already")
        assert _snapshot(folder) == before


def test_a_failed_command_into_a_new_folder_leaves_no_folder(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staged(tmp_path / "new", ["a"]) as stage:
        (stage / "a").write_text("half")
        raise RuntimeError
    assert not (tmp_path / "new").exists()


def test_claim_picks_a_fresh_folder_only_for_a_default(tmp_path: Path) -> None:
    _fill(tmp_path / "out", ["song.mid"], 0)
    assert claim(tmp_path / "out", ["song.mid"], named=False) == tmp_path / "out_2"
    with pytest.raises(OutputExistsError, match="song.mid"):
        claim(tmp_path / "out", ["song.mid"], named=True)
    assert claim(tmp_path / "out", ["song.wav"], named=True) == tmp_path / "out"
    _fill(tmp_path, ["a.png", "a_2.png", "b_3.png"], 1)
    assert free_names(tmp_path, ["a.png", "b.png"]) == {"a.png": "a_4.png", "b.png": "b_4.png"}


# ---- every command --------------------------------------------------------------------

SET = ["song.jsonl", "song.mid", "song.wav"]


@pytest.mark.parametrize("which", SET)
def test_live_record_into_an_existing_set_is_refused(tmp_path: Path, capsys, which: str) -> None:
    folder = tmp_path / "set"
    before = _fill(folder, [which], 3)
    _refused(["live", "--record", str(folder), "--no-audio", "--no-osc", "--dry-run",
              "--bars", "1"], capsys, str(folder / which), "a set is recorded there")
    assert _snapshot(folder) == before


def test_replay_into_another_set_is_refused(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _fill(a, ["song.jsonl"], 4)
    before = _fill(b, SET, 5)
    _refused(["replay", str(a / "song.jsonl"), "-o", str(b)], capsys, str(b / "song.mid"))
    assert _snapshot(b) == before


def test_render_into_a_named_folder_holding_a_render_is_refused(tmp_path: Path,
                                                                capsys) -> None:
    folder = tmp_path / "out"
    before = _fill(folder, ["song.jsonl"], 6)
    _refused(["render", "--no-audio", "--bars", "1", "-o", str(folder)], capsys,
             str(folder / "song.jsonl"))
    assert _snapshot(folder) == before


def test_render_to_the_default_folder_picks_a_fresh_one(tmp_path: Path, capsys,
                                                        monkeypatch, tiny_model_dir) -> None:
    monkeypatch.chdir(tmp_path)
    before = _fill(tmp_path / "out", ["song.mid"], 7)
    assert main(["render", "--no-audio", "--bars", "1", "--model", "tiny_trio",
                 "--model-dir", str(tiny_model_dir)]) == 0
    captured = capsys.readouterr()
    assert "writing to out_2/ instead" in captured.err
    assert (tmp_path / "out_2" / "song.mid").is_file()
    assert _snapshot(tmp_path / "out") == before


def test_plot_never_replaces_a_plot(tmp_path: Path, capsys, tiny_model_dir) -> None:
    out = tmp_path / "render"
    assert main(["render", "--no-audio", "--bars", "2", "-o", str(out), "--model",
                 "tiny_trio", "--model-dir", str(tiny_model_dir)]) == 0
    before = _fill(out, ["pianoroll.png"], 8)
    assert main(["plot", str(out / "song.jsonl")]) == 0
    assert (out / "pianoroll_2.png").is_file() and (out / "latent_2.png").is_file()
    assert _snapshot(out)["pianoroll.png"] == before["pianoroll.png"]
    pictures = tmp_path / "pictures"
    kept = _fill(pictures, ["latent.png"], 9)
    _refused(["plot", str(out / "song.jsonl"), "-o", str(pictures)], capsys,
             str(pictures / "latent.png"))
    assert _snapshot(pictures) == kept


def test_layout_never_replaces_a_file(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = _fill(tmp_path, ["mine.json", "encore.json"], 10)
    _refused(["layout", "open-stage-control", "-o", "mine.json"], capsys, "mine.json")
    assert main(["layout", "open-stage-control"]) == 0
    assert (tmp_path / "encore_2.json").is_file()
    assert {k: v for k, v in _snapshot(tmp_path).items() if k in before} == before


def test_a_failed_gpt2_convert_into_an_existing_model_folder_keeps_it(tmp_path: Path,
                                                                      capsys) -> None:
    """The audit's case: converting into a lyricist's folder deleted its metadata. Now the
    folder is refused before anything is read; and a convert that fails into a folder
    of other files leaves them and adds nothing."""
    pytest.importorskip("transformers")
    model = tmp_path / "models_onnx" / "my_lyrics"
    before = _fill(model, ["model.onnx", "tokenizer.json", "encore_gpt2.json"], 11)
    hf = tmp_path / "hf"
    _fill(hf, ["config.json"], 12)  # not even JSON: the convert fails
    _refused(["convert", "gpt2", str(hf), str(model)], capsys, str(model / "model.onnx"))
    assert _snapshot(model) == before
    mixed = tmp_path / "mixed"
    kept = _fill(mixed, ["notes.txt"], 13)
    _refused(["convert", "gpt2", str(hf), str(mixed)], capsys, str(hf / "config.json"))
    assert _snapshot(mixed) == kept and sorted(p.name for p in mixed.iterdir()) == ["notes.txt"]


def test_export_never_replaces_a_model_of_the_same_name(tmp_path: Path, capsys) -> None:
    torch = pytest.importorskip("torch")
    from export.musicvae import MusicVAE, MusicVAEConfig, save_checkpoint

    torch.manual_seed(0)
    checkpoint = tmp_path / "last.pt"
    save_checkpoint(checkpoint, MusicVAE(MusicVAEConfig(
        name="mine", parts=("melody",), bars=1, enc_size=8, z_size=4, dec_size=8,
        dec_layers=1)), 0)
    out = tmp_path / "models"
    before = _fill(out, ["mine.decoder.onnx"], 14)
    _refused(["export", "musicvae", str(checkpoint), str(out)], capsys,
             str(out / "mine.decoder.onnx"), "a model named 'mine' is there")
    assert _snapshot(out) == before


def test_train_into_an_earlier_run_is_refused(tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    run = tmp_path / "run"
    before = _fill(run, ["last.pt"], 15)
    _refused(["train", "musicvae", "--out", str(run), "--midi-dir", str(tmp_path),
              "--max-steps", "1"], capsys, str(run / "last.pt"), "--resume")
    assert _snapshot(run) == before
