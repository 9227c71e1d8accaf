"""English words to a voicebank's phonemes, split into syllables.

    g2p = G2P.for_voicebank(bank, language="en")
    g2p.word("night")   # WordPronunciation(word='night', phonemes=('n', 'ay', 't'),
                        #     syllables=(('n', 'ay', 't'),), source='cmudict', notes=())

Where a pronunciation comes from, in order:

1. the bank's dictionary (``dsdict-<lang>.yaml`` or ``dsdict.yaml``): its entries are in
   the bank's own symbols;
2. CMUdict (through :class:`~engine.lyrics.syllables.Pronouncer`): the first pronunciation,
   stress digits removed, lower case, each phone mapped through the bank's symbols (itself
   when the bank has it, else a near substitute such as ``ax`` -> ``ah``, ``zh`` -> ``sh``;
   phones with neither are dropped and reported);
3. a letter-based approximation for words CMUdict lacks (``source == "letters"``, with a
   note saying so): good enough to sing a made-up word, never right for a real one.

Syllables: each is the onset consonants, one vowel, and, on the word's last syllable, the
consonants after it; consonants between two vowels start the next syllable
(``water`` -> ``w ao | t er``). That is how DiffSinger aligns phonemes to notes: each
vowel on its note, the consonants before it sung ahead of the note. A word without a vowel
is one syllable.

Phrase plans already carry phonemes (ARPAbet without stress, lower case); this module is
for banks whose symbols differ from those, and for text given without phonemes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from engine.lyrics.syllables import Pronouncer, words

if TYPE_CHECKING:
    from engine.voice.voicebank import Voicebank

log = logging.getLogger(__name__)

ARPABET_VOWELS = frozenset(
    "aa ae ah ao aw ax axr ay eh er ey ih ix iy ow oy uh uw ux".split())
"""ARPAbet vowels, lower case without stress (``ax ix ux axr`` are reduced forms some
banks use)."""

SUBSTITUTES: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "ax": (("ah",), ("eh",)), "axr": (("er",), ("ah", "r")), "ix": (("ih",), ("iy",)),
    "ux": (("uw",),), "er": (("ah", "r"), ("eh", "r")), "ah": (("ax",), ("aa",)),
    "ao": (("aa",),), "aa": (("ao",),), "ae": (("eh",),), "uh": (("uw",),),
    "ih": (("iy",),), "oy": (("ao", "y"), ("ow", "y")), "aw": (("aa", "uw"),),
    "ay": (("aa", "iy"), ("aa", "y")), "ey": (("eh", "iy"), ("eh", "y")), "ow": (("ao", "w"),),
    "zh": (("sh",), ("jh",)), "dx": (("d",), ("t",)), "nx": (("n",),), "ng": (("n", "g"), ("n",)),
    "hh": (("h",),), "y": (("j",),), "jh": (("dj",), ("d", "zh")), "ch": (("tsh",), ("t", "sh")),
    "el": (("ah", "l"),), "em": (("ah", "m"),), "en": (("ah", "n"),), "th": (("s",),),
    "dh": (("d",), ("z",)),
}
"""Near substitutes for a phone a bank lacks, best first; each a sequence of phones."""

Source = Literal["dsdict", "cmudict", "letters"]


@dataclass(frozen=True, slots=True)
class WordPronunciation:
    """One word in a bank's symbols: all its phonemes, its syllables, and what happened."""

    word: str
    phonemes: tuple[str, ...]
    syllables: tuple[tuple[str, ...], ...]
    source: Source
    notes: tuple[str, ...] = ()
    """The report: substitutions, dropped phones, a letter-based guess."""


def syllabify(phonemes: Sequence[str], vowels: Collection[str]) -> tuple[tuple[str, ...], ...]:
    """Split a word's phonemes: onset consonants + one vowel per syllable; the consonants
    after the last vowel close the last syllable. No vowel: one syllable. Empty: none."""
    syllables: list[tuple[str, ...]] = []
    onset: list[str] = []
    for p in phonemes:
        onset.append(p)
        if is_vowel(p, vowels):
            syllables.append(tuple(onset))
            onset = []
    if onset:
        if syllables:
            syllables[-1] += tuple(onset)
        else:
            syllables.append(tuple(onset))
    return tuple(syllables)


