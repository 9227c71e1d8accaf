"""Phoneme timing and f0 of a sung phrase, the way OpenUtau lays out a DiffSinger phrase.

    timing = time_phrase(plan, 96.0, phonemes=per_syllable_tokens, phoneme_ids=bank_ids,
                         vowels={"aa", "iy", ...}, sample_rate=44100, hop_size=512)
    timing.token_ids, timing.durations, timing.f0, timing.n_frames, timing.start_seconds

Layout, in song time:

- Each syllable's nucleus (its first vowel; the last phoneme when it has none) starts
  exactly on the syllable's first note.
- The consonants between two nuclei (the coda of the first syllable, the onset of the next)
  sit just before the next nucleus, so they sound ahead of its note, taking time from the
  previous vowel. Each is ``consonant_seconds`` long (or the duration model's length), all
  of them together squeezed to at most ``vowel_share`` of the previous vowel's span.
- Where a rest (a gap of at least ``min_rest_seconds``) separates two syllables, the coda
  closes the first syllable's last note (inside it), an SP fills the rest, and the onset
  takes at most ``rest_share`` of the rest before the next note.
- The phrase is SP + phonemes + SP: the head SP starts ``head_seconds`` before the first
  note (rounded to whole frames, so the first note lands on a frame boundary exactly: the
  audio can be placed sample-accurately), and the tail SP is ``tail_frames`` frames after
  the last note's end.

Seconds become frames by cumulative rounding (``(int)(x + 0.5)`` on the running time, as
OpenUtau does), so errors never pile up: boundary_k = floor(t_k * sr / hop + 0.5) and
durations = diff(boundaries). Every phoneme gets at least one frame; where rounding would
leave one with none, the earlier boundaries move back (consonants come earlier), so the
nuclei stay on their notes.

f0 (Hz, one value per frame; frame f is centred on sample f * hop): each note's pitch from
its start to the next note's start (held through rests and at both ends: the curve is
continuous, never zero), a smoothstep glide of ``portamento_seconds`` centred on each change
of pitch, and vibrato (``vibrato_cents`` peak, ``vibrato_rate_hz``) on the part of a note
after ``vibrato_delay_seconds``, faded in and out over ``vibrato_fade_seconds``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engine.lyrics.phrase import PhrasePlan
from engine.voice.g2p import is_vowel

SILENCE = "SP"


@dataclass(frozen=True, slots=True)
class TimingSettings:
    """How phonemes are laid on notes and how the f0 curve is drawn."""

    head_seconds: float = 0.5
    tail_frames: int = 8
    consonant_seconds: float = 0.06
    vowel_share: float = 0.5
    """At most this share of a vowel's span goes to the consonants after it."""
    rest_share: float = 0.8
    """At most this share of a rest (or the head) goes to the consonants before a note."""
    min_rest_seconds: float = 0.05
    """A shorter gap between syllables is sung through (legato); a longer one is a rest."""
    portamento_seconds: float = 0.06
    vibrato_cents: float = 20.0
    vibrato_rate_hz: float = 5.5
    vibrato_delay_seconds: float = 0.3
    vibrato_fade_seconds: float = 0.15

    def __post_init__(self) -> None:
        for name in ("head_seconds", "consonant_seconds", "min_rest_seconds",
                     "portamento_seconds", "vibrato_cents", "vibrato_rate_hz",
                     "vibrato_delay_seconds", "vibrato_fade_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"TimingSettings.{name} must be a finite number >= 0, got "
                                 f"{value!r}")
        if self.tail_frames < 1:
            raise ValueError(f"TimingSettings.tail_frames must be >= 1, got {self.tail_frames}")
        for name in ("vowel_share", "rest_share"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"TimingSettings.{name} must be between 0 and 1 (exclusive), "
                                 f"got {getattr(self, name)!r}")


