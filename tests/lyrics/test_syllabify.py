"""Words into sung syllables: phonemes split at vowels, stress marks, spellings."""

from __future__ import annotations

import pytest

from engine.lyrics.syllabify import word_syllables
from engine.lyrics.syllables import Pronouncer


@pytest.fixture(scope="module")
def pronouncer() -> Pronouncer:
    return Pronouncer()


def test_a_single_consonant_between_vowels_opens_the_next_syllable(pronouncer) -> None:
    again = word_syllables("again", pronouncer)
    assert [s.phonemes for s in again] == [("ah",), ("g", "eh", "n")]
    assert [s.stress for s in again] == ["0", "1"]
    assert [s.word_start for s in again] == [True, False]


def test_of_two_consonants_the_first_closes_the_syllable(pronouncer) -> None:
    winter = word_syllables("winter", pronouncer)
    assert [s.phonemes for s in winter] == [("w", "ih", "n"), ("t", "er")]
    assert [s.text for s in winter] == ["win", "ter"]


def test_weak_monosyllables_are_free_and_content_words_stressed(pronouncer) -> None:
    assert word_syllables("the", pronouncer)[0].stress == "x"
    assert word_syllables("light", pronouncer)[0].stress == "1"


def test_phonemes_are_lower_case_arpabet_without_stress_digits(pronouncer) -> None:
    for word in ("heart", "singing", "beautiful", "night"):
        for syllable in word_syllables(word, pronouncer):
            assert all(p.isalpha() and p.islower() for p in syllable.phonemes)
            assert sum(p in {"aa", "ae", "ah", "ao", "aw", "ay", "eh", "er", "ey", "ih", "iy",
                             "ow", "oy", "uh", "uw"} for p in syllable.phonemes) == 1


def test_an_unknown_word_is_guessed_and_marked(pronouncer) -> None:
    made_up = word_syllables("zorblaxian", pronouncer)
    assert made_up and not made_up[0].known
    assert all(s.phonemes for s in made_up)
    assert len(made_up) == pronouncer.syllables("zorblaxian")
