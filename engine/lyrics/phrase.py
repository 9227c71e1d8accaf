"""The phrase plan: what the lyricist hands the voice for one sung phrase.

A phrase is one lyric line laid on the melody notes of a few bars. Each syllable carries
its phonemes (ARPAbet without stress marks, lower case: the English DiffSinger convention)
and the notes it is sung on: one note normally, several for a melisma. Times are in beats
from the start of the song (a beat is a quarter note; a bar of 4/4 has 4), so a plan stays
right when the tempo is known only later; ``seconds`` converts at a given tempo.

The plan is plain data: it pickles across processes and round-trips through ``to_dict`` /
``from_dict`` into the event log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SungNote:
    """One melody note under a syllable."""

    pitch: int
    start: float
    """Beats from the start of the song."""
    duration: float
    """Beats."""

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True, slots=True)
class SungSyllable:
    """One syllable: its spelling, its word, its phonemes and the notes it is sung on."""

    text: str
    word: str
    phonemes: tuple[str, ...]
    notes: tuple[SungNote, ...]
    stressed: bool = False
    word_start: bool = True
    """True on the first syllable of a word (where a lyric event shows the word)."""

    @property
    def start(self) -> float:
        return self.notes[0].start

    @property
    def end(self) -> float:
        return self.notes[-1].end

    @property
    def pitch(self) -> int:
        return self.notes[0].pitch


@dataclass(frozen=True, slots=True)
class PhrasePlan:
    """One sung line: its text and syllables, placed in the song."""

    bar: int
    """The song bar the phrase begins in."""
    section: str
    text: str
    syllables: tuple[SungSyllable, ...]
    role: str = "verse"
    """"verse" or "chorus" (chorus lines come back with the chorus)."""

    @property
    def start(self) -> float:
        return self.syllables[0].start

    @property
    def end(self) -> float:
        return self.syllables[-1].end

    def transposed(self, semitones: int) -> PhrasePlan:
        """The same phrase sung ``semitones`` higher (lower when negative)."""
        if not semitones:
            return self
        from dataclasses import replace

        return replace(self, syllables=tuple(
            replace(s, notes=tuple(replace(n, pitch=n.pitch + semitones) for n in s.notes))
            for s in self.syllables))

    def seconds(self, beat: float, tempo_bpm: float) -> float:
        """Seconds from the song's start of ``beat`` at a constant ``tempo_bpm``."""
        return beat * 60.0 / tempo_bpm

    def to_dict(self) -> dict[str, Any]:
        return {
            "bar": self.bar, "section": self.section, "text": self.text, "role": self.role,
            "syllables": [
                {"text": s.text, "word": s.word, "phonemes": list(s.phonemes),
                 "stressed": s.stressed, "word_start": s.word_start,
                 "notes": [[n.pitch, round(n.start, 6), round(n.duration, 6)] for n in s.notes]}
                for s in self.syllables
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhrasePlan:
        return cls(
            bar=int(data["bar"]), section=str(data["section"]), text=str(data["text"]),
            role=str(data.get("role", "verse")),
            syllables=tuple(
                SungSyllable(
                    text=str(s["text"]), word=str(s["word"]), phonemes=tuple(s["phonemes"]),
                    stressed=bool(s.get("stressed", False)),
                    word_start=bool(s.get("word_start", True)),
                    notes=tuple(SungNote(int(p), float(st), float(d)) for p, st, d in s["notes"]),
                )
                for s in data["syllables"]
            ),
        )
