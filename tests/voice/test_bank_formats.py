"""Banks as OpenUtau reads them, older ones too: pre-2024 acceleration settings, log10 mels,
language-prefixed dictionaries (the banks are built in conftest.py the way the exporter
writes them; what each graph was fed is read back from the audio)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from engine.lyrics.phrase import PhrasePlan, SungNote, SungSyllable
from engine.voice.diffsinger import DiffSingerRunner
from engine.voice.g2p import ARPABET_VOWELS, G2P, syllabify
from engine.voice.voicebank import VoicebankError, load_voicebank, mel_base_factor

LN_10 = math.log(10.0)


def _plan(*syllables: SungSyllable) -> PhrasePlan:
    return PhrasePlan(bar=0, section="verse", text="test", syllables=syllables)


def _syl(text: str, word: str, phonemes: str, beat: float, start: bool = True) -> SungSyllable:
    return SungSyllable(text=text, word=word, phonemes=tuple(phonemes.split()),
                        notes=(SungNote(60, beat, 1.0),), word_start=start)


HELLO = _plan(_syl("hel", "hello", "hh ah", 4.0), _syl("lo", "hello", "l ow", 5.0, False))


def _channels(audio, vb) -> dict[str, np.ndarray]:
    frames = audio.samples.reshape(-1, vb.HOP)
    out = {name: frames[:, i] for name, i in vb.CH.items()}
    out["vocoder_f0"] = frames[:, vb.VOCODER_F0]
    return out


def _edit(path, **changes) -> None:
    config = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config))


# ---- what the exporter writes ---------------------------------------------------------------

def test_the_exporters_layout_loads(full_bank):
    config = yaml.safe_load((full_bank / "dsconfig.yaml").read_text())
    assert config["use_continuous_acceleration"] is True and config["max_depth"] == 0.6
    assert config["speakers"] == ["acoustic.alto", "acoustic.tenor"]
    bank = load_voicebank(full_bank)
    assert bank.acoustic.model.name == "acoustic.onnx"
    assert bank.phonemes.path.name == "acoustic.phonemes.json"
    assert bank.vocoder.model.name == "test_hifigan.onnx"
    assert bank.speakers_named() == ["alto", "tenor"]
    assert not bank.acoustic.legacy_acceleration and bank.acoustic.max_depth == 0.6


# ---- pre-2024 banks -----------------------------------------------------------------------

def test_a_pre_2024_bank_loads_with_its_depth_in_1000_step_units(bank_factory, vb):
    folder = bank_factory(**vb.LEGACY)
    config = yaml.safe_load((folder / "dsconfig.yaml").read_text())
    assert "use_continuous_acceleration" not in config and "mel_base" not in config
    bank = load_voicebank(folder)
    assert bank.acoustic.legacy_acceleration
    assert bank.acoustic.max_depth_raw == 600 and bank.acoustic.max_depth == pytest.approx(0.6)
    assert bank.acoustic.use_variable_depth  # from use_shallow_diffusion
    assert bank.acoustic.audio.mel_base == "10" and bank.vocoder.audio.mel_base == "e"


@pytest.mark.parametrize(("steps", "speedup", "depth"), [(20, 30, 600), (8, 75, 600),
                                                          (7, 85, 595), (1000, 1, 600)])
def test_a_pre_2024_bank_runs_the_steps_asked_for(bank_factory, vb, steps, speedup, depth):
    singer = DiffSingerRunner(bank_factory(**vb.LEGACY))
    ch = _channels(singer.render(HELLO, 120.0, steps=steps), vb)
    # the echo went through the log10 -> natural-log conversion: divide it back
    assert ch["steps"] / LN_10 == pytest.approx(speedup, rel=1e-5)
    assert ch["depth"] / LN_10 == pytest.approx(depth, rel=1e-5)
    assert depth // speedup == steps or steps > depth  # the number of steps that run


def test_a_log10_bank_feeds_a_natural_log_vocoder_converted_mels(bank_factory, vb):
    plain = _channels(DiffSingerRunner(bank_factory()).render(HELLO, 120.0), vb)
    old = DiffSingerRunner(bank_factory(config={"mel_base": None}))
    assert old.mel_factor == pytest.approx(LN_10)
    converted = _channels(old.render(HELLO, 120.0), vb)
    for name in ("token", "total", "f0", "spk"):
        np.testing.assert_allclose(converted[name], plain[name] * LN_10, rtol=1e-5)
    np.testing.assert_allclose(converted["vocoder_f0"], plain["vocoder_f0"])  # f0 is Hz


def test_a_natural_log_bank_feeds_a_log10_vocoder_converted_mels(bank_factory, vb):
    plain = _channels(DiffSingerRunner(bank_factory()).render(HELLO, 120.0), vb)
    singer = DiffSingerRunner(bank_factory(vocoder_audio={"mel_base": "10"}))
    converted = _channels(singer.render(HELLO, 120.0), vb)
    np.testing.assert_allclose(converted["token"], plain["token"] / LN_10, rtol=1e-5)


def test_mel_base_factor():
    assert mel_base_factor("e", "e") == mel_base_factor("10", "10") == 1.0
    assert mel_base_factor("10", "e") == pytest.approx(LN_10)
    assert mel_base_factor("e", "10") * mel_base_factor("10", "e") == pytest.approx(1.0)
    # log_e(x) = ln(10) * log10(x), on a real number
    assert math.log10(123.0) * mel_base_factor("10", "e") == pytest.approx(math.log(123.0))


@pytest.mark.parametrize(("changes", "max_depth", "legacy"), [
    ({"use_continuous_acceleration": False, "max_depth": 400}, 0.4, True),
    ({"use_continuous_acceleration": None, "max_depth": 400}, 0.4, True),
    ({"use_continuous_acceleration": None, "max_depth": 0.6}, 0.6, False),  # see voicebank.py
    ({"use_continuous_acceleration": True, "max_depth": 0.25}, 0.25, False),
    ({"max_depth": -1}, None, False),  # OpenUtau's "not set"
])
def test_max_depth_units_follow_the_acceleration_flag(full_bank, tmp_path, changes, max_depth,
                                                      legacy):
    import shutil

    folder = tmp_path / "bank"
    shutil.copytree(full_bank, folder)
    _edit(folder / "dsconfig.yaml", **changes)
    acoustic = load_voicebank(folder).acoustic
    assert acoustic.max_depth == (None if max_depth is None else pytest.approx(max_depth))
    assert acoustic.legacy_acceleration == legacy


def test_refuses_a_depth_beyond_the_whole_diffusion(full_bank, tmp_path):
    import shutil

    folder = tmp_path / "bank"
    shutil.copytree(full_bank, folder)
    _edit(folder / "dsconfig.yaml", use_continuous_acceleration=True, max_depth=400)
    with pytest.raises(VoicebankError, match="`max_depth` 400.0 is more than the whole"):
        load_voicebank(folder)


def test_a_bank_without_variable_depth_is_fed_the_whole_depth(bank_factory, vb):
    folder = bank_factory(config={"use_variable_depth": False, "max_depth": None})
    ch = _channels(DiffSingerRunner(folder).render(HELLO, 120.0), vb)
    assert ch["depth"] == pytest.approx(1.0)
    with pytest.raises(VoicebankError, match="states no max_depth"):
        DiffSingerRunner(bank_factory(config={"max_depth": None}))


# ---- language-prefixed dictionaries -------------------------------------------------------

def _prefixed_dsdict(vb) -> dict:
    symbols = [{"symbol": f"en/{p}", "type": "vowel" if p in ARPABET_VOWELS else "stop"}
               for p in vb.PHONEMES if p not in ("<PAD>", "SP", "AP")]
    return {"symbols": symbols,
            "entries": [{"grapheme": "hello", "phonemes": ["en/hh", "en/ah", "en/l", "en/ow"]}]}


def test_prefixed_dictionary_vowels_split_syllables(bank_factory, vb):
    folder = bank_factory(phonemes_format="prefixed", dsdict=_prefixed_dsdict(vb),
                          dsdict_language="en")
    bank = load_voicebank(folder)
    g2p = G2P.for_voicebank(bank, "en")
    assert "aa" in g2p.vowels and "t" not in g2p.vowels
    assert g2p.word("water").syllables == (("w", "ao"), ("t", "er"))  # CMUdict, 2 syllables
    assert g2p.word("hello").syllables == (("en/hh", "en/ah"), ("en/l", "en/ow"))  # dsdict
    # a plan without phonemes: the runner splits the word itself
    water = _plan(SungSyllable("wa", "water", (), (SungNote(60, 4.0, 1.0),)),
                  SungSyllable("ter", "water", (), (SungNote(62, 5.0, 1.0),), word_start=False))
    singer = DiffSingerRunner(folder)
    assert singer.syllable_tokens(water) == [("en/w", "en/ao"), ("en/t", "en/er")]
    tokens = _channels(singer.render(water, 120.0), vb)["token"]
    ids = bank.phonemes.ids
    assert set(np.unique(tokens).astype(int)) == {ids[n] for n in (
        "SP", "en/w", "en/ao", "en/t", "en/er")}


def test_syllabify_with_prefixed_or_bare_vowels():
    vowels = G2P(vowels={"en/aa", "en/iy"}).vowels
    assert syllabify(("s", "aa", "n", "iy"), vowels) == (("s", "aa"), ("n", "iy"))
    assert syllabify(("en/s", "en/aa", "en/n", "en/iy"), vowels) == (
        ("en/s", "en/aa"), ("en/n", "en/iy"))
