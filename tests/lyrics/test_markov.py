"""The Markov lyricist on a small corpus written for these tests."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from engine.lyrics.markov import END, START, MarkovLyricist
from engine.lyrics.syllables import words

CORPUS = """\
The night is long and the road is cold
I walk alone beneath the silver moon
The river sings a song of summer rain
My heart is open like a morning door
We danced until the city lights went out
The road goes on beyond the quiet hills
I hear your voice inside the falling rain
Hold me close before the morning comes
The moon is rising over silver water
Your eyes are burning like a summer fire
We sing the old songs when the night is young
The wind is calling from the empty fields
I'll wait for you beside the river bend
The morning light is breaking through the door
Don't let the fire fade into the night
We ran together down the dusty road
The stars are falling on the sleeping town
My love, the summer never ends with you
The city sleeps beneath a blanket of rain
I'm singing to the river and the moon
""".splitlines()


@pytest.fixture(scope="module")
def model() -> MarkovLyricist:
    return MarkovLyricist(order=3).train(CORPUS)


def test_stats(model):
    s = model.stats()
    assert s["order"] == 3 and s["lines"] == 20
    assert s["tokens"] == sum(len(words(line)) for line in CORPUS)
    assert s["vocabulary"] == len({w for line in CORPUS for w in words(line)})
    assert len(s["contexts"]) == 3 and all(n > 0 for n in s["transitions"])


def test_counts_are_dicts_of_dicts(model):
    assert model.counts[0][START]["the"] == 8  # lines starting with "the"
    assert model.counts[1]["the night"] == {"is": 2, END: 1}
    assert model.counts[2]["the night is"] == {"long": 1, "young": 1}
    assert model.counts[0]["moon"] == {END: 2, "is": 1}


def test_same_seed_same_line(model):
    a = model.generate_line(np.random.default_rng(7))
    b = model.generate_line(np.random.default_rng(7))
    assert a == b and a


def test_other_seeds_give_other_lines(model):
    lines = {model.generate_line(np.random.default_rng(seed)) for seed in range(20)}
    assert len(lines) > 5


def test_lines_are_made_of_seen_words(model):
    vocab = set(model.counts[0])
    rng = np.random.default_rng(0)
    for _ in range(50):
        line = model.generate_line(rng, max_words=6)
        ws = words(line)
        assert 1 <= len(ws) <= 6
        assert set(ws) <= vocab
        assert line[0].isupper()


def test_backoff_from_an_unseen_context(model):
    # "fire the" never occurs: order 2 and 3 contexts are unseen, order 1 ("the") is used.
    assert "fire the" not in model.counts[1]
    rng = np.random.default_rng(3)
    nxt = model._next([START, "fire", "the"], rng)
    assert nxt in model.counts[0]["the"]


def test_restart_when_nothing_follows():
    m = MarkovLyricist(order=2).train(["red sky", "blue sea"])
    m.counts[0]["sky"] = {}  # a damaged model: nothing follows "sky"
    line = m.generate_line(np.random.default_rng(1), start="sky", max_words=4)
    assert line.startswith("Sky ") and len(words(line)) >= 2


def test_theme_start_word(model):
    for seed in range(5):
        line = model.generate_line(np.random.default_rng(seed), start="Moon")
        assert line.split()[0] == "Moon"
    # An unseen theme word is ignored: the line starts as training lines do.
    line = model.generate_line(np.random.default_rng(0), start="xylophone")
    assert words(line)[0] in model.counts[0][START]


def test_max_words(model):
    for seed in range(10):
        assert len(model.generate_line(np.random.default_rng(seed), max_words=3).split()) <= 3
    with pytest.raises(ValueError, match="max_words"):
        model.generate_line(np.random.default_rng(0), max_words=0)


def test_pronoun_i_is_capitalised():
    m = MarkovLyricist(order=1).train(["and i'm here and i know"])
    line = m.generate_line(np.random.default_rng(0), start="i")
    assert line.startswith("I")
    assert " i " not in f" {line} " and " i'm " not in f" {line} "


def test_untrained_and_bad_order():
    with pytest.raises(RuntimeError, match="untrained"):
        MarkovLyricist().generate_line(np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least 1"):
        MarkovLyricist(order=0)
    with pytest.raises(TypeError):
        MarkovLyricist(order=2.0)  # type: ignore[arg-type]


def test_save_load_round_trip(model, tmp_path):
    path = model.save(tmp_path / "lyricist.json.gz")
    loaded = MarkovLyricist.load(path)
    assert loaded.order == 3
    assert loaded.counts == model.counts
    assert loaded.stats() == model.stats()
    for seed in range(5):
        rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
        assert loaded.generate_line(rng_a) == model.generate_line(rng_b)


def test_bad_files_are_refused(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("not a model")
    with pytest.raises(ValueError, match="plain.txt"):
        MarkovLyricist.load(plain)

    other = tmp_path / "other.json.gz"
    with gzip.open(other, "wt") as f:
        json.dump({"format": "something-else"}, f)
    with pytest.raises(ValueError, match="other.json.gz"):
        MarkovLyricist.load(other)

    future = tmp_path / "future.json.gz"
    with gzip.open(future, "wt") as f:
        json.dump({"format": "encore-markov-lyricist", "version": 99, "order": 1}, f)
    with pytest.raises(ValueError, match="version 99"):
        MarkovLyricist.load(future)

    damaged = tmp_path / "damaged.json.gz"
    with gzip.open(damaged, "wt") as f:
        doc = {"format": "encore-markov-lyricist", "version": 1, "order": 3, "counts": [{}]}
        json.dump(doc, f)
    with pytest.raises(ValueError, match="damaged"):
        MarkovLyricist.load(damaged)

    with pytest.raises(FileNotFoundError):
        MarkovLyricist.load(tmp_path / "missing.json.gz")
