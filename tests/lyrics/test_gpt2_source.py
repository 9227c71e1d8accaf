"""The shipped GPT-2 lyricist as the writer uses it: prompted with a theme it writes about
the theme; without one it picks its own and still writes lines (never a bare theme line)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.lyrics.sources import GPT2Source
from engine.lyrics.syllables import words


@pytest.fixture(scope="module")
def gpt2() -> GPT2Source:
    return GPT2Source.load()


def mentions(lines: list[str], word: str) -> int:
    return sum(word in words(line) for line in lines)


def test_a_theme_steers_the_lines(gpt2: GPT2Source) -> None:
    """Over eight themes, 32 candidate lines each: the theme word turns up far more often
    when it is the prompt's theme than when the model roams (measured: 33 against 3)."""
    themed = free = 0
    for theme in ("sea", "night", "love", "rain", "fire", "heart", "moon", "sun"):
        rng = np.random.default_rng(1)
        themed += mentions([line for _ in range(4)
                            for line in gpt2.candidates([], theme, 8, 10, rng)], theme)
        gpt2._roaming = ""
        rng = np.random.default_rng(1)
        free += mentions([line for _ in range(4)
                          for line in gpt2.candidates([], "", 8, 10, rng)], theme)
    assert themed >= 15 and themed >= 4 * max(free, 1), (themed, free)


def test_without_a_theme_it_still_writes_lines(gpt2: GPT2Source) -> None:
    lines = gpt2.candidates([], "", 8, 10, np.random.default_rng(2))
    assert len(lines) >= 4
    assert not any(line.lower().startswith("about:") for line in lines)
    assert gpt2._roaming  # the theme it chose for the stanza


def test_the_stanza_so_far_is_continued(gpt2: GPT2Source) -> None:
    rng = np.random.default_rng(3)
    lines = gpt2.candidates(["The night is long and the wind is cold"], "night", 8, 10, rng)
    assert lines and all("\n" not in line for line in lines)