@dataclass(frozen=True, eq=False)
class PhraseTiming:
    """A phrase ready for the graphs: tokens, frames, notes and f0 on the model's grid."""

    phonemes: tuple[str, ...]
    """Token names: SP, the phonemes, SP (and SP for rests)."""
    kinds: tuple[str, ...]
    """Per token: "rest", "onset", "nucleus" or "coda"."""
    token_ids: np.ndarray
    """int64 [n_tokens]."""
    durations: np.ndarray
    """int64 [n_tokens]: frames, each >= 1, summing to n_frames."""
    f0: np.ndarray
    """float32 [n_frames]: Hz, never zero."""
    pitch: np.ndarray
    """float32 [n_frames]: MIDI semitones of notes and glides, without vibrato."""
    ph_midi: np.ndarray
    """int64 [n_tokens]: the note pitch under each token's start."""
    word_div: np.ndarray
    """int64 [n_words]: tokens per word, a word being a nucleus or SP and what follows it
    up to the next one (DiffSinger's ``ph_num``)."""
    note_midi: np.ndarray
    """float32 [n_notes]: the notes on the frame grid, rests included (pitch held)."""
    note_rest: np.ndarray
    """bool [n_notes]."""
    note_dur: np.ndarray
    """int64 [n_notes]: frames, summing to n_frames."""
    n_frames: int
    sample_rate: int
    hop_size: int
    first_note_seconds: float
    """Song time of the first note (where the first nucleus starts)."""
    start_offset: float
    """Seconds from the first note to frame 0: negative, the pre-roll."""

    @property
    def start_seconds(self) -> float:
        """Song time of frame 0 (the first sample)."""
        return self.first_note_seconds + self.start_offset

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_size

    @property
    def word_dur(self) -> np.ndarray:
        """int64 [n_words]: frames per word."""
        ends = np.cumsum(self.word_div)
        return np.add.reduceat(self.durations, ends - self.word_div).astype(np.int64)


@dataclass(slots=True)
class _Token:
    name: str
    kind: str
    start: float  # song seconds


def _split(phonemes: Sequence[str], vowels: Collection[str]) -> tuple[list[str], str, list[str]]:
    """(onset, nucleus, coda): the nucleus is the first vowel, else the last phoneme."""
    nucleus = next((i for i, p in enumerate(phonemes) if is_vowel(p, vowels)),
                   len(phonemes) - 1)
    return list(phonemes[:nucleus]), phonemes[nucleus], list(phonemes[nucleus + 1:])


