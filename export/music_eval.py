"""Pure functions for an objective evaluation of generated music (Yang & Lerch 2018).

The protocol ("On the evaluation of generative models in music", Neural Computing and
Applications, 2018): cut every song of a set into segments, compute a feature per
segment, then for each feature take the distances between all pairs of segments inside
one set (intra-set) and between the segments of two sets (inter-set), smooth each bag of
distances with a Gaussian kernel density estimate and report the overlapped area (OA) of
the reference set's intra-set density and the inter-set density. OA near 1 means the
generated segments differ from the reference as much as the reference differs from itself.

Songs here are plain data: monophonic melody and bass lines as :class:`Tone` (start and end
in beats, MIDI pitch) and drums as :class:`Hit` (beat, General MIDI drum pitch). Loading
renders, chorales or MIDI files into songs is the benchmark's job
(``benchmarks/bench_music_eval.py``); nothing here reads files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.music.encoding import PITCH_TO_DRUM

BEATS_PER_BAR = 4
STEPS_PER_BEAT = 4
STEPS_PER_BAR = BEATS_PER_BAR * STEPS_PER_BEAT
SEGMENT_BARS = 4

# Note-length classes (beats); a note takes the class nearest on a log scale.
NOTE_LENGTHS: tuple[tuple[str, float], ...] = (
    ("16th", 0.25), ("8th", 0.5), ("quarter", 1.0), ("half", 2.0), ("whole", 4.0))

# Krumhansl-Kessler key profiles (major, minor), tonic first.
_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29,
                           2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34,
                           3.17])

MAX_SET_SAMPLES = 400  # segments per set kept for the pairwise distances (bounds memory)


class Tone(NamedTuple):
    """A pitched note: start and end in beats, MIDI pitch."""

    start: float
    end: float
    pitch: int


class Hit(NamedTuple):
    """A drum stroke: onset in beats and General MIDI drum pitch."""

    beat: float
    pitch: int


@dataclass(frozen=True)
class Song:
    """One piece of a set; ``mode`` is "major" or "minor" (``None``: find it)."""

    name: str
    melody: tuple[Tone, ...]
    bass: tuple[Tone, ...] = ()
    drums: tuple[Hit, ...] = ()
    tonic: int | None = None
    mode: str | None = None

    @property
    def length_beats(self) -> float:
        ends = [t.end for t in (*self.melody, *self.bass)] + [h.beat for h in self.drums]
        return max(ends, default=0.0)


# ------------------------------------------------------------------ lines


def monophonic(tones: Iterable[Tone], keep: str = "high") -> tuple[Tone, ...]:
    """A skyline: one note per onset (the highest, or the lowest for ``keep="low"``),
    a note that starts while a kept one sounds is dropped unless it is higher (lower),
    in which case it cuts the sounding one short."""
    if keep not in ("high", "low"):
        raise ValueError(f"keep must be 'high' or 'low', got {keep!r}")
    sign = 1 if keep == "high" else -1
    by_start: dict[float, Tone] = {}
    for tone in tones:
        best = by_start.get(tone.start)
        if best is None or sign * tone.pitch > sign * best.pitch:
            by_start[tone.start] = tone
    line: list[Tone] = []
    for start in sorted(by_start):
        tone = by_start[start]
        if line and line[-1].end > start:
            if sign * line[-1].pitch >= sign * tone.pitch:
                continue
            line[-1] = line[-1]._replace(end=start)
        line.append(tone)
    return tuple(line)


def _in_window(tones: Sequence[Tone], start: float, end: float) -> list[Tone]:
    return [t for t in tones if start <= t.start < end]


# ------------------------------------------------------------------ segment features


def note_length_class(length: float) -> int:
    """Index into :data:`NOTE_LENGTHS` of the class nearest ``length`` beats (log scale)."""
    if length <= 0:
        raise ValueError(f"a note length must be positive, got {length}")
    logs = [abs(math.log2(length / ref)) for _, ref in NOTE_LENGTHS]
    return int(np.argmin(logs))


def note_length_histogram(tones: Sequence[Tone]) -> np.ndarray:
    """Share of notes in each :data:`NOTE_LENGTHS` class (all zeros without notes)."""
    hist = np.zeros(len(NOTE_LENGTHS))
    for tone in tones:
        hist[note_length_class(tone.end - tone.start)] += 1
    return hist / hist.sum() if hist.sum() else hist


def mean_inter_onset(tones: Sequence[Tone]) -> float:
    """Mean beats between successive distinct onsets; NaN with fewer than two onsets."""
    onsets = sorted({t.start for t in tones})
    if len(onsets) < 2:
        return math.nan
    return float(np.mean(np.diff(onsets)))


def segment_starts(song: Song, bars: int = SEGMENT_BARS) -> list[float]:
    """Beats where the song's whole, non-silent ``bars``-bar segments start."""
    span = bars * BEATS_PER_BAR
    whole = int(song.length_beats // span)
    sounding = {int(t.start // span) for t in (*song.melody, *song.bass)}
    return [float(k * span) for k in sorted(sounding) if k < whole]


def segment_features(song: Song, start: float, bars: int = SEGMENT_BARS) -> dict[str, object]:
    """Features of one segment: melody and bass note counts, melody mean inter-onset
    interval (beats, NaN under two onsets) and melody note-length histogram."""
    end = start + bars * BEATS_PER_BAR
    melody = _in_window(song.melody, start, end)
    bass = _in_window(song.bass, start, end)
    return {
        "melody_notes": float(len({t.start for t in melody})),
        "bass_notes": float(len({t.start for t in bass})),
        "melody_ioi": mean_inter_onset(melody),
        "melody_lengths": note_length_histogram(melody),
    }


# ------------------------------------------------------------------ song features


def interval_trigram_distinct_share(melody: Sequence[Tone]) -> float:
    """Distinct melodic-interval 3-grams / all 3-grams of a line (NaN if it has none).
    Low values mean short motifs come back; 1.0 means nothing ever repeats."""
    pitches = [t.pitch for t in sorted(melody)]
    intervals = [b - a for a, b in zip(pitches, pitches[1:], strict=False)]
    grams = [tuple(intervals[i:i + 3]) for i in range(len(intervals) - 2)]
    return len(set(grams)) / len(grams) if grams else math.nan


def find_key(tones: Iterable[Tone]) -> tuple[int, str]:
    """Krumhansl-Schmuckler key finding on the duration-weighted pitch-class profile:
    the (tonic pitch class, mode) whose key profile correlates best."""
    profile = np.zeros(12)
    for tone in tones:
        profile[tone.pitch % 12] += tone.end - tone.start
    if not profile.any():
        raise ValueError("cannot find the key of a song without notes")
    best: tuple[float, int, str] = (-2.0, 0, "major")
    for mode, reference in (("major", _MAJOR_PROFILE), ("minor", _MINOR_PROFILE)):
        for tonic in range(12):
            r = float(np.corrcoef(profile, np.roll(reference, tonic))[0, 1])
            if r > best[0]:
                best = (r, tonic, mode)
    return best[1], best[2]


def third_share(melody: Sequence[Tone], tonic: int, mode: str) -> float:
    """Share of melody notes on the third of the key (NaN without notes)."""
    if mode not in ("major", "minor"):
        raise ValueError(f"mode must be 'major' or 'minor', got {mode!r}")
    if not melody:
        return math.nan
    third = (tonic + (4 if mode == "major" else 3)) % 12
    return sum(t.pitch % 12 == third for t in melody) / len(melody)


# ------------------------------------------------------------------ drums

DrumBar = tuple[int, ...]  # 16 steps, each the bit mask of the 9 drum classes struck


def drum_bars(hits: Iterable[Hit], n_bars: int) -> list[DrumBar]:
    """Drum hits -> ``n_bars`` bars on the 16th grid (onsets rounded to the nearest step;
    pitches outside the 9-class map are ignored)."""
    grid = np.zeros(n_bars * STEPS_PER_BAR, dtype=np.int64)
    for hit in hits:
        drum = PITCH_TO_DRUM.get(hit.pitch)
        step = round(hit.beat * STEPS_PER_BEAT)
        if drum is not None and 0 <= step < len(grid):
            grid[step] |= 1 << drum
    return [tuple(int(v) for v in grid[b * STEPS_PER_BAR:(b + 1) * STEPS_PER_BAR])
            for b in range(n_bars)]


@dataclass(frozen=True)
class LibraryBar:
    """One bar of the groove library: its pattern, style and whether it is a fill."""

    pattern: DrumBar
    style: str
    is_fill: bool


def library_share(bars: Sequence[DrumBar], library: Sequence[LibraryBar]) -> float:
    """Share of non-empty drum bars that equal a library bar exactly (NaN if none)."""
    known = {entry.pattern for entry in library}
    played = [bar for bar in bars if any(bar)]
    return sum(bar in known for bar in played) / len(played) if played else math.nan


def _bits(bar: DrumBar) -> np.ndarray:
    return (np.asarray(bar, dtype=np.int64)[:, None] >> np.arange(9)) & 1


def nearest_style(bar: DrumBar, library: Sequence[LibraryBar]) -> str | None:
    """Style of the library bar nearest in Hamming distance (first on ties); ``None`` for
    an empty bar or when the nearest is a fill (fills belong to no style)."""
    if not any(bar) or not library:
        return None
    bits = _bits(bar)
    distances = [int(np.sum(bits != _bits(entry.pattern))) for entry in library]
    entry = library[int(np.argmin(distances))]
    return None if entry.is_fill else entry.style


def style_mixing_share(bars: Sequence[DrumBar], library: Sequence[LibraryBar],
                       segment_bars: int = SEGMENT_BARS) -> float:
    """Share of whole ``segment_bars`` segments whose styled bars (nearest library groove,
    fills and empty bars left out) name more than one style; only segments with two or
    more styled bars count (NaN if none do)."""
    mixed = counted = 0
    for s in range(0, len(bars) - segment_bars + 1, segment_bars):
        styles = [nearest_style(bar, library) for bar in bars[s:s + segment_bars]]
        named = [style for style in styles if style is not None]
        if len(named) >= 2:
            counted += 1
            mixed += len(set(named)) > 1
    return mixed / counted if counted else math.nan


# ------------------------------------------------------------------ distances and OA


def _as_rows(values: Sequence[object]) -> np.ndarray:
    rows = np.array([np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in values])
    return rows[~np.isnan(rows).any(axis=1)] if len(rows) else rows.reshape(0, 1)


def _subsample(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= MAX_SET_SAMPLES:
        return rows
    return rows[rng.choice(len(rows), MAX_SET_SAMPLES, replace=False)]


def intra_set_distances(values: Sequence[object], rng: np.random.Generator | None = None,
                        ) -> np.ndarray:
    """Euclidean distances between all pairs of one set's feature values (NaN dropped)."""
    rows = _subsample(_as_rows(values), rng or np.random.default_rng(0))
    i, j = np.triu_indices(len(rows), k=1)
    return np.linalg.norm(rows[i] - rows[j], axis=1)


def inter_set_distances(a: Sequence[object], b: Sequence[object],
                        rng: np.random.Generator | None = None) -> np.ndarray:
    """Euclidean distances between every value of set ``a`` and every value of set ``b``."""
    rng = rng or np.random.default_rng(0)
    rows_a, rows_b = _subsample(_as_rows(a), rng), _subsample(_as_rows(b), rng)
    return np.linalg.norm(rows_a[:, None, :] - rows_b[None, :, :], axis=2).ravel()


def _bandwidth(samples: np.ndarray) -> float:
    """Scott's rule; a tiny width for a set of identical values, so it stays a spike."""
    std = float(np.std(samples, ddof=1)) if len(samples) > 1 else 0.0
    width = std * len(samples) ** (-1 / 5)
    return width if width > 1e-9 else 1e-3 * max(1.0, float(np.max(np.abs(samples))))


def kde(samples: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density of ``samples`` evaluated on ``grid``."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size == 0:
        raise ValueError("a density needs at least one sample")
    h = _bandwidth(samples)
    density = np.zeros_like(grid)
    for chunk in np.array_split(samples, max(1, len(samples) // 2048)):
        z = (grid[:, None] - chunk[None, :]) / h
        density += np.exp(-0.5 * z * z).sum(axis=1)
    return density / (len(samples) * h * math.sqrt(2 * math.pi))


def overlapped_area(p: np.ndarray, q: np.ndarray, points: int = 2000) -> float:
    """Area under min(KDE(p), KDE(q)): 1 for the same distribution, 0 for disjoint ones."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.size == 0 or q.size == 0:
        return math.nan
    pad = 4 * max(_bandwidth(p), _bandwidth(q))
    lo = min(p.min(), q.min()) - pad
    hi = max(p.max(), q.max()) + pad
    grid = np.linspace(lo, hi, points)
    overlap = np.minimum(kde(p, grid), kde(q, grid))
    return float(min(1.0, np.sum(overlap) * (grid[1] - grid[0])))


def feature_oa(generated: Sequence[object], reference: Sequence[object],
               rng: np.random.Generator | None = None) -> float:
    """OA of the reference's intra-set distances and the generated-vs-reference distances."""
    rng = rng or np.random.default_rng(0)
    return overlapped_area(intra_set_distances(reference, rng),
                           inter_set_distances(generated, reference, rng))