def bare(phoneme: str) -> str:
    """A phoneme without its language prefix: ``"en/aa"`` -> ``"aa"``."""
    return phoneme.rpartition("/")[2]


def is_vowel(phoneme: str, vowels: Collection[str]) -> bool:
    """Whether ``phoneme`` (or, for ``lang/name`` tokens, ``name``) is in ``vowels``
    (give :class:`G2P`'s ``vowels``: un-prefixed names)."""
    return phoneme in vowels or bare(phoneme) in vowels


# ---- letters -> ARPAbet: the fallback for words CMUdict lacks ------------------------------

_GRAPHEMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("tch", ("ch",)), ("igh", ("ay",)), ("eigh", ("ey",)), ("augh", ("ao",)),
    ("ough", ("ow",)), ("sch", ("s", "k")),
    ("sh", ("sh",)), ("ch", ("ch",)), ("th", ("th",)), ("ph", ("f",)), ("ng", ("ng",)),
    ("ck", ("k",)), ("qu", ("k", "w")), ("wh", ("w",)), ("gh", ()), ("kn", ("n",)),
    ("wr", ("r",)), ("ee", ("iy",)), ("ea", ("iy",)), ("oo", ("uw",)), ("ou", ("aw",)),
    ("ow", ("ow",)), ("oi", ("oy",)), ("oy", ("oy",)), ("ai", ("ey",)), ("ay", ("ey",)),
    ("au", ("ao",)), ("aw", ("ao",)), ("ie", ("iy",)), ("ey", ("iy",)), ("oa", ("ow",)),
    ("er", ("er",)), ("ir", ("er",)), ("ur", ("er",)), ("ar", ("aa", "r")),
    ("or", ("ao", "r")),
    ("a", ("ae",)), ("e", ("eh",)), ("i", ("ih",)), ("o", ("aa",)), ("u", ("ah",)),
    ("b", ("b",)), ("c", ("k",)), ("d", ("d",)), ("f", ("f",)), ("g", ("g",)),
    ("h", ("hh",)), ("j", ("jh",)), ("k", ("k",)), ("l", ("l",)), ("m", ("m",)),
    ("n", ("n",)), ("p", ("p",)), ("q", ("k",)), ("r", ("r",)), ("s", ("s",)),
    ("t", ("t",)), ("v", ("v",)), ("w", ("w",)), ("x", ("k", "s")), ("z", ("z",)),
)
_LONG = {"a": "ey", "e": "iy", "i": "ay", "o": "ow", "u": "uw", "y": "ay"}
_MAGIC_E = re.compile(r"([aeiou])([bcdfgklmnprstvz])e$")


def letters_to_phonemes(word: str) -> tuple[str, ...]:
    """A rough ARPAbet guess from spelling (``"zorblax"`` -> ``z ao r b l ae k s``)."""
    w = re.sub(r"[^a-z]", "", word.lower())
    if not w:
        return ()
    magic = _MAGIC_E.search(w) if len(w) > 3 else None
    if magic:  # make, bike, home: the vowel is long and the e silent
        w = w[:magic.start()] + "\0" + magic.group(1) + magic.group(2)
    out: list[str] = []
    i = 0
    while i < len(w):
        if w[i] == "\0":
            out.append(_LONG[w[i + 1]])
            i += 2
            continue
        if w[i] == "y":
            out.append("y" if i == 0 else ("ay" if len(w) <= 3 else "iy"))
            i += 1
            continue
        if w[i] == "c" and i + 1 < len(w) and w[i + 1] in "eiy":
            out.append("s")
            i += 1
            continue
        if i > 0 and w[i] == w[i - 1] and w[i] not in "aeiou":
            i += 1  # doubled consonant: one sound
            continue
        for graph, phones in _GRAPHEMES:
            if w.startswith(graph, i):
                out.extend(phones)
                i += len(graph)
                break
        else:
            i += 1
    if len(out) > 1 and out[-1] == "eh" and w.endswith("e") and any(
            p in ARPABET_VOWELS for p in out[:-1]):
        out.pop()  # silent final e
    return tuple(out)


# ---- the converter ------------------------------------------------------------------------