def _cumulative_frames(seconds: np.ndarray, frame_rate: float) -> np.ndarray:
    """Boundary frames of times (seconds from frame 0): floor(x * frame_rate + 0.5)."""
    return np.floor(seconds * frame_rate + 0.5).astype(np.int64)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray:
    """MIDI semitones to Hz (A4 = 69 = 440 Hz)."""
    return 440.0 * np.power(2.0, (np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def hz_to_midi(hz: np.ndarray | float) -> np.ndarray:
    return 69.0 + 12.0 * np.log2(np.asarray(hz, dtype=np.float64) / 440.0)


class _Layout:
    """Builds the token list in song seconds (see the module notes)."""

    def __init__(self, settings: TimingSettings, lengths: Sequence[float] | None) -> None:
        self.settings = settings
        self.lengths = lengths
        self.tokens: list[_Token] = []

    def add(self, name: str, kind: str, start: float) -> None:
        self.tokens.append(_Token(name, kind, start))

    def consonants(self, names: Sequence[str], kinds: Sequence[str], end: float,
                   room: float) -> None:
        """Consonants ending at ``end``, together at most ``room`` seconds long."""
        if not names:
            return
        first = len(self.tokens)
        lengths = np.array([self.settings.consonant_seconds if self.lengths is None
                            else max(0.0, float(self.lengths[first + k]))
                            for k in range(len(names))])
        total = float(lengths.sum())
        if total > room > 0:
            lengths *= room / total
        elif room <= 0:
            lengths[:] = 0.0
        starts = end - lengths[::-1].cumsum()[::-1]
        for name, kind, start in zip(names, kinds, starts, strict=True):
            self.add(name, kind, float(start))


def time_phrase(plan: PhrasePlan, tempo_bpm: float, *, phoneme_ids: Mapping[str, int],
                vowels: Collection[str], sample_rate: int, hop_size: int,
                phonemes: Sequence[Sequence[str]] | None = None,
                settings: TimingSettings | None = None,
                consonant_seconds: Sequence[float] | None = None) -> PhraseTiming:
    """Lay ``plan`` out on the frame grid of a model (``sample_rate`` / ``hop_size``).

    ``phonemes``: per syllable, the token names to sing (default: each syllable's own
    phonemes); every name must be in ``phoneme_ids``, as must ``"SP"``. ``vowels``: which
    names are vowels (a ``lang/`` prefix is ignored). ``consonant_seconds``: per token of
    a previous layout of the same phrase (same tokens), the length each consonant should
    have (a duration model's prediction); other tokens' entries are ignored.
    """
    settings = settings or TimingSettings()
    if not plan.syllables:
        raise ValueError("the phrase has no syllables: nothing to sing")
    if not (math.isfinite(tempo_bpm) and tempo_bpm > 0):
        raise ValueError(f"tempo_bpm must be a positive number, got {tempo_bpm!r}")
    if sample_rate <= 0 or hop_size <= 0:
        raise ValueError(f"sample_rate and hop_size must be positive, got {sample_rate}, "
                         f"{hop_size}")
    per_syllable = [tuple(s.phonemes) for s in plan.syllables] if phonemes is None else [
        tuple(p) for p in phonemes]
    if len(per_syllable) != len(plan.syllables):
        raise ValueError(f"phonemes has {len(per_syllable)} syllables, the plan "
                         f"{len(plan.syllables)}")
    sec = 60.0 / tempo_bpm
    fps = sample_rate / hop_size
    vowel_at, end_at = [], []
    for i, (syl, phs) in enumerate(zip(plan.syllables, per_syllable, strict=True)):
        if not syl.notes:
            raise ValueError(f"syllable {i} ({syl.text!r}) has no notes")
        if not phs:
            raise ValueError(f"syllable {i} ({syl.text!r}) has no phonemes")
        if any(n.duration <= 0 for n in syl.notes):
            raise ValueError(f"syllable {i} ({syl.text!r}) has a note of duration <= 0")
        if any(b.start < a.start for a, b in itertools.pairwise(syl.notes)):
            raise ValueError(f"syllable {i} ({syl.text!r}): its notes are not in time order")
        vowel_at.append(syl.notes[0].start * sec)
        end_at.append(max(n.end for n in syl.notes) * sec)
        if i and vowel_at[i] <= vowel_at[i - 1]:
            raise ValueError(f"syllable {i} ({syl.text!r}) starts at beat {syl.start}, not after "
                             f"the syllable before it (beat {plan.syllables[i - 1].start})")
    head_frames = max(1, round(settings.head_seconds * fps))
    t0 = vowel_at[0] - head_frames / fps  # song time of frame 0

    lay = _Layout(settings, consonant_seconds)
    lay.add(SILENCE, "rest", t0)
    parts = [_split(p, vowels) for p in per_syllable]
    onset0 = parts[0][0]
    lay.consonants(onset0, ["onset"] * len(onset0), vowel_at[0],
                   settings.rest_share * (vowel_at[0] - t0))
    n = len(parts)
    for i, (_, nucleus, coda) in enumerate(parts):
        lay.add(nucleus, "nucleus", vowel_at[i])
        span = end_at[i] - vowel_at[i]
        if i == n - 1:
            lay.consonants(coda, ["coda"] * len(coda), end_at[i], settings.vowel_share * span)
            break
        onset = parts[i + 1][0]
        rest = vowel_at[i + 1] - end_at[i]
        if rest >= settings.min_rest_seconds:
            lay.consonants(coda, ["coda"] * len(coda), end_at[i], settings.vowel_share * span)
            lay.add(SILENCE, "rest", end_at[i])
            lay.consonants(onset, ["onset"] * len(onset), vowel_at[i + 1],
                           settings.rest_share * rest)
        else:
            lay.consonants(coda + onset, ["coda"] * len(coda) + ["onset"] * len(onset),
                           vowel_at[i + 1], settings.vowel_share * (vowel_at[i + 1] - vowel_at[i]))
    lay.add(SILENCE, "rest", end_at[-1])
    tokens = lay.tokens

    # boundaries on the frame grid: cumulative rounding, then at least one frame each
    starts = np.array([t.start - t0 for t in tokens])
    bounds = np.append(_cumulative_frames(starts, fps), 0)
    bounds[0] = 0
    bounds[-1] = bounds[-2] + settings.tail_frames
    for k in range(len(bounds) - 2, 0, -1):  # move earlier boundaries back...
        bounds[k] = min(bounds[k], bounds[k + 1] - 1)
    for k in range(1, len(bounds)):  # ...and, if that ran into frame 0, later ones forward
        bounds[k] = max(bounds[k], bounds[k - 1] + 1)
    durations = np.diff(bounds).astype(np.int64)
    n_frames = int(bounds[-1])

    names = tuple(t.name for t in tokens)
    unknown = sorted({nm for nm in names if nm not in phoneme_ids})
    if unknown:
        raise ValueError(f"phonemes {unknown} are not in the model's phoneme set; map them "
                         f"to the bank's symbols first (engine.voice.g2p)")
    token_ids = np.array([phoneme_ids[nm] for nm in names], dtype=np.int64)
    kinds = tuple(t.kind for t in tokens)
    word_starts = [k for k, kind in enumerate(kinds) if kind in ("rest", "nucleus")]
    word_div = np.diff(np.append(word_starts, len(tokens))).astype(np.int64)

    # notes in song seconds, their frames, and the pitch curve
    nucleus_frames = [int(bounds[k]) for k, kind in enumerate(kinds) if kind == "nucleus"]
    note_start, note_pitch, note_end, note_frame = [], [], [], []
    for i, syl in enumerate(plan.syllables):
        for j, note in enumerate(syl.notes):
            note_start.append(note.start * sec)
            note_end.append(note.end * sec)
            note_pitch.append(float(note.pitch))
            note_frame.append(nucleus_frames[i] if j == 0 else
                              int(_cumulative_frames(np.array(note.start * sec - t0), fps)))
    starts_s = np.array(note_start)
    pitches = np.array(note_pitch)
    times = t0 + np.arange(n_frames) / fps
    pitch = _note_curve(times, starts_s, np.array(note_end), pitches, settings)
    vibrato = _vibrato(times, starts_s, np.array(note_end), settings)
    f0 = midi_to_hz(pitch + vibrato).astype(np.float32)

    step_index = np.clip(np.searchsorted(starts_s, t0 + bounds[:-1] / fps, side="right") - 1,
                         0, None)
    ph_midi = np.rint(pitches[step_index]).astype(np.int64)
    note_midi, note_rest, note_dur = _frame_notes(plan, note_frame, note_pitch, int(bounds[-2]),
                                                  n_frames, vowel_at, end_at, t0, fps, settings)
    return PhraseTiming(
        phonemes=names, kinds=kinds, token_ids=token_ids, durations=durations, f0=f0,
        pitch=pitch.astype(np.float32), ph_midi=ph_midi, word_div=word_div,
        note_midi=note_midi, note_rest=note_rest, note_dur=note_dur, n_frames=n_frames,
        sample_rate=sample_rate, hop_size=hop_size, first_note_seconds=vowel_at[0],
        start_offset=-head_frames / fps)


def _note_curve(times: np.ndarray, starts: np.ndarray, ends: np.ndarray, pitches: np.ndarray,
                settings: TimingSettings) -> np.ndarray:
    """MIDI per frame: each note held until the next starts, with smoothstep glides."""
    index = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, None)
    curve = pitches[index].astype(np.float64)
    half = settings.portamento_seconds / 2
    for j in range(1, len(starts)):
        if pitches[j] == pitches[j - 1] or half <= 0:
            continue
        after = (starts[j + 1] if j + 1 < len(starts) else ends[j]) - starts[j]
        w = min(half, (starts[j] - starts[j - 1]) / 2, after / 2)
        if w <= 0:
            continue
        inside = (times >= starts[j] - w) & (times < starts[j] + w)
        x = (times[inside] - (starts[j] - w)) / (2 * w)
        curve[inside] = pitches[j - 1] + (pitches[j] - pitches[j - 1]) * _smoothstep(x)
    return curve


def _vibrato(times: np.ndarray, starts: np.ndarray, ends: np.ndarray,
             settings: TimingSettings) -> np.ndarray:
    """Semitones of vibrato per frame: on each note's part after the delay."""
    out = np.zeros_like(times)
    depth = settings.vibrato_cents / 100.0
    if depth <= 0 or settings.vibrato_rate_hz <= 0:
        return out
    fade = max(settings.vibrato_fade_seconds, 1e-6)
    next_starts = np.append(starts[1:], np.inf)
    for start, end, nxt in zip(starts, ends, next_starts, strict=True):
        a, b = start + settings.vibrato_delay_seconds, min(end, nxt)
        if b - a <= 2 * fade / 3:
            continue
        inside = (times >= a) & (times < b)
        t = times[inside]
        envelope = np.minimum(1.0, np.minimum(t - a, b - t) / fade)
        out[inside] = depth * envelope * np.sin(2 * np.pi * settings.vibrato_rate_hz * (t - a))
    return out


def _frame_notes(plan: PhrasePlan, note_frame: list[int], note_pitch: list[float],
                 last_end: int, n_frames: int, vowel_at: list[float], end_at: list[float],
                 t0: float, fps: float, settings: TimingSettings,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Notes on the frame grid for a pitch model: head rest, notes, rests, tail rest."""
    segments: list[tuple[float, bool, int]] = [(note_pitch[0], True, 0)]  # (midi, rest, start)
    k = 0
    for i, syl in enumerate(plan.syllables):
        for _ in syl.notes:
            segments.append((note_pitch[k], False, note_frame[k]))
            k += 1
        if i + 1 < len(plan.syllables) and vowel_at[i + 1] - end_at[i] >= \
                settings.min_rest_seconds:
            end = int(_cumulative_frames(np.array(end_at[i] - t0), fps))
            segments.append((note_pitch[k - 1], True, end))
    segments.append((note_pitch[-1], True, last_end))
    starts = np.array([s for _, _, s in segments] + [n_frames])
    starts = np.minimum(np.maximum.accumulate(starts), n_frames)  # never backwards
    dur = np.diff(starts)
    keep = dur > 0
    midi = np.array([m for m, _, _ in segments], dtype=np.float32)[keep]
    rest = np.array([r for _, r, _ in segments], dtype=bool)[keep]
    return midi, rest, dur[keep].astype(np.int64)
