"""The lyrics writer with the shipped Markov model: fitting, rhyme, chorus, theme."""

from __future__ import annotations

import pytest

from engine.lyrics.phrase import PhrasePlan, SungNote
from engine.lyrics.sources import MarkovSource
from engine.lyrics.syllables import Pronouncer, words
from engine.lyrics.writer import (
    LyricsSettings,
    LyricsWriter,
    RhymeDictionary,
    word_frequencies_from_counts,
)


@pytest.fixture(scope="module")
def markov() -> MarkovSource:
    return MarkovSource.load()


@pytest.fixture(scope="module")
def pronouncer() -> Pronouncer:
    return Pronouncer()


@pytest.fixture(scope="module")
def rhymes(markov, pronouncer) -> RhymeDictionary:
    return RhymeDictionary(word_frequencies_from_counts(markov.model.counts[0]), pronouncer)


def make_writer(markov, rhymes, pronouncer, seed: int = 0, **settings) -> LyricsWriter:
    return LyricsWriter(markov, LyricsSettings(**settings), rhymes=rhymes,
                        pronouncer=pronouncer, seed=seed)


def phrase_notes(bar: int, pattern: list[tuple[float, float]], pitch: int = 64
                 ) -> list[SungNote]:
    return [SungNote(pitch + k % 5, bar * 4 + start, length)
            for k, (start, length) in enumerate(pattern)]


PATTERNS = [
    [(0, 1), (1, 1), (2, 1), (3, 1), (4, 2), (6, 2)],
    [(0, 0.5), (0.5, 0.5), (1, 1), (2, 2), (4, 4)],
    [(0, 2), (2, 1), (3, 1), (4, 1), (5, 3)],
    [(0, 1), (1, 1), (2, 2), (4, 1), (5, 1), (6, 2)],
]


def write_stanza(writer: LyricsWriter, section: str, first_bar: int
                 ) -> list[tuple[PhrasePlan, object]]:
    writer.start_section(section)
    out = []
    for k, pattern in enumerate(PATTERNS):
        written = writer.write(first_bar + 2 * k, section, phrase_notes(first_bar + 2 * k,
                                                                          pattern))
        assert written is not None
        out.append(written)
    return out


def test_every_note_of_a_phrase_is_sung_in_order(markov, rhymes, pronouncer) -> None:
    writer = make_writer(markov, rhymes, pronouncer)
    for k, (plan, _report) in enumerate(write_stanza(writer, "verse", 4)):
        notes = phrase_notes(4 + 2 * k, PATTERNS[k])
        sung = [n for s in plan.syllables for n in s.notes]
        assert sung[0].start == notes[0].start
        assert sum(n.duration for n in sung) == pytest.approx(sum(n.duration for n in notes))
        assert {n.pitch for n in sung} == {n.pitch for n in notes}
        assert len(plan.syllables) == pronouncer.line_syllables(plan.text)
        assert plan.text and all(s.phonemes for s in plan.syllables)


def test_the_same_seed_writes_the_same_words(markov, rhymes, pronouncer) -> None:
    a = [p.text for p, _ in write_stanza(make_writer(markov, rhymes, pronouncer, 3), "verse", 0)]
    b = [p.text for p, _ in write_stanza(make_writer(markov, rhymes, pronouncer, 3), "verse", 0)]
    c = [p.text for p, _ in write_stanza(make_writer(markov, rhymes, pronouncer, 4), "verse", 0)]
    assert a == b
    assert a != c


@pytest.mark.parametrize("scheme, pairs", [("AABB", [(0, 1), (2, 3)]),
                                           ("ABAB", [(0, 2), (1, 3)])])
def test_verse_lines_rhyme_in_the_scheme(markov, rhymes, pronouncer, scheme, pairs) -> None:
    rhymed = total = 0
    for seed in range(4):
        writer = make_writer(markov, rhymes, pronouncer, seed, rhyme_scheme=scheme)
        texts = [p.text for p, _ in write_stanza(writer, "verse", 0)]
        for a, b in pairs:
            total += 1
            rhymed += pronouncer.rhymes(words(texts[a])[-1], words(texts[b])[-1])
    assert rhymed >= total - 1, f"only {rhymed} of {total} line pairs rhyme"


def test_no_scheme_asks_for_no_rhyme(markov, rhymes, pronouncer) -> None:
    writer = make_writer(markov, rhymes, pronouncer, rhyme_scheme="")
    assert all(report.rhyme_with is None for _, report in write_stanza(writer, "verse", 0))


def test_the_chorus_comes_back_word_for_word_until_new_words_are_asked_for(
        markov, rhymes, pronouncer) -> None:
    writer = make_writer(markov, rhymes, pronouncer)
    first = [p.text for p, _ in write_stanza(writer, "chorus", 8)]
    write_stanza(writer, "verse", 16)
    again = write_stanza(writer, "chorus", 24)
    assert [p.text for p, _ in again] == first
    assert all(report.reused for _, report in again)
    assert all(p.bar >= 24 for p, _ in again)  # laid on this pass's notes
    writer.renew()
    fresh = [p.text for p, _ in write_stanza(writer, "chorus", 32)]
    assert fresh != first


def test_the_theme_word_is_sung(markov, rhymes, pronouncer) -> None:
    hits = 0
    for seed in range(3):
        writer = make_writer(markov, rhymes, pronouncer, seed, theme="sea")
        texts = [p.text for p, _ in write_stanza(writer, "verse", 0)]
        hits += any("sea" in words(t) for t in texts)
    assert hits == 3


def test_a_phrase_of_one_note_is_left_instrumental(markov, rhymes, pronouncer) -> None:
    writer = make_writer(markov, rhymes, pronouncer)
    assert writer.write(0, "verse", [SungNote(60, 0, 4)]) is None


def test_a_plan_round_trips_through_a_dict(markov, rhymes, pronouncer) -> None:
    plan, _ = write_stanza(make_writer(markov, rhymes, pronouncer), "verse", 0)[0]
    assert PhrasePlan.from_dict(plan.to_dict()) == plan
