"""Arranging decoded parts: key, transposition, scale snapping, chords and dynamics.

Everything works on :class:`~engine.music.notes.Note` lists with absolute 16th steps (use
:func:`~engine.music.notes.join_bars` first for bar-relative notes). numpy only.

- :func:`detect_key` finds the key of some notes (Krumhansl-Schmuckler: correlation of the
  duration-weighted pitch-class histogram with the Krumhansl-Kessler major / minor
  profiles, all 24 rotations).
- :func:`transpose_to_key` moves the pitched parts from one key to another by the smallest
  interval (-6..+5 semitones) and then puts each part in its register by whole-octave
  shifts of the phrase.
- :func:`snap_to_scale` moves out-of-scale notes onto the scale, each with probability
  ``strength``, and then as many more as needed to reach an in-key ratio goal (0.9 by
  default), longest notes first, so short chromatic passing notes survive where they can.
- :func:`choose_chords` / :func:`derive_chords` harmonise melody + bass with diatonic triads
  (or sevenths), one or two a bar, voiced in C3..C5 with minimal voice movement.
- :func:`apply_velocity` gives beat accents; :func:`humanize` adds seeded velocity jitter
  and a per-note timing offset in seconds. The grid :class:`Note` stays the contract:
  timing offsets are applied at render / send time, never written into the steps.

Keys are ``(tonic_pc, mode)`` tuples: ``tonic_pc`` 0..11 (0 = C), ``mode`` ``"major"`` or
``"minor"`` (natural minor / aeolian for the scale).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engine.music.notes import DRUMS, STEPS_PER_BAR, STEPS_PER_QUARTER, Note, fold_into

Key = tuple[int, str]

MAJOR = "major"
MINOR = "minor"
MODES = (MAJOR, MINOR)

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

SCALES: dict[str, tuple[int, ...]] = {
    MAJOR: (0, 2, 4, 5, 7, 9, 11),
    MINOR: (0, 2, 3, 5, 7, 8, 10),
}

# Krumhansl & Kessler (1982) probe-tone profiles, index 0 = tonic.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

DEFAULT_REGISTERS: dict[str, tuple[int, int]] = {
    "melody": (60, 84),  # C4..C6
    "bass": (28, 48),  # E1..C3
}
"""Inclusive MIDI pitch ranges :func:`transpose_to_key` keeps each part in."""

CHORD_RANGE = (48, 72)
"""C3..C5, where :func:`derive_chords` voices its chords."""


def _check_key(tonic: int, mode: str) -> tuple[int, str]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return int(tonic) % 12, mode


def key_name(tonic: int, mode: str) -> str:
    """``(9, "minor")`` -> ``"A minor"``."""
    tonic, mode = _check_key(tonic, mode)
    return f"{NOTE_NAMES[tonic]} {mode}"


def scale_pitch_classes(tonic: int, mode: str) -> frozenset[int]:
    """The seven pitch classes of the (natural) scale."""
    tonic, mode = _check_key(tonic, mode)
    return frozenset((tonic + step) % 12 for step in SCALES[mode])


# --------------------------------------------------------------------------- key


def pitch_class_histogram(notes: Iterable[Note]) -> np.ndarray:
    """Duration-weighted pitch-class histogram, ``(12,)`` float64 (steps per class)."""
    hist = np.zeros(12)
    for note in notes:
        hist[note.pitch % 12] += note.duration
    return hist


def key_scores(notes: Iterable[Note]) -> np.ndarray:
    """``(2, 12)`` Pearson correlations: row 0 major, row 1 minor, column = tonic pc.

    All zeros when there are no notes or the histogram is flat (no key information).
    """
    hist = pitch_class_histogram(notes)
    scores = np.zeros((2, 12))
    if hist.sum() <= 0 or np.allclose(hist, hist[0]):
        return scores
    h = hist - hist.mean()
    for row, profile in enumerate((MAJOR_PROFILE, MINOR_PROFILE)):
        for tonic in range(12):
            p = np.roll(profile, tonic)
            p = p - p.mean()
            scores[row, tonic] = float(h @ p / np.sqrt((h @ h) * (p @ p)))
    return scores


def detect_key(notes: Iterable[Note]) -> Key:
    """The best-correlated key of ``notes`` (pass every pitched part; leave drums out).

    Krumhansl-Schmuckler: the duration-weighted pitch-class histogram is correlated with
    the Krumhansl-Kessler major and minor profiles rotated to each of the 12 tonics; the
    highest correlation wins (ties: major before minor, lower tonic first). No notes give
    ``(0, "major")``.
    """
    scores = key_scores(notes)
    if not scores.any():
        return 0, MAJOR
    row, tonic = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(tonic), MODES[int(row)]


# --------------------------------------------------------------------------- transposition


def transposition_interval(from_key: Key, to_key: Key) -> int:
    """Semitones (-6..+5) that carry ``from_key``'s scale onto ``to_key``'s.

    Same mode: the tonics' difference. Different modes: the difference between the
    relative major tonics (a minor key's relative major is 3 semitones up), so that the
    pitch-class set of the scale carries over and the music stays in key (C major into
    A minor is 0, C major into E minor is +7 -> -5). The parallel-mode change (turning
    major thirds minor) is a re-composition, not a transposition, and is not done here.
    """
    f_tonic, f_mode = _check_key(*from_key)
    t_tonic, t_mode = _check_key(*to_key)
    if f_mode != t_mode:
        f_tonic = (f_tonic + (3 if f_mode == MINOR else 0)) % 12
        t_tonic = (t_tonic + (3 if t_mode == MINOR else 0)) % 12
    return (t_tonic - f_tonic + 6) % 12 - 6


def fit_register(notes: Sequence[Note], low: int, high: int, *, fold: bool = True) -> list[Note]:
    """Shift a whole phrase by octaves into ``low..high`` (inclusive), intervals intact.

    The octave shift that leaves the fewest notes (weighted by duration) outside the range
    wins; ties go to the one whose mean pitch is nearest the middle of the range. With
    ``fold`` the few notes still outside (a phrase wider than the range) are then moved by
    single octaves into it, which breaks those notes' intervals only.
    """
    if high - low < 11:
        raise ValueError(f"a register must span at least an octave, got {low}..{high}")
    if not notes:
        return []
    pitches = np.array([n.pitch for n in notes])
    weights = np.array([n.duration for n in notes], dtype=float)
    centre = (low + high) / 2
    best: tuple[float, float, int] | None = None
    for octave in range(-10, 11):
        shifted = pitches + 12 * octave
        if shifted.min() < 0 or shifted.max() > 127:
            continue
        outside = float(weights[(shifted < low) | (shifted > high)].sum())
        distance = abs(float(np.average(shifted, weights=weights)) - centre)
        candidate = (outside, distance, octave)
        if best is None or candidate < best:
            best = candidate
    shift = 12 * (best[2] if best is not None else 0)
    out = []
    for note in notes:
        pitch = note.pitch + shift
        if fold:
            pitch = fold_into(pitch, low, high)
        out.append(Note(note.start, pitch, note.end, note.velocity))
    return out


def transpose_to_key(
    parts: Mapping[str, Sequence[Note]],
    from_key: Key,
    to_key: Key,
    *,
    registers: Mapping[str, tuple[int, int]] | None = None,
    unpitched: Iterable[str] = (DRUMS,),
    fold: bool = True,
) -> dict[str, list[Note]]:
    """Move every pitched part from ``from_key`` to ``to_key``.

    Each pitched part is shifted by :func:`transposition_interval` (the smallest move,
    -6..+5 semitones), then, if it has a register in ``registers`` (default
    :data:`DEFAULT_REGISTERS`: melody C4..C6, bass E1..C3), moved as a whole phrase by
    octaves into it (see :func:`fit_register`; ``fold`` folds what still sticks out).
    Parts named in ``unpitched`` (drums) are copied unchanged. Returns new lists.
    """
    shift = transposition_interval(from_key, to_key)
    regs = DEFAULT_REGISTERS if registers is None else registers
    skip = set(unpitched)
    out: dict[str, list[Note]] = {}
    for name, notes in parts.items():
        if name in skip:
            out[name] = list(notes)
            continue
        moved = []
        for note in notes:
            pitch = fold_into(note.pitch + shift, 0, 127)
            moved.append(Note(note.start, pitch, note.end, note.velocity))
        if name in regs:
            low, high = regs[name]
            moved = fit_register(moved, low, high, fold=fold)
        out[name] = moved
    return out


# --------------------------------------------------------------------------- scale snapping


def in_key_ratio(notes: Sequence[Note], tonic: int, mode: str, *,
                 weighted: bool = False) -> float:
    """Fraction of notes (or, ``weighted``, of note duration) whose pitch is in the scale.

    1.0 for no notes.
    """
    scale = scale_pitch_classes(tonic, mode)
    total = inside = 0.0
    for note in notes:
        w = note.duration if weighted else 1.0
        total += w
        inside += w * (note.pitch % 12 in scale)
    return inside / total if total else 1.0


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _snap_pitch(pitch: int, scale: frozenset[int], prev: int | None, nxt: int | None) -> int:
    """Nearest scale pitch. In a diatonic scale an out-of-scale note always sits between two
    scale tones a semitone away; pick the one that does not repeat a neighbour, else the
    one continuing the motion from the previous note, else the lower one."""
    down = next(pitch - d for d in range(1, 12) if (pitch - d) % 12 in scale)
    up = next(pitch + d for d in range(1, 12) if (pitch + d) % 12 in scale)
    if pitch - down != up - pitch:
        return down if pitch - down < up - pitch else up
    neighbours = {p for p in (prev, nxt) if p is not None}
    if (down in neighbours) != (up in neighbours):
        return up if down in neighbours else down
    if prev is not None and prev < pitch:
        return up if up <= 127 else down
    return down if down >= 0 else up


def snap_to_scale(
    notes: Sequence[Note],
    tonic: int,
    mode: str,
    strength: float = 0.5,
    rng: np.random.Generator | int | None = 0,
    *,
    min_ratio: float | None = 0.9,
) -> list[Note]:
    """Move out-of-scale notes of one melodic part (melody or bass) onto the scale.

    Two passes, both deterministic for a given ``rng`` (a Generator or a seed):

    1. each out-of-scale note moves to the nearest scale tone with probability
       ``strength`` (0 = keep all, 1 = snap all); one random draw per out-of-scale note,
       in time order;
    2. if the in-key ratio (:func:`in_key_ratio`, by note count) is still below
       ``min_ratio``, more out-of-scale notes are snapped, longest first (then earliest),
       until it is reached. ``min_ratio=None`` skips this pass.

    So the in-key goal is always met while the shortest chromatic notes (passing and
    neighbour tones, the colour of a line) are the ones kept. The nearest scale tone is a
    semitone away; of the two, the one that does not repeat the previous or next note is
    taken (no flattening into repeated notes), else the one continuing the melodic
    direction. Scales are natural major / natural minor. Returns notes in time order.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in 0..1, got {strength}")
    if min_ratio is not None and not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be in 0..1 or None, got {min_ratio}")
    scale = scale_pitch_classes(tonic, mode)
    ordered = sorted(notes)
    generator = _rng(rng)
    outside = [i for i, n in enumerate(ordered) if n.pitch % 12 not in scale]
    snap: set[int] = set()
    for i in outside:
        if generator.random() < strength:
            snap.add(i)
    if min_ratio is not None and ordered:
        needed = int(np.ceil(min_ratio * len(ordered) - 1e-9)) - (len(ordered) - len(outside))
        rest = sorted((i for i in outside if i not in snap),
                      key=lambda i: (-ordered[i].duration, ordered[i].start, i))
        snap.update(rest[:max(0, needed - len(snap))])
    out = []
    for i, note in enumerate(ordered):
        if i in snap:
            prev = ordered[i - 1].pitch if i > 0 else None
            nxt = ordered[i + 1].pitch if i + 1 < len(ordered) else None
            note = Note(note.start, _snap_pitch(note.pitch, scale, prev, nxt), note.end,
                        note.velocity)
        out.append(note)
    return out


# --------------------------------------------------------------------------- chords


@dataclass(frozen=True, slots=True)
class Chord:
    """A chord: root pitch class, its pitch classes (root first) and a name like ``Am7``."""

    root: int
    pitch_classes: tuple[int, ...]
    name: str
    degree: int  # 0-based scale degree of the root (-1 for the borrowed major V in minor)
    seventh: bool = False


@dataclass(frozen=True, slots=True)
class ChordSpan:
    """A chord sounding from ``start`` to ``end`` (absolute steps, end exclusive)."""

    start: int
    end: int
    chord: Chord


_QUALITIES = {
    (4, 7): "", (3, 7): "m", (3, 6): "dim", (4, 8): "aug",
    (4, 7, 11): "maj7", (4, 7, 10): "7", (3, 7, 10): "m7", (3, 6, 10): "m7b5",
    (3, 6, 9): "dim7", (3, 7, 11): "mMaj7",
}


def _make_chord(pcs: tuple[int, ...], degree: int) -> Chord:
    root = pcs[0]
    intervals = tuple((pc - root) % 12 for pc in pcs[1:])
    name = NOTE_NAMES[root] + _QUALITIES.get(intervals, "?")
    return Chord(root, pcs, name, degree, seventh=len(pcs) == 4)


def diatonic_chords(tonic: int, mode: str, *, sevenths: bool = False,
                    major_dominant_in_minor: bool = True) -> list[Chord]:
    """The seven diatonic triads of the key (plus, with ``sevenths``, the seven diatonic
    seventh chords; in minor, with ``major_dominant_in_minor``, the harmonic-minor V and V7
    as well)."""
    tonic, mode = _check_key(tonic, mode)
    scale = [(tonic + s) % 12 for s in SCALES[mode]]
    sizes = (3, 4) if sevenths else (3,)
    chords = []
    for size in sizes:
        for degree in range(7):
            pcs = tuple(scale[(degree + 2 * k) % 7] for k in range(size))
            chords.append(_make_chord(pcs, degree))
    if mode == MINOR and major_dominant_in_minor:
        fifth = (tonic + 7) % 12
        for size in sizes:
            pcs = (fifth, (fifth + 4) % 12, (fifth + 7) % 12, (fifth + 10) % 12)[:size]
            chords.append(_make_chord(pcs, -1))
    return chords


def _span_histogram(notes: Sequence[Note], start: int, end: int) -> np.ndarray:
    hist = np.zeros(12)
    for note in notes:
        overlap = min(note.end, end) - max(note.start, start)
        if overlap > 0:
            hist[note.pitch % 12] += overlap
    return hist


def _bass_root(notes: Sequence[Note], start: int, end: int) -> int | None:
    """The pitch class of the bass note sounding at the span's start, else the first one
    struck in the span, else None."""
    sounding = [n for n in notes if n.start <= start < n.end]
    if sounding:
        return min(sounding, key=lambda n: n.pitch).pitch % 12
    inside = [n for n in notes if start < n.start < end]
    if inside:
        first = min(n.start for n in inside)
        return min((n for n in inside if n.start == first), key=lambda n: n.pitch).pitch % 12
    return None


# Score weights (see choose_chords).
_W_BASS_ROOT = 3.0
_W_BASS = 1.0
_W_MELODY = 1.0
_W_CLASH = 0.6
_W_STAY = 0.1
_FUNCTION_PRIOR = {0: 0.15, 3: 0.1, 4: 0.1, -1: 0.1}  # I, IV, V: a nudge for ties
_DIM_PENALTY = 0.25
_SEVENTH_PENALTY = 0.15
_BORROWED_PENALTY = 0.05


def _score(chord: Chord, bass_root: int | None, bass_hist: np.ndarray, mel_hist: np.ndarray,
           previous: Chord | None) -> float:
    tones = np.zeros(12, dtype=bool)
    tones[list(chord.pitch_classes)] = True
    score = 0.0
    if bass_root is not None:
        score += _W_BASS_ROOT * (bass_root == chord.root)
        score += 0.5 * _W_BASS_ROOT * (bass_root in chord.pitch_classes[1:])
    if bass_hist.sum() > 0:
        score += _W_BASS * float(bass_hist[tones].sum() / bass_hist.sum())
    if mel_hist.sum() > 0:
        covered = float(mel_hist[tones].sum() / mel_hist.sum())
        score += _W_MELODY * covered - _W_CLASH * (1.0 - covered)
    score += _FUNCTION_PRIOR.get(chord.degree, 0.0)
    if chord.name.endswith(("dim", "m7b5")):
        score -= _DIM_PENALTY
    if chord.seventh:
        score -= _SEVENTH_PENALTY
    if chord.degree == -1:
        score -= _BORROWED_PENALTY
    if previous is not None and chord == previous:
        score += _W_STAY
    return score


def _n_steps(parts: Iterable[Sequence[Note]], bar_steps: int) -> int:
    last = max((n.end for notes in parts for n in notes), default=0)
    return -(-last // bar_steps) * bar_steps


def choose_chords(
    melody: Sequence[Note],
    bass: Sequence[Note],
    tonic: int,
    mode: str,
    bar_steps: int = STEPS_PER_BAR,
    *,
    n_bars: int | None = None,
    sevenths: bool = False,
    chords_per_bar: int = 2,
) -> list[ChordSpan]:
    """Pick a diatonic chord for each half bar (``chords_per_bar`` = 1 or 2) and merge
    equal neighbours, so a bar gets one or two chords.

    A chord's score for a span: a large bonus when its root is the bass note sounding at
    the span's start (half that when the bass note is another chord tone), plus the share
    of the bass's and of the melody's duration-weighted pitch classes it covers, minus a
    penalty for the melody's share outside it; small nudges favour I / IV / V, triads over
    sevenths and diatonic over the borrowed major V, disfavour diminished chords, and keep
    the previous chord on ties. A span with no notes keeps the previous chord (the tonic
    at the start). ``n_bars`` defaults to the bars the notes reach (at least one).
    """
    if chords_per_bar not in (1, 2):
        raise ValueError(f"chords_per_bar must be 1 or 2, got {chords_per_bar}")
    if bar_steps % chords_per_bar:
        raise ValueError(f"bar_steps {bar_steps} does not split into {chords_per_bar} spans")
    tonic, mode = _check_key(tonic, mode)
    total = (n_bars * bar_steps if n_bars is not None
             else max(_n_steps((melody, bass), bar_steps), bar_steps))
    span = bar_steps // chords_per_bar
    candidates = diatonic_chords(tonic, mode, sevenths=sevenths)
    tonic_chord = candidates[0]
    spans: list[ChordSpan] = []
    previous: Chord | None = None
    for start in range(0, total, span):
        end = start + span
        bass_hist = _span_histogram(bass, start, end)
        mel_hist = _span_histogram(melody, start, end)
        root = _bass_root(bass, start, end)
        if root is None and not mel_hist.any():
            chord = previous or tonic_chord
        else:
            chord = max(candidates,
                        key=lambda c: _score(c, root, bass_hist, mel_hist, previous))
        if spans and spans[-1].chord == chord and start % bar_steps != 0:
            spans[-1] = ChordSpan(spans[-1].start, end, chord)  # merge within the bar
        else:
            spans.append(ChordSpan(start, end, chord))
        previous = chord
    return spans


def voicings(chord: Chord, low: int = CHORD_RANGE[0], high: int = CHORD_RANGE[1], *,
             max_span: int = 12) -> list[tuple[int, ...]]:
    """Every voicing of ``chord`` in ``low..high``: one pitch per chord tone, no doublings,
    all within ``max_span`` semitones (close / near-close position). Sorted tuples."""
    options = [[p for p in range(low, high + 1) if p % 12 == pc] for pc in chord.pitch_classes]
    out = set()
    for combo in itertools.product(*options):
        if max(combo) - min(combo) <= max_span:
            out.add(tuple(sorted(combo)))
    return sorted(out)


def voice_movement(a: Sequence[int], b: Sequence[int]) -> int:
    """Semitones the voices move from voicing ``a`` to ``b`` (sorted voices paired in
    order; with different sizes each note is paired with the nearest of the other)."""
    a, b = sorted(a), sorted(b)
    if len(a) == len(b):
        return int(sum(abs(x - y) for x, y in zip(a, b, strict=True)))
    return int(sum(min(abs(x - y) for y in b) for x in a)
               + sum(min(abs(y - x) for x in a) for y in b)) // 2


def voice_lead(chords: Sequence[Chord], low: int = CHORD_RANGE[0],
               high: int = CHORD_RANGE[1]) -> list[tuple[int, ...]]:
    """Voicings for a chord sequence with minimal total voice movement.

    Dynamic programming over all :func:`voicings` of each chord: cost = movement from the
    previous voicing plus a small pull of the voicing's centre towards the middle of the
    range (so the line does not drift to an edge). The first chord pays only that pull.
    """
    if not chords:
        return []
    centre = (low + high) / 2
    options = []
    for chord in chords:
        opts = voicings(chord, low, high)
        if not opts:
            raise ValueError(f"chord {chord.name} has no voicing in {low}..{high}")
        options.append(opts)

    def pull(v: tuple[int, ...]) -> float:
        return 0.25 * abs(sum(v) / len(v) - centre)

    cost = [pull(v) for v in options[0]]
    back: list[list[int]] = []
    for i in range(1, len(options)):
        new_cost, pointers = [], []
        for v in options[i]:
            best = min(range(len(options[i - 1])),
                       key=lambda j, v=v: cost[j] + voice_movement(options[i - 1][j], v))
            new_cost.append(cost[best] + voice_movement(options[i - 1][best], v) + pull(v))
            pointers.append(best)
        cost = new_cost
        back.append(pointers)
    index = int(np.argmin(cost))
    path = [index]
    for pointers in reversed(back):
        index = pointers[index]
        path.append(index)
    path.reverse()
    return [options[i][j] for i, j in enumerate(path)]


def derive_chords(
    melody: Sequence[Note],
    bass: Sequence[Note],
    tonic: int,
    mode: str,
    bar_steps: int = STEPS_PER_BAR,
    *,
    n_bars: int | None = None,
    sevenths: bool = False,
    chords_per_bar: int = 2,
    velocity: int = 64,
    voice_range: tuple[int, int] = CHORD_RANGE,
) -> list[Note]:
    """A chord / pad part for ``melody`` + ``bass`` (absolute steps), in absolute steps.

    Chords from :func:`choose_chords` (one or two a bar), voiced by :func:`voice_lead` in
    ``voice_range`` (C3..C5) with minimal movement from chord to chord; every chord tone is
    held over the whole chord span (struck again at each chord change).
    """
    spans = choose_chords(melody, bass, tonic, mode, bar_steps, n_bars=n_bars,
                          sevenths=sevenths, chords_per_bar=chords_per_bar)
    voiced = voice_lead([s.chord for s in spans], *voice_range)
    return sorted(Note(s.start, pitch, s.end, velocity)
                  for s, voicing in zip(spans, voiced, strict=True) for pitch in voicing)


# --------------------------------------------------------------------------- dynamics


def default_accents(bar_steps: int = STEPS_PER_BAR) -> tuple[int, ...]:
    """Velocity offsets per step of a 4/4 bar of 16ths: downbeat +12, beat 3 +6, beats 2 and
    4 +2, eighth offbeats -4, sixteenth offbeats -8."""
    if bar_steps % STEPS_PER_QUARTER:
        raise ValueError(f"bar_steps must be whole beats, got {bar_steps}")
    accents = []
    half = bar_steps // 2
    for step in range(bar_steps):
        if step == 0:
            accents.append(12)
        elif step == half and half % STEPS_PER_QUARTER == 0:
            accents.append(6)
        elif step % STEPS_PER_QUARTER == 0:
            accents.append(2)
        elif step % 2 == 0:
            accents.append(-4)
        else:
            accents.append(-8)
    return tuple(accents)


ACCENTS_4_4 = default_accents()


def apply_velocity(notes: Iterable[Note], base: int | None = 90,
                   accents: Sequence[int] = ACCENTS_4_4) -> list[Note]:
    """Velocities from beat accents: ``base`` (or, when None, each note's own velocity)
    plus ``accents[start % len(accents)]``, clipped to 1..127. Order kept."""
    if not accents:
        raise ValueError("accents must not be empty")
    out = []
    for note in notes:
        v = (note.velocity if base is None else base) + int(accents[note.start % len(accents)])
        out.append(Note(note.start, note.pitch, note.end, int(np.clip(v, 1, 127))))
    return out


def humanize(
    notes: Iterable[Note],
    timing_ms: float = 10.0,
    velocity: int = 6,
    bpm: float = 120.0,
    rng: np.random.Generator | int | None = 0,
    *,
    max_step_fraction: float = 0.25,
) -> list[tuple[Note, float]]:
    """Seeded human feel: ``(note with jittered velocity, timing offset in seconds)``.

    Per note, in input order, two normal draws: the timing offset has sigma
    ``timing_ms / 2`` and is clipped to +-``timing_ms`` and to +-``max_step_fraction`` of a
    16th step at ``bpm`` (so notes never swap order); the velocity change has sigma
    ``velocity / 2``, clipped to +-``velocity``, rounded, and the result to 1..127. The
    offset moves the whole note (on and off) at render / send time; the grid note is
    unchanged apart from its velocity. Same notes + same seed -> the same result.
    """
    if timing_ms < 0 or velocity < 0 or bpm <= 0:
        raise ValueError("timing_ms and velocity must be >= 0 and bpm > 0")
    generator = _rng(rng)
    step_s = 60.0 / bpm / STEPS_PER_QUARTER
    bound = min(timing_ms / 1000.0, max_step_fraction * step_s)
    out = []
    for note in notes:
        t, v = generator.standard_normal(2)
        offset = float(np.clip(t * timing_ms / 2000.0, -bound, bound))
        dv = int(round(float(np.clip(v * velocity / 2.0, -velocity, velocity))))
        vel = int(np.clip(note.velocity + dv, 1, 127))
        out.append((Note(note.start, note.pitch, note.end, vel), offset))
    return out
