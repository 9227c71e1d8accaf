"""A variable-order word Markov lyricist: the fast, seeded fallback for lines of lyrics.

Training splits each line into words (:func:`engine.lyrics.syllables.words`) between a
start and an end marker and counts, for every order ``k`` in ``1..order``, which word
follows each ``k``-word context::

    "the night is long"  ->  <s> the night is long </s>
    order 1: {"<s>": {"the": 1}, "the": {"night": 1}, ...}
    order 2: {"<s> the": {"night": 1}, "the night": {"is": 1}, ...}

Generation starts from the start marker (or from a theme word the model has seen) and
walks: the next word is drawn, weighted by its count, from the longest context of the line
so far that training saw (back-off: order 3, else 2, else 1). A line ends at the end
marker or after ``max_words`` words. When no context of any order follows (only possible
with a hand-made or damaged model) the walk restarts from a random seen word. Draws come
from the ``numpy`` generator passed in, so a seeded generator gives the same line.

Lines come out lower case, with the first letter and the pronoun ``I`` (``I'm``, ``I'll``)
capitalised. Counts are plain dicts of dicts keyed by space-joined contexts, which is also
the saved form: gzipped JSON with a format name, version and order.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from engine.lyrics.syllables import words
from engine.untrusted import MiB, MissingFileError, UntrustedFileError, gunzip, parse_json

START = "<s>"
END = "</s>"
FORMAT = "encore-markov-lyricist"
VERSION = 1
MAX_UNPACKED_BYTES = 96 * MiB
"""The largest model unpacked (the shipped one is 17 MB unpacked); a gzip bomb stops here."""
TABLE_CACHE_SIZE = 20_000
"""Transition tables kept for reuse, the oldest dropped first: a long set visits hundreds
of thousands of contexts, most of them once, and an unbounded cache grew about 10 MB an
hour of song (benchmarks/bench_soak.py)."""


def _pretty(tokens: list[str]) -> str:
    out = [t.capitalize() if t == "i" or t.startswith("i'") else t for t in tokens]
    line = " ".join(out)
    return line[:1].upper() + line[1:]


class MarkovLyricist:
    """Word Markov model of orders ``1..order`` with back-off (see the module notes)."""

    def __init__(self, order: int = 3) -> None:
        if not isinstance(order, int) or isinstance(order, bool):
            raise TypeError(f"order must be an int, got {type(order).__name__}")
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        self.order = order
        # counts[k - 1][context of k words joined by spaces][next word] -> count
        self.counts: list[dict[str, dict[str, int]]] = [{} for _ in range(order)]
        self.lines = 0
        self.tokens = 0
        self._tables: dict[tuple[int, str], tuple[list[str], np.ndarray]] = {}
        self._vocab: list[str] | None = None

    # -- training -----------------------------------------------------------------------

    def train(self, lines: Iterable[str]) -> MarkovLyricist:
        """Count the transitions of each line (empty lines are skipped). Returns self."""
        for line in lines:
            ws = words(line)
            if not ws:
                continue
            seq = [START, *ws, END]
            for i in range(1, len(seq)):
                nxt = seq[i]
                for k in range(1, min(self.order, i) + 1):
                    table = self.counts[k - 1].setdefault(" ".join(seq[i - k : i]), {})
                    table[nxt] = table.get(nxt, 0) + 1
            self.lines += 1
            self.tokens += len(ws)
        self._tables.clear()
        self._vocab = None
        return self

    def knows(self, word: str) -> bool:
        """Whether training saw ``word`` (as a context of order 1)."""
        return word.lower() in self.counts[0]

    # -- generation ---------------------------------------------------------------------

    def _table(self, k: int, context: str) -> tuple[list[str], np.ndarray] | None:
        key = (k, context)
        table = self._tables.get(key)
        if table is None:
            follow = self.counts[k - 1].get(context)
            if not follow:
                return None
            table = (list(follow), np.cumsum(np.fromiter(follow.values(), dtype=np.int64)))
            if len(self._tables) >= TABLE_CACHE_SIZE:
                del self._tables[next(iter(self._tables))]  # the oldest
            self._tables[key] = table
        return table

    def _next(self, history: list[str], rng: np.random.Generator) -> str | None:
        for k in range(min(self.order, len(history)), 0, -1):
            table = self._table(k, " ".join(history[-k:]))
            if table is not None:
                choices, cumulative = table
                r = rng.integers(int(cumulative[-1]))
                return choices[int(np.searchsorted(cumulative, r, side="right"))]
        return None

    def _random_word(self, rng: np.random.Generator) -> str:
        if self._vocab is None:
            self._vocab = sorted(c for c in self.counts[0] if c != START)
        return self._vocab[int(rng.integers(len(self._vocab)))]

    def generate_line(
        self, rng: np.random.Generator, *, max_words: int = 14, start: str | None = None
    ) -> str:
        """One line of at most ``max_words`` words. ``start`` (a theme word) begins the line
        when training saw it; otherwise the line begins as training lines do."""
        if not self.counts[0]:
            raise RuntimeError("the Markov lyricist is untrained: call train() or load() first")
        if max_words < 1:
            raise ValueError(f"max_words must be at least 1, got {max_words}")
        history = [START]
        out: list[str] = []
        if start is not None:
            theme = words(start)
            if len(theme) == 1 and self.knows(theme[0]):
                history.append(theme[0])
                out.append(theme[0])
        while len(out) < max_words:
            nxt = self._next(history, rng)
            if nxt is None:  # nothing follows at any order: restart from a random word
                nxt = self._random_word(rng)
            if nxt == END:
                break
            history.append(nxt)
            out.append(nxt)
            del history[: -self.order]
        return _pretty(out)

    # -- inspection and files -----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Sizes: lines and words trained on, vocabulary, contexts and transitions per order."""
        return {
            "order": self.order,
            "lines": self.lines,
            "tokens": self.tokens,
            "vocabulary": sum(1 for c in self.counts[0] if c != START),
            "contexts": [len(c) for c in self.counts],
            "transitions": [sum(len(f) for f in c.values()) for c in self.counts],
        }

    def save(self, path: str | Path) -> Path:
        """Write the model as gzipped JSON (format, version, order, counts)."""
        path = Path(path)
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "order": self.order,
            "lines": self.lines,
            "tokens": self.tokens,
            "counts": self.counts,
        }
        with gzip.open(path, "wt", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> MarkovLyricist:
        """Read a model written by :meth:`save`; anything else is refused with ValueError."""
        path = Path(path)
        fix = "gzipped JSON written by MarkovLyricist.save; retrain it with export.train_markov"
        try:
            doc = parse_json(gunzip(path, MAX_UNPACKED_BYTES, fix), path, fix)
        except MissingFileError:
            raise
        except UntrustedFileError as e:
            raise UntrustedFileError(path, f"not a Markov lyricist file: {e.what}", fix) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{path} is not a Markov lyricist file (no format {FORMAT!r})")
        if doc.get("version") != VERSION:
            raise ValueError(
                f"{path} is a Markov lyricist file of version {doc.get('version')!r}; this "
                f"engine reads version {VERSION}: retrain it with MarkovLyricist.train()"
            )
        order, counts = doc.get("order"), doc.get("counts")
        if (
            not isinstance(order, int)
            or order < 1
            or not isinstance(counts, list)
            or len(counts) != order
            or not all(isinstance(c, dict) for c in counts)
        ):
            raise ValueError(f"{path}: damaged Markov lyricist file (order and counts disagree)")
        if not all(type(follow) is dict and all(type(n) is int and n > 0 for n in follow.values())
                   for table in counts for follow in table.values()):
            raise ValueError(f"{path}: damaged Markov lyricist file (a count is not a whole "
                             "number above 0); retrain it with MarkovLyricist.train()")
        if not counts[0] or not all(type(doc.get(k, 0)) is int for k in ("lines", "tokens")):
            raise ValueError(f"{path}: damaged Markov lyricist file (no words, or lines and "
                             "tokens are not whole numbers); retrain it with "
                             "MarkovLyricist.train()")
        model = cls(order)
        model.counts = counts
        model.lines = doc.get("lines", 0)
        model.tokens = doc.get("tokens", 0)
        return model
