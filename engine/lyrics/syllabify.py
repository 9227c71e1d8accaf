"""Words into sung syllables: phonemes per syllable, a stress mark, and a spelling.

Phonemes come from CMUdict through :class:`Pronouncer` and are split at vowels: the
consonants between two vowels go to the second syllable, except that of two or more the
first closes the earlier syllable ("win-ter", "a-gain"). They are written the DiffSinger
way: ARPAbet, lower case, without stress digits. Unknown words get a letter-based guess
(a phoneme per letter group) so they can still be sung, and are marked as unknown.

The spelling of each syllable is for lyric events and the screen: the word's letters cut
at its vowel groups when their count matches the syllables, otherwise the word on its first
syllable and ``-`` on the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.lyrics.syllables import Pronouncer

# Monosyllables that take the stress of the music rather than bring their own.
WEAK_WORDS = frozenset(
    "a an the of to in on at by for from with and or but nor as if so than that is am are "
    "was were be been has have had do does did i you he she it we they me him her us them "
    "my your his its our their thy thee thou o oh ah can could would should shall will may "
    "might must not no yet all".split()
)
_LETTER_PHONES = {
    "a": "ae", "b": "b", "c": "k", "d": "d", "e": "eh", "f": "f", "g": "g", "h": "hh",
    "i": "ih", "j": "jh", "k": "k", "l": "l", "m": "m", "n": "n", "o": "aa", "p": "p",
    "q": "k", "r": "r", "s": "s", "t": "t", "u": "ah", "v": "v", "w": "w", "x": "k",
    "y": "y", "z": "z",
}
_VOWEL_LETTERS = re.compile(r"[aeiouy]+")
_CONSONANT_UNITS = re.compile(r"th|sh|ch|ph|wh|gh|ck|ng|qu|[^aeiouy]")


@dataclass(frozen=True, slots=True)
class Syllable:
    text: str
    phonemes: tuple[str, ...]
    stress: str
    """"1" stressed, "0" unstressed, "x" free (a weak monosyllable)."""
    word_start: bool
    known: bool = True


def _split_phones(phones: list[str]) -> list[tuple[list[str], str]]:
    vowels = [i for i, p in enumerate(phones) if p[-1].isdigit()]
    if not vowels:
        return [([p.lower() for p in phones], "0")]
    cuts = [0]
    for a, b in zip(vowels, vowels[1:], strict=False):
        between = b - a - 1
        cuts.append(a + 1 + (1 if between >= 2 else 0))
    cuts.append(len(phones))
    out = []
    for k, vowel in enumerate(vowels):
        part = phones[cuts[k] : cuts[k + 1]]
        stress = phones[vowel][-1]
        out.append(([p.rstrip("012").lower() for p in part], "1" if stress == "1" else "0"
                    if stress == "0" else "2"))
    return out


def _guess_phones(word: str) -> list[str]:
    """A crude letter-to-phoneme guess for words CMUdict lacks: one vowel phoneme per
    vowel group (so the syllable count matches the orthographic estimate)."""
    phones: list[str] = []
    for chunk in re.findall(r"[aeiouy]+|[^aeiouy]", word.lower()):
        if chunk[0] in "aeiouy":
            phones.append(_LETTER_PHONES.get(chunk[0], "ah") + "1")
        elif chunk in _LETTER_PHONES:
            phones.append(_LETTER_PHONES[chunk])
    if not any(p[-1].isdigit() for p in phones):
        phones.append("ah1")
    if len(phones) > 1 and word.endswith("e") and phones[-1] == "eh1" and sum(
            p[-1].isdigit() for p in phones) > 1:
        phones.pop()  # silent final e
    return phones


def _spellings(word: str, n: int) -> list[str]:
    if n == 1:
        return [word]
    groups = list(_VOWEL_LETTERS.finditer(word.lower()))
    if len(groups) == n + 1 and word.lower().endswith("e"):
        groups = groups[:-1]
    if len(groups) != n:
        return [word] + ["-"] * (n - 1)
    if n >= 2 and word.lower().endswith("ing") and len(word) > 4:
        return _spellings(word[:-3], n - 1) + [word[-3:]]
    cuts = [0]
    for a, b in zip(groups, groups[1:], strict=False):
        units = _CONSONANT_UNITS.findall(word.lower()[a.end() : b.start()])
        # one consonant (or digraph) opens the next syllable; of more, the last one does
        cuts.append(b.start() - len(units[-1]) if units else b.start())
    cuts.append(len(word))
    return [word[cuts[k] : cuts[k + 1]] for k in range(n)]


def word_syllables(word: str, pronouncer: Pronouncer) -> list[Syllable]:
    """The syllables of one word (already split out of its line by ``words``)."""
    prons = pronouncer.phones(word)
    known = bool(prons)
    phones = prons[0] if known else [p.upper() for p in _guess_phones(word)]
    parts = _split_phones(phones)
    spellings = _spellings(word, len(parts))
    out = []
    for k, ((ph, stress), text) in enumerate(zip(parts, spellings, strict=True)):
        if len(parts) == 1 and word in WEAK_WORDS:
            stress = "x"
        elif len(parts) == 1:
            stress = "1" if stress in "12" else "x"
        out.append(Syllable(text, tuple(ph), stress, k == 0, known))
    return out


def line_syllables(line_words: list[str], pronouncer: Pronouncer) -> list[list[Syllable]]:
    """Syllables word by word."""
    return [word_syllables(w, pronouncer) for w in line_words]
