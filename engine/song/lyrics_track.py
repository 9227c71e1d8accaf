"""The song's words, bar by bar: melody bars in, finished phrase plans out.

Sung sections (``[lyrics] sections``) are cut into phrases of ``phrase_bars`` bars from each
section's first bar (a section's last phrase may be shorter). When a phrase's last bar has
been composed, its melody notes (clipped to the phrase) go to the :class:`LyricsWriter` and
a :class:`PhrasePlan` comes back, a phrase ahead of where it is sung when the caller runs
``phrase_bars`` bars ahead (offline render runs as far ahead as it likes).

Live, a line has a time budget (:data:`LINE_BUDGET_SHARE` of a bar: the phrase's last bar
is composed in the same worker call, which must finish before that bar is due); after each
written line the track asks the writer for as many candidates as fit the budget at the
speed just measured (:func:`candidates_within`), never more than the patch's ``candidates``,
so a slow model or a loaded machine writes fewer candidates rather than a late line.
Offline render has no budget: every line gets the patch's count, and the same song.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.lyrics.phrase import PhrasePlan, SungNote
from engine.lyrics.sources import GPT2Source, MarkovSource, markov_path
from engine.lyrics.syllables import Pronouncer
from engine.lyrics.writer import (
    LineReport,
    LyricsSettings,
    LyricsWriter,
    RhymeDictionary,
    word_frequencies_from_counts,
)
from engine.music.notes import STEPS_PER_BAR, STEPS_PER_QUARTER
from engine.patch import Lyrics
from engine.song.conductor import ArrangedBar, BarPlan

log = logging.getLogger(__name__)

LINE_BUDGET_SHARE = 0.5  # of a bar (doctor warns past this share, too)
BUDGET_MARGIN = 0.8      # aim below the budget: line times vary by tens of percent


def line_budget_s(tempo: float) -> float:
    """Seconds a live line may take at ``tempo`` BPM (4 beats a bar)."""
    return LINE_BUDGET_SHARE * 240.0 / tempo


def candidates_within(budget_s: float, seconds: float, asked: int, most: int) -> int:
    """Candidates to ask for so that a line takes at most ``budget_s`` (with a margin),
    after one took ``seconds`` with ``asked`` candidates; 1 to ``most``.

    A line's time is taken as proportional to its candidates, which overestimates (the
    candidates are sampled as one batch, and fitting and rhyme repair do not grow with
    them), so the count shrinks enough at once and grows back when there is room.
    """
    if seconds <= 0:
        return most
    return max(1, min(most, int(asked * BUDGET_MARGIN * budget_s / seconds)))


def check_lyrics_models(settings: Lyrics, model_dir: str | Path | None = None) -> None:
    """Raise FileNotFoundError, saying how to fix it, when a model the patch's lyricist
    needs is missing (cheap: run before a show starts, so it fails then, not mid-set)."""
    from engine.lyrics.sources import GPT2_FOLDER, MARKOV_FILE, find_model

    if settings.source == "off":
        return
    find_model(settings.model or MARKOV_FILE if settings.source == "markov" else MARKOV_FILE,
               model_dir)
    if settings.source == "gpt2":
        folder = find_model(settings.model or GPT2_FOLDER, model_dir)
        if not (folder / "encore_gpt2.json").exists():
            raise FileNotFoundError(
                f"[lyrics] model: {folder} is not an exported GPT-2 folder (no "
                "encore_gpt2.json): export one with `encore convert gpt2 HF_DIR OUT`")


def build_writer(settings: Lyrics, seed: int, model_dir: str | Path | None = None
                 ) -> LyricsWriter | None:
    """The lyrics writer the patch asks for, or None for ``source = "off"``."""
    if settings.source == "off":
        return None
    pronouncer = Pronouncer()
    source: MarkovSource | GPT2Source | None = None
    if settings.source == "gpt2":  # first: a bad GPT-2 folder is refused before the Markov
        # words (17 MB, seconds on a busy machine) are loaded
        source = GPT2Source.load(settings.model or None, model_dir,
                                 temperature=settings.temperature, top_k=settings.top_k,
                                 top_p=settings.top_p,
                                 repetition_penalty=settings.repetition_penalty)
    markov = MarkovSource.load(markov_path(settings, model_dir))  # also the rhymes' words
    source = source or markov
    rhymes = RhymeDictionary(word_frequencies_from_counts(markov.model.counts[0]), pronouncer)
    return LyricsWriter(
        source,
        LyricsSettings(theme=settings.theme, rhyme_scheme=settings.rhyme_scheme,
                       chorus_sections=tuple(settings.chorus_sections),
                       candidates=settings.candidates),
        rhymes=rhymes, pronouncer=pronouncer, seed=seed,
    )


class LyricsTrack:
    """Collects melody bars into phrases and has them written."""

    def __init__(self, writer: LyricsWriter, settings: Lyrics,
                 budget_s: float | None = None) -> None:
        self.writer = writer
        self.budget_s = budget_s  # live: seconds a line may take; None offline
        self.most_candidates = settings.candidates  # the patch's count, the most asked
        self.sections = frozenset(settings.sections)
        self.phrase_bars = settings.phrase_bars
        self._notes: list[SungNote] = []
        self._first_bar: int | None = None

    def feed(self, plan: BarPlan, arranged: ArrangedBar
             ) -> tuple[PhrasePlan, LineReport] | None:
        """Take one composed bar; return a phrase plan when this bar completes a phrase."""
        pos = plan.position
        if pos.section not in self.sections:
            self._notes, self._first_bar = [], None
            return None
        if pos.is_section_start:
            self.writer.start_section(pos.section)
        in_phrase = pos.bar_in_section % self.phrase_bars
        if in_phrase == 0 or self._first_bar is None:
            self._notes, self._first_bar = [], arranged.index
        phrase_end_bar = min(pos.bar_in_section - in_phrase + self.phrase_bars,
                             pos.section_bars) - pos.bar_in_section + arranged.index
        end_beat = phrase_end_bar * STEPS_PER_BAR / STEPS_PER_QUARTER
        offset = arranged.index * STEPS_PER_BAR
        for note in sorted(arranged.parts.get("melody", ()), key=lambda n: (n.start, n.pitch)):
            start = (offset + note.start) / STEPS_PER_QUARTER
            end = min((offset + note.end) / STEPS_PER_QUARTER, end_beat)
            if end > start:
                self._add_note(SungNote(note.pitch, start, end - start))
        if arranged.index + 1 < phrase_end_bar:
            return None
        notes, first = self._notes, self._first_bar
        self._notes, self._first_bar = [], None
        began = time.perf_counter()
        written = self.writer.write(first, pos.section, notes)
        if written is None:
            return None
        phrase, report = written
        seconds = time.perf_counter() - began
        report.ms = round(1000 * seconds, 2)
        if self.budget_s is not None and not report.reused:
            self._fit_candidates(seconds)
        return phrase, report

    def _fit_candidates(self, seconds: float) -> None:
        """Ask for as many candidates next time as the budget allows at this speed."""
        settings = self.writer.settings
        wanted = candidates_within(self.budget_s, seconds, settings.candidates,
                                   self.most_candidates)
        if wanted != settings.candidates:
            log.info("lyrics: a line took %.0f ms of a %.0f ms budget with %d candidates; "
                     "now %d", 1000 * seconds, 1000 * self.budget_s, settings.candidates,
                     wanted)
            settings.candidates = wanted


    def _add_note(self, note: SungNote) -> None:
        """Append ``note`` to the phrase's line, which a voice sings one note at a time: a
        note still held when this one starts (a long note tied over the bar line while the
        next bar begins its own) ends there; of two starting together the higher, which comes
        last, stays."""
        notes = self._notes
        if notes and notes[-1].start + notes[-1].duration > note.start:
            held = notes.pop()
            if note.start > held.start:
                notes.append(SungNote(held.pitch, held.start, note.start - held.start))
        notes.append(note)


def lyric_record(phrase: PhrasePlan, report: LineReport) -> dict[str, Any]:
    """The event-log record of one written line. The time it took is left out, so that a
    song's log is the same bytes each time it is rendered."""
    fit = asdict(report)
    del fit["ms"]
    return {"type": "lyric"} | phrase.to_dict() | {"fit": fit}


def lyric_events(phrases: list[PhrasePlan]) -> list[tuple[int, str]]:
    """MIDI lyric meta events (step, text), one per syllable at its first note, in the
    usual karaoke spelling: a syllable that continues its word ends in "-", a word's last
    syllable in a space ("hol-" "ding " "on ")."""
    events = []
    for phrase in phrases:
        syllables = phrase.syllables
        for k, syllable in enumerate(syllables):
            word_ends = k + 1 == len(syllables) or syllables[k + 1].word_start
            base = "" if syllable.text == "-" else syllable.text
            step = round(syllable.start * STEPS_PER_QUARTER)
            events.append((step, base + (" " if word_ends else "-")))
    return events
