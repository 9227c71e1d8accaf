"""One model lookup for every kind: ``$ENCORE_MODELS=a:b`` finds a MusicVAE, a lyricist and a
voicebank in the second folder, and the folders come in the documented order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.lyrics.sources import find_model as find_lyrics_model
from engine.models import MODELS_ENV, SHIPPED_MODELS, model_dirs
from engine.music.musicvae_runner import find_model as find_musicvae
from engine.voice.choose import find_voicebanks


@pytest.fixture
def two_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    for name in ("trio_4bar.decoder.onnx", "lyrics_gpt2"):
        (second / name.replace("trio_4bar", "my_trio").replace("lyrics_gpt2", "my_words")
         ).symlink_to(SHIPPED_MODELS / name)
    (second / "my_voice").symlink_to(SHIPPED_MODELS / "encore_voice")
    monkeypatch.setenv(MODELS_ENV, os.pathsep.join([str(first), str(second)]))
    return first, second


def test_every_folder_of_the_variable_is_searched_in_order(two_folders, tmp_path) -> None:
    first, second = two_folders
    given = tmp_path / "given"
    assert model_dirs(given) == [given, first, second, SHIPPED_MODELS]
    assert model_dirs() == [first, second, SHIPPED_MODELS]


def test_each_kind_of_model_is_found_in_the_second_folder(two_folders) -> None:
    _, second = two_folders
    decoder, _ = find_musicvae("my_trio")
    assert decoder == second / "my_trio.decoder.onnx"
    assert find_lyrics_model("my_words") == second / "my_words"
    assert second / "my_voice" in find_voicebanks()
