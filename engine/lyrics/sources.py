"""Line sources for the lyrics writer: the Markov model and the GPT-2 model (ONNX).

Both turn (stanza so far, theme, how many) into candidate lines, and rank words for the
end of a line (rhyme repair). The shipped models live in ``models_onnx/``:
``lyrics_markov.json.gz`` and the folder ``lyrics_gpt2/``; a patch may name others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.lyrics.markov import START, MarkovLyricist
from engine.lyrics.syllables import words
from engine.models import model_dirs

if TYPE_CHECKING:
    from engine.patch import Lyrics

MARKOV_FILE = "lyrics_markov.json.gz"
GPT2_FOLDER = "lyrics_gpt2"
THEME_PREFIX = "about:"
EOS = "<|endoftext|>"


def find_model(name: str, model_dir: str | Path | None = None) -> Path:
    """A lyrics model by path, or by name in the model folders."""
    direct = Path(name).expanduser()
    if direct.exists():
        return direct
    for folder in model_dirs(model_dir):
        if (folder / name).exists():
            return folder / name
    searched = ", ".join(str(d) for d in model_dirs(model_dir))
    raise FileNotFoundError(
        f"lyrics model {name!r} not found (looked in {searched}): give a path, or put it in "
        "one of those folders (encore convert gpt2 DIR OUT writes a GPT-2 one)"
    )


def markov_path(settings: Lyrics, model_dir: str | Path | None = None) -> Path:
    """The Markov model a writer with ``settings`` loads: the lyricist's (``[lyrics] model``
    with ``source = "markov"``), else the shipped one (the rhyme dictionary's words)."""
    named = settings.model if settings.source == "markov" and settings.model else MARKOV_FILE
    return find_model(named, model_dir)


class MarkovSource:
    """Candidate lines from the variable-order Markov model."""

    name = "markov"

    def __init__(self, model: MarkovLyricist) -> None:
        self.model = model

    @classmethod
    def load(cls, path: str | Path | None = None, model_dir: str | Path | None = None
             ) -> MarkovSource:
        return cls(MarkovLyricist.load(find_model(str(path or MARKOV_FILE), model_dir)))

    def candidates(self, context: Sequence[str], theme: str, n: int, max_syllables: int,
                   rng: np.random.Generator) -> list[str]:
        theme_words = words(theme)
        start = theme_words[0] if theme_words and self.model.knows(theme_words[0]) else None
        max_words = max(2, max_syllables)
        lines = []
        for k in range(2 * n):  # cheap: twice as many as asked
            lines.append(self.model.generate_line(
                rng, max_words=max_words, start=start if k % 4 == 0 else None))
        return lines

    def rank_words(self, prefix: str, options: Sequence[str]) -> np.ndarray:
        prev = words(prefix)[-1:] or [START]
        follow = self.model.counts[0].get(prev[0], {})
        total = sum(follow.values()) or 1
        return np.array([math.log((follow.get(w, 0) + 0.01) / total) for w in options])


class GPT2Source:
    """Candidate lines sampled from a GPT-2 model on ONNX Runtime, in one batch."""

    name = "gpt2"

    def __init__(self, runner, *, temperature: float = 0.9, top_k: int = 40,
                 top_p: float = 0.95, repetition_penalty: float = 1.2) -> None:
        self.runner = runner
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.repetition_penalty = repetition_penalty
        self._roaming = ""  # the theme the model chose for the stanza when none is given

    @classmethod
    def load(cls, path: str | Path | None = None, model_dir: str | Path | None = None,
             **sampling: float) -> GPT2Source:
        from engine.lyrics.gpt2_runner import GPT2Lyricist

        return cls(GPT2Lyricist.load(find_model(str(path or GPT2_FOLDER), model_dir)), **sampling)

    @staticmethod
    def prompt(context: Sequence[str], theme: str) -> str:
        """The training format: end token, optional theme line, the stanza's lines."""
        head = f"{THEME_PREFIX} {theme.strip()}\n" if theme.strip() else ""
        body = "".join(line + "\n" for line in context)
        return EOS + head + body

    def candidates(self, context: Sequence[str], theme: str, n: int, max_syllables: int,
                   rng: np.random.Generator) -> list[str]:
        if not theme.strip():  # let the model roam: it picks a theme for each stanza
            if not context or not self._roaming:
                self._roaming = self._own_theme(rng)
            theme = self._roaming
        max_tokens = int(min(32, max(6, 1.6 * max_syllables)))
        lines = self.runner.generate_lines(
            self.prompt(context, theme), n, rng, max_tokens=max_tokens,
            temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
            repetition_penalty=self.repetition_penalty)
        # Unprompted, a model trained on our format may open with a theme line of its own.
        return [line for line in lines if not line.lower().startswith(THEME_PREFIX)]

    def _own_theme(self, rng: np.random.Generator) -> str:
        """A theme word the model itself writes after ``about:`` (as it learned to)."""
        line = self.runner.generate_lines(EOS + THEME_PREFIX, 1, rng, max_tokens=4,
                                          temperature=1.0, top_k=self.top_k or 40)[0]
        found = words(line)
        return found[0] if found else ""

    def rank_words(self, prefix: str, options: Sequence[str]) -> np.ndarray:
        return np.asarray(self.runner.token_logprob_of_words(EOS + prefix, list(options)))
