"""The song's lyricist: a line per vocal phrase, fitted to its notes, rhymed, the chorus kept.

For each phrase the line source (Markov or GPT-2) proposes candidate lines, prompted with
the theme and the lines already in the stanza. Every word-prefix of a candidate is also a
candidate (a line cut at a word boundary is still a line), so there is usually one with
exactly as many syllables as the phrase has notes. Each is laid on the notes by
:func:`engine.lyrics.fitting.fit_line` and scored:

    cost = fit cost (melismas, split notes, stresses off the beat)
         + RHYME_MISS if the stanza's scheme wants a rhyme here and the last word misses it
         + CUT_WEAK if it ends on a weak word ("... of the"), CUT if it was cut at all
         + REPEAT if it repeats a recent line, SAME_START if it begins as a line of the
           stanza did, + UNKNOWN per word CMUdict lacks
         - THEME if it brings the theme word into a stanza that lacks it

The cheapest wins. When the scheme wants a rhyme and no candidate has one, the last word
is replaced by the rhyming word (same syllables and stress) the source likes best after the
rest of the line: a Markov model by its word-pair counts, GPT-2 by the word's probability.

A chorus (a section named in ``chorus_sections``) is written the first time it comes and
sung again, word for word, each time it returns, laid on that pass's notes.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from engine.lyrics.fitting import Fit, fit_line
from engine.lyrics.phrase import PhrasePlan, SungNote, SungSyllable
from engine.lyrics.syllabify import WEAK_WORDS, Syllable, word_syllables
from engine.lyrics.syllables import Pronouncer, words

RHYME_MISS = 3.0
CUT_WEAK = 2.5
CUT = 0.3
REPEAT = 4.0
UNKNOWN = 1.5
THEME = 1.5
SAME_START = 1.0
RECENT_LINES = 24
MIN_NOTES = 2


class LineSource(Protocol):
    """Where candidate lines come from."""

    name: str

    def candidates(self, context: Sequence[str], theme: str, n: int, max_syllables: int,
                   rng: np.random.Generator) -> list[str]:
        """``n`` lines continuing ``context`` (the stanza so far), steered by ``theme``."""
        ...

    def rank_words(self, prefix: str, options: Sequence[str]) -> np.ndarray:
        """A score per option (higher is better) for ending the line ``prefix`` with it."""
        ...


@dataclass
class LyricsSettings:
    theme: str = ""
    rhyme_scheme: str = "AABB"
    chorus_sections: tuple[str, ...] = ("chorus",)
    candidates: int = 8


class RhymeDictionary:
    """Words by rhyming part, most frequent first, for rhyme repair."""

    def __init__(self, frequencies: dict[str, int], pronouncer: Pronouncer,
                 limit: int = 20000) -> None:
        self.pronouncer = pronouncer
        self._by_part: dict[str, list[str]] = defaultdict(list)
        ranked = sorted(frequencies.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
        for word, _count in ranked:
            if len(word) < 2 or word in WEAK_WORDS or not pronouncer.known(word):
                continue
            part = pronouncer.rhyme_part(word)
            if part:
                self._by_part[part].append(word)

    def rhymes_for(self, word: str, limit: int = 40) -> list[str]:
        """The most frequent words rhyming with ``word``."""
        part = self.pronouncer.rhyme_part(word)
        if not part:
            return []
        out = []
        for cand in self._by_part.get(part, ()):
            if cand != word:
                out.append(cand)
                if len(out) == limit:
                    break
        return out


@dataclass
class _Candidate:
    text: str
    words: list[str]
    syllables: list[Syllable]
    fit: Fit
    cost: float
    rhymed: bool | None = None
    repaired: bool = False


@dataclass
class LineReport:
    """What was chosen and why: goes into the event log with the phrase."""

    source: str
    candidates: int
    cost: float
    exact: bool
    rhyme_with: str | None
    rhymed: bool | None
    repaired: bool
    reused: bool
    ms: float = 0.0


@dataclass
class _Stanza:
    section: str
    lines: list[str] = field(default_factory=list)


def _pretty(line_words: list[str]) -> str:
    out = [w.capitalize() if w == "i" or w.startswith("i'") else w for w in line_words]
    text = " ".join(out)
    return text[:1].upper() + text[1:]


class LyricsWriter:
    """Writes a phrase plan for each vocal phrase of the song, in order."""

    def __init__(self, source: LineSource, settings: LyricsSettings, *,
                 rhymes: RhymeDictionary | None, pronouncer: Pronouncer | None = None,
                 seed: int = 0) -> None:
        self.source = source
        self.settings = settings
        self.pronouncer = pronouncer or Pronouncer()
        self.rhymes = rhymes
        self.rng = np.random.default_rng([seed, 0x1F1C])
        self.chorus_text: dict[str, list[str]] = {}
        self._stanza: _Stanza | None = None
        self._written_this_pass: dict[str, bool] = {}
        self._recent: deque[str] = deque(maxlen=RECENT_LINES)

    # -- steering -------------------------------------------------------------------

    def set_theme(self, theme: str) -> None:
        self.settings.theme = theme.strip()

    def renew(self) -> None:
        """Forget the chorus text: the next chorus is written anew (a tablet's "new words")."""
        self.chorus_text.clear()

    # -- writing --------------------------------------------------------------------

    def start_section(self, section: str) -> None:
        """Call at each section's first bar: a new stanza begins."""
        self._stanza = _Stanza(section)
        if section in self.settings.chorus_sections:
            self._written_this_pass[section] = section not in self.chorus_text
            if section not in self.chorus_text:
                self.chorus_text[section] = []

    def write(self, bar: int, section: str, notes: Sequence[SungNote]
              ) -> tuple[PhrasePlan, LineReport] | None:
        """The phrase plan for ``notes`` (beats from the song start), or None when the
        phrase has too few notes to sing."""
        if self._stanza is None or self._stanza.section != section:
            self.start_section(section)
        assert self._stanza is not None
        notes = sorted(notes, key=lambda n: n.start)
        if len(notes) < MIN_NOTES:
            return None
        index = len(self._stanza.lines)
        is_chorus = section in self.settings.chorus_sections
        reused = False
        chosen: _Candidate | None = None
        rhyme_with = self._rhyme_partner(index)
        if is_chorus and not self._written_this_pass.get(section, True):
            stored = self.chorus_text.get(section, [])
            if index < len(stored):
                chosen = self._refit(stored[index], notes)
                reused = chosen is not None
        n_candidates = 0
        if chosen is None:
            pool = self._candidates(notes, rhyme_with)
            n_candidates = len(pool)
            if not pool:
                return None
            chosen = min(pool, key=lambda c: c.cost)
            if rhyme_with and not chosen.rhymed:
                chosen = self._repair_rhyme(chosen, rhyme_with, notes)
            if is_chorus and self._written_this_pass.get(section, False):
                self.chorus_text[section].append(chosen.text)
        self._stanza.lines.append(chosen.text)
        self._recent.append(chosen.text)
        plan = PhrasePlan(
            bar=bar, section=section, text=chosen.text,
            role="chorus" if is_chorus else "verse",
            syllables=tuple(
                SungSyllable(text=s.text, word=self._word_of(chosen, k), phonemes=s.phonemes,
                             notes=slot.notes, stressed=s.stress == "1",
                             word_start=s.word_start)
                for k, (s, slot) in enumerate(zip(chosen.syllables, chosen.fit.slots,
                                                  strict=True))
            ),
        )
        report = LineReport(
            source=self.source.name, candidates=n_candidates, cost=round(chosen.cost, 3),
            exact=chosen.fit.exact, rhyme_with=rhyme_with, rhymed=chosen.rhymed,
            repaired=chosen.repaired, reused=reused,
        )
        return plan, report

    # -- internals ------------------------------------------------------------------

    def _rhyme_partner(self, index: int) -> str | None:
        scheme = self.settings.rhyme_scheme.upper()
        if not scheme or self._stanza is None:
            return None
        size = len(scheme)
        block = index // size * size
        letter = scheme[index % size]
        if letter == "X":  # a line that need not rhyme
            return None
        for j in range(block, index):
            if scheme[j % size] == letter and j < len(self._stanza.lines):
                line_words = words(self._stanza.lines[j])
                return line_words[-1] if line_words else None
        return None

    @staticmethod
    def _word_of(candidate: _Candidate, k: int) -> str:
        count = -1
        for s in candidate.syllables[: k + 1]:
            if s.word_start:
                count += 1
        return candidate.words[count]

    def _score(self, line_words: list[str], notes: Sequence[SungNote], rhyme_with: str | None,
               cut: bool) -> _Candidate | None:
        if not line_words:
            return None
        syllables = [s for w in line_words for s in word_syllables(w, self.pronouncer)]
        fit = fit_line("".join(s.stress for s in syllables), notes)
        if fit is None:
            return None
        cost = fit.cost
        rhymed = None
        if rhyme_with:
            rhymed = self.pronouncer.rhymes(line_words[-1], rhyme_with)
            cost += 0.0 if rhymed else RHYME_MISS
        if line_words[-1] in WEAK_WORDS:
            cost += CUT_WEAK
        elif cut:
            cost += CUT
        text = _pretty(line_words)
        if text in self._recent:
            cost += REPEAT
        stanza_lines = self._stanza.lines if self._stanza else []
        if any(words(line)[:1] == line_words[:1] for line in stanza_lines):
            cost += SAME_START
        cost += UNKNOWN * sum(not s.known for s in syllables if s.word_start)
        theme = words(self.settings.theme)
        if theme and theme[0] in line_words and not any(
                theme[0] in words(line) for line in stanza_lines):
            cost -= THEME
        return _Candidate(text, line_words, syllables, fit, cost, rhymed)

    def _candidates(self, notes: Sequence[SungNote], rhyme_with: str | None
                    ) -> list[_Candidate]:
        context = list(self._stanza.lines[-3:]) if self._stanza else []
        max_syllables = min(4 * len(notes), len(notes) + 8)
        lines = self.source.candidates(context, self.settings.theme, self.settings.candidates,
                                       max_syllables, self.rng)
        pool: dict[str, _Candidate] = {}
        for line in lines:
            line_words = words(line)
            total = 0
            for end in range(1, len(line_words) + 1):
                total += self.pronouncer.syllables(line_words[end - 1])
                if total > max_syllables:
                    break
                if end < 2 and len(notes) > 2:
                    continue
                cand = self._score(line_words[:end], notes, rhyme_with,
                                   cut=end < len(line_words))
                if cand is not None and (cand.text not in pool or
                                         cand.cost < pool[cand.text].cost):
                    pool[cand.text] = cand
        return list(pool.values())

    def _refit(self, text: str, notes: Sequence[SungNote]) -> _Candidate | None:
        line_words = words(text)
        for end in range(len(line_words), 0, -1):
            cand = self._score(line_words[:end], notes, None, cut=end < len(line_words))
            if cand is not None:
                return cand
        return None

    def _repair_rhyme(self, chosen: _Candidate, rhyme_with: str, notes: Sequence[SungNote]
                      ) -> _Candidate:
        if self.rhymes is None:
            return chosen
        options = [w for w in self.rhymes.rhymes_for(rhyme_with) if w not in chosen.words]
        if not options:
            return chosen
        prefix = _pretty(chosen.words[:-1])
        scores = np.asarray(self.source.rank_words(prefix, options))
        best: _Candidate | None = None
        for k in np.argsort(-scores, kind="stable")[:8]:
            cand = self._score(chosen.words[:-1] + [options[int(k)]], notes, rhyme_with,
                               cut=False)
            if cand is not None and cand.rhymed and (best is None or cand.cost < best.cost):
                best = cand
        if best is None:
            return chosen
        best.repaired = True
        return best


def word_frequencies_from_counts(first_order: dict[str, dict[str, int]]) -> dict[str, int]:
    """Unigram counts from a Markov model's order-1 table (how often each word follows)."""
    freq: dict[str, int] = defaultdict(int)
    for follow in first_order.values():
        for word, count in follow.items():
            if word.isalpha() or "'" in word:
                freq[word] += count
    return dict(freq)