class G2P:
    """English words to the symbols of one bank (see the module notes).

    ``symbols``: the phonemes the bank has (un-prefixed); ``None`` accepts every phone as it
    is. ``dictionary``: the bank's entries (word -> symbols). ``vowels``: which symbols are
    vowels (the bank dictionary's ``vowel`` symbols, else ARPAbet's).
    """

    def __init__(self, symbols: Collection[str] | None = None, *,
                 dictionary: Mapping[str, Sequence[str]] | None = None,
                 vowels: Collection[str] = ARPABET_VOWELS,
                 pronouncer: Pronouncer | None = None) -> None:
        self.symbols = None if symbols is None else frozenset(symbols)
        self.dictionary = {k.lower(): tuple(v) for k, v in (dictionary or {}).items()}
        self.vowels = frozenset(vowels) | {bare(v) for v in vowels}
        """Vowel names, also without their language prefixes (multilingual dictionaries
        type ``en/aa`` as a vowel; CMUdict's words come out as ``aa``)."""
        self.pronouncer = pronouncer or Pronouncer()
        self._cache: dict[str, WordPronunciation] = {}

    @classmethod
    def for_voicebank(cls, bank: Voicebank, language: str | None = "en",
                      pronouncer: Pronouncer | None = None) -> G2P:
        """A converter to ``bank``'s symbols: its phoneme set (``<language>/`` prefixes
        removed) and its dictionary's symbols, entries and vowels."""
        symbols: set[str] = set()
        for name in bank.phonemes.ids:
            lang, sep, plain = name.rpartition("/")
            if not sep:
                symbols.add(name)
            elif lang == language:
                symbols.add(plain)
        dictionary = bank.dictionary(language)
        vowels: Collection[str] = ARPABET_VOWELS
        entries: Mapping[str, Sequence[str]] = {}
        if dictionary is not None:
            entries = dictionary.entries
            mine = {bare(v) for v in dictionary.vowels
                    if v.rpartition("/")[0] in ("", language or "")}
            if mine:
                vowels = mine
        return cls(symbols, dictionary=entries, vowels=vowels, pronouncer=pronouncer)

    def map_phone(self, phone: str) -> tuple[str, ...] | None:
        """One ARPAbet phone (any case, stress digits allowed) in the bank's symbols: itself,
        else its first substitute the bank has; None when nothing fits."""
        p = phone.rstrip("012").lower()
        if self.symbols is None or p in self.symbols:
            return (p,)
        for option in SUBSTITUTES.get(p, ()):
            if all(q in self.symbols for q in option):
                return option
        return None

    def map_phones(self, phones: Sequence[str], notes: list[str]) -> tuple[str, ...]:
        """Phones in the bank's symbols; substitutions and drops are added to ``notes``."""
        out: list[str] = []
        for phone in phones:
            mapped = self.map_phone(phone)
            if mapped is None:
                notes.append(f"dropped {phone!r}: the bank has no such phoneme nor a "
                             f"substitute")
                continue
            if mapped != (phone.rstrip("012").lower(),):
                notes.append(f"{phone!r} -> {' '.join(mapped)!r}")
            out.extend(mapped)
        return tuple(out)

    @staticmethod
    def _key(word: str) -> str:
        return word.lower().replace("\u2019", "'").strip("'\".,;:!?()[]")

    def has_entry(self, word: str) -> bool:
        """Whether the bank's dictionary has ``word``."""
        return self._key(word) in self.dictionary

    def word(self, word: str) -> WordPronunciation:
        """The pronunciation of one word (punctuation around it ignored)."""
        key = self._key(word)
        found = self._cache.get(key)
        if found is not None:
            return found
        notes: list[str] = []
        if key in self.dictionary:
            phonemes, source = self.dictionary[key], "dsdict"
        elif self.pronouncer.known(key):
            phonemes = self.map_phones(self.pronouncer.phones(key)[0], notes)
            source = "cmudict"
        else:
            guess = letters_to_phonemes(key)
            notes.insert(0, f"{word!r} is in neither the bank's dictionary nor CMUdict; "
                            f"guessed from its letters: {' '.join(guess) or '(nothing)'}")
            phonemes, source = self.map_phones(guess, notes), "letters"
        result = WordPronunciation(key, tuple(phonemes), syllabify(phonemes, self.vowels),
                                   source, tuple(notes))
        if notes:
            log.info("g2p %s: %s", key, "; ".join(notes))
        self._cache[key] = result
        return result

    def text(self, text: str) -> list[WordPronunciation]:
        """Every word of ``text`` (split as :func:`engine.lyrics.syllables.words` does)."""
        return [self.word(w) for w in words(text)]
