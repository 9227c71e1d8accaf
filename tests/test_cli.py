"""The ``encore`` command: export a tiny checkpoint, render from it, refuse bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import mido
import pytest
import soundfile as sf
import torch

from engine import cli
from engine.cli import main
from engine.patch import load_patch
from export.musicvae import MusicVAE, MusicVAEConfig, save_checkpoint

pytestmark = [pytest.mark.filterwarnings("ignore::Warning:torch"),  # the ONNX exporter notes
              pytest.mark.filterwarnings("ignore::DeprecationWarning:export")]

TINY_TRIO = MusicVAEConfig(name="tiny_trio", parts=("melody", "bass", "drums"), bars=2,
                           enc_size=8, z_size=4, dec_size=8, dec_layers=2, conductor_size=8,
                           conductor_layers=2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    checkpoint = root / "tiny_trio.pt"
    save_checkpoint(checkpoint, MusicVAE(TINY_TRIO), step=0)
    assert main(["export", "musicvae", str(checkpoint), str(root / "models")]) == 0
    return root / "models"


def note_ons(path: Path) -> int:
    return sum(msg.type == "note_on" and msg.velocity > 0 for msg in mido.MidiFile(path))


def test_export_writes_both_graphs(model_dir: Path) -> None:
    assert (model_dir / "tiny_trio.encoder.onnx").is_file()
    assert (model_dir / "tiny_trio.decoder.onnx").is_file()


def test_render_writes_a_song(model_dir: Path, tmp_path: Path, capsys) -> None:
    code = main(["render", "-o", str(tmp_path), "--bars", "5", "--seed", "3", "--model",
                 "tiny_trio", "--model-dir", str(model_dir)])
    assert code == 0
    song = tmp_path / "song.mid"
    assert note_ons(song) > 0
    bar_s = 4 * 60.0 / load_patch("default").song.tempo  # the default patch: 112 bpm
    # held notes of the last bar may ring on to the end of their 2-bar model segment
    assert 4 * bar_s < mido.MidiFile(song).length <= (5 + 2) * bar_s
    assert sf.info(str(tmp_path / "song.wav")).duration >= 5 * bar_s
    assert len((tmp_path / "song.jsonl").read_text().splitlines()) == 1 + 5
    out = capsys.readouterr().out
    for name in ("song.mid", "song.wav", "song.jsonl"):
        assert str(tmp_path / name) in out
    assert "5 bars" in out
    assert "CPUExecutionProvider" in out


def test_render_is_seeded(model_dir: Path, tmp_path: Path) -> None:
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert main(["render", "-o", str(tmp_path / name), "--bars", "4", "--seed", seed,
                     "--no-audio", "--model", str(model_dir / "tiny_trio.decoder.onnx")]) == 0
    for file in ("song.mid", "song.jsonl"):
        song = {name: (tmp_path / name / file).read_bytes() for name in "abc"}
        assert song["a"] == song["b"], file
        assert song["a"] != song["c"], file
    assert not (tmp_path / "a" / "song.wav").exists()


def test_render_of_an_unknown_patch_exits_2(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["render", "-o", str(tmp_path), "--patch", "no_such_patch"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("encore: error: no_such_patch: no such patch file")
    assert "Traceback" not in err


@pytest.mark.parametrize("bars", ["0", "-3", "many"])
def test_bad_bars_exits_2(bars: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["render", "--bars", bars])
    assert info.value.code == 2
    assert "--bars" in capsys.readouterr().err


def test_missing_model_is_an_error_not_a_traceback(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["render", "-o", str(tmp_path), "--model", "no_such_model", "--model-dir",
              str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("encore: error: no MusicVAE model 'no_such_model'")
    assert "Traceback" not in err


def test_export_of_missing_checkpoint_exits_2(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["export", "musicvae", str(tmp_path / "none.pt"), str(tmp_path)])
    assert info.value.code == 2
    assert "encore: error:" in capsys.readouterr().err


def test_pytorch_commands_without_torch_say_what_to_install(tmp_path: Path, monkeypatch,
                                                             capsys) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ModuleNotFoundError
    for module in ("export.convert_magenta_js", "export.musicvae"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"PK\x03\x04")
    with pytest.raises(SystemExit) as info:
        main(["export", "musicvae", str(checkpoint), str(tmp_path / "out")])
    assert info.value.code == 2
    assert "pip install -e '.[export]'" in capsys.readouterr().err
    # the files given are read before torch is needed: an empty folder is refused for what
    # it lacks, with or without torch
    with pytest.raises(SystemExit) as info:
        main(["convert", "magenta-js", str(tmp_path), str(tmp_path / "out")])
    assert info.value.code == 2
    assert "config.json" in capsys.readouterr().err


def test_train_passes_its_options_through(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "musicvae", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: encore train musicvae")
    assert "--init" in out and "--preset" in out


def test_each_live_set_records_into_a_new_folder(tmp_path: Path) -> None:
    # A performer who starts `encore live` again must not lose the last set's log.
    first = cli.new_set_dir(tmp_path, now=1_700_000_000)
    first.mkdir()
    second = cli.new_set_dir(tmp_path, now=1_700_000_000)
    assert second != first and not second.exists()
    assert second.name.startswith(first.name)
