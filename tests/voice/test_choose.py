"""Which singer sings: a voicebank placed in the model folder is found and sung by the
runner; "fallback" and "off" do what they say; a named bank that is not there is an error
that says where it looked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.patch import Voice
from engine.voice.choose import find_voicebanks, load_singer
from engine.voice.diffsinger import DiffSingerRunner
from engine.voice.fallback_singer import FallbackSinger


def test_a_voicebank_dropped_into_the_model_folder_is_what_auto_sings_with(
        full_bank: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(full_bank, models / "my_bank")
    found = find_voicebanks(models)
    assert models / "my_bank" in found  # after the project's own voice, when shipped
    singer = load_singer(Voice(singer="auto"), models)
    assert isinstance(singer, DiffSingerRunner) and singer.bank.folder == found[0]
    by_name = load_singer(Voice(singer="my_bank"), models)
    assert isinstance(by_name, DiffSingerRunner)


def test_auto_takes_a_shipped_voice_else_the_fallback(tmp_path: Path) -> None:
    shipped = find_voicebanks(tmp_path)  # tmp_path is empty: what models_onnx/ holds
    singer = load_singer(Voice(singer="auto"), tmp_path)
    if shipped:
        assert isinstance(singer, DiffSingerRunner) and singer.bank.folder == shipped[0]
    else:
        assert isinstance(singer, FallbackSinger)
    assert isinstance(load_singer(Voice(singer="fallback")), FallbackSinger)
    assert load_singer(Voice(singer="off")) is None


def test_a_named_voicebank_that_is_not_there_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such voicebank folder.*models_onnx"):
        load_singer(Voice(singer="nobody"), tmp_path)
