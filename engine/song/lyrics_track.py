"""The song's words, bar by bar: melody bars in, finished phrase plans out.

Sung sections (``[lyrics] sections``) are cut into phrases of ``phrase_bars`` bars from each
section's first bar (a section's last phrase may be shorter). When a phrase's last bar has
been composed, its melody notes (clipped to the phrase) go to the :class:`LyricsWriter` and
a :class:`PhrasePlan` comes back, a phrase ahead of where it is sung when the caller runs
``phrase_bars`` bars ahead (offline render runs as far ahead as it likes).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.lyrics.phrase import PhrasePlan, SungNote
from engine.lyrics.sources import GPT2Source, MarkovSource
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
    markov_path = settings.model if settings.source == "markov" and settings.model else None
    markov = MarkovSource.load(markov_path, model_dir)  # also the rhyme dictionary's words
    source: MarkovSource | GPT2Source
    if settings.source == "gpt2":
        source = GPT2Source.load(settings.model or None, model_dir,
                                 temperature=settings.temperature, top_k=settings.top_k,
                                 top_p=settings.top_p,
                                 repetition_penalty=settings.repetition_penalty)
    else:
        source = markov
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

    def __init__(self, writer: LyricsWriter, settings: Lyrics) -> None:
        self.writer = writer
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
        report.ms = round(1000 * (time.perf_counter() - began), 2)
        return phrase, report


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
