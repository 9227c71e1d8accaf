"""The one tempo map: beats <-> monotonic nanoseconds, for the live show, render and replay.

Time is :func:`time.monotonic_ns` (the MIDI sender's deadlines are in it). Beat 0, the
first beat of bar 0, falls at ``start_ns``; there are 4 beats to a bar and 4 sixteenth
steps to a beat (the 16-step grid of :mod:`engine.music.notes`).

Tempo is piecewise constant. Each change lands on a bar line, and only on a bar that has
not started yet, so the time of everything already under way never moves: a bar's start
depends only on the tempi of the bars before it (and on any wait put before it by
:meth:`Clock.realign`, which an external timeline such as Ableton Link asks for when it is
too far off to be slewed). Negative beats (a count-in) extend the first tempo backwards.

One change moves what is already stamped: :meth:`Clock.retime`, for an external timeline
whose tempo another app changed in the middle of a bar (Ableton Link). From a 16th step
still ahead, the beats run evenly to a given bar line at a given time, and from there at
the given tempi. It returns a :class:`Warp`, old time -> new time (the same beat on the new
map), which whoever holds events stamped but not yet sent applies to them (the MIDI sender,
the built-in synth's feed): nothing before the step moves, and everything after it keeps
its order, so no note-off is lost, doubled or put before its note-on.

Thread safety: the tempo map is an immutable tuple that :meth:`Clock.set_tempo` replaces
in one assignment, so the MIDI sender thread reads it without a lock while the show loop
changes tempo. Callers that have already turned beats into deadlines keep those deadlines:
change the tempo of a bar before scheduling its notes (the conductor works a bar ahead).

Everything time-dependent takes the clock's ``now_ns`` (a parameter), so tests pass a fake
one. :meth:`Clock.offline` is the tempo map of ``encore render`` and ``encore replay``:
beat 0 at 0 ns, time not yet begun (every bar's tempo can still be set), and
:meth:`Clock.seconds_at_bar` for their audio. Audio frames are not this clock's: the live
audio engine maps ns to its own output frames (:meth:`AudioEngine.ns_to_frame`).
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

NS_PER_S = 1_000_000_000
BEATS_PER_BAR = 4
STEPS_PER_BEAT = 4
STEPS_PER_BAR = BEATS_PER_BAR * STEPS_PER_BEAT
MIN_BPM = 1.0
MAX_BPM = 999.0


@dataclass(frozen=True, slots=True)
class TempoSegment:
    """From bar ``bar`` (beat ``bar * 4``, at ``start_ns``) on, ``bpm`` beats a minute.
    ``step``: 16th steps into the bar where it begins (0, a bar line, but for a retime)."""

    bar: int
    bpm: float
    start_ns: int
    step: int = 0

    @property
    def beat(self) -> float:
        if self.step:
            return self.bar * BEATS_PER_BAR + self.step / STEPS_PER_BEAT
        return self.bar * BEATS_PER_BAR

    @property
    def position(self) -> tuple[int, int]:
        return (self.bar, self.step)

    @property
    def ns_per_beat(self) -> float:
        return 60 * NS_PER_S / self.bpm


def _check_bpm(bpm: float) -> float:
    if isinstance(bpm, bool) or not isinstance(bpm, (int, float)):
        raise TypeError(f"bpm must be a number, got {type(bpm).__name__}")
    if not (math.isfinite(bpm) and MIN_BPM <= bpm <= MAX_BPM):
        raise ValueError(f"bpm must be between {MIN_BPM:g} and {MAX_BPM:g}, got {bpm}")
    return float(bpm)


def _check_int(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    return value


class Clock:
    """Beats, bars and 16th steps <-> ``time.monotonic_ns``.

    ``start_ns`` is when beat 0 sounds (default: now).
    """

    def __init__(self, bpm: float, *, start_ns: int | None = None,
                 now_ns: Callable[[], int] = time.monotonic_ns) -> None:
        if not callable(now_ns):
            raise TypeError(f"now_ns must be a callable returning ns, got {now_ns!r}")
        self.now_ns = now_ns
        start = now_ns() if start_ns is None else _check_int(start_ns, "start_ns")
        self.start_ns = start
        # Replaced whole, never mutated: readers on other threads need no lock.
        first = TempoSegment(0, _check_bpm(bpm), start)
        self._map: tuple[tuple[TempoSegment, ...], tuple[int, ...]] = ((first,), (0,))
        self._waits: dict[int, int] = {}  # bar -> ns of silence before it (realign)

    @classmethod
    def offline(cls, bpm: float) -> Clock:
        """The tempo map of a render or replay: beat 0 at 0 ns, and time that has not
        begun, so a tempo can be set from any bar (bar 0 included)."""
        return cls(bpm, start_ns=0, now_ns=_before_the_start)

    # -- the tempo map -------------------------------------------------------------------

    @property
    def tempo_map(self) -> tuple[TempoSegment, ...]:
        return self._map[0]

    @property
    def bpm(self) -> float:
        """The tempo now."""
        return self.bpm_at(self.now_beat())

    def bpm_at(self, beat: float) -> float:
        return self._segment_at_beat(beat).bpm

    def set_tempo(self, bpm: float, at_bar: int) -> None:
        """Play ``bpm`` from bar ``at_bar`` on (until a later change, which is kept).

        Refuses a bar that has already started: a change lands on a bar line still ahead.
        """
        bpm = _check_bpm(bpm)
        at_bar = _check_int(at_bar, "at_bar")
        if at_bar < 0:
            raise ValueError(f"at_bar must be >= 0, got {at_bar}")
        now = self.now_ns()
        started = self.bar_start_ns(at_bar)
        if started <= now:
            raise ValueError(
                f"bar {at_bar} started {(now - started) / NS_PER_S:.3f} s ago; tempo "
                f"changes land on a bar line still ahead: use bar {self.next_bar(now)} or later")
        self._rebuild(at_bar * BEATS_PER_BAR, {(at_bar, 0): bpm}, self._waits)

    def realign(self, at_bar: int, start_ns: int, bpm: float) -> None:
        """Start bar ``at_bar`` at ``start_ns`` instead, at ``bpm``: a wait (silence) of
        ``start_ns`` minus where it would start, never less than none, so nothing already
        stamped overlaps it. For an external timeline that is too far off to be slewed.
        Refuses a bar that has already started, like :meth:`set_tempo`."""
        at_bar = _check_int(at_bar, "at_bar")
        start_ns = _check_int(start_ns, "start_ns")
        if at_bar == 0:
            raise ValueError("bar 0 starts at start_ns: make the clock there instead")
        self.set_tempo(bpm, at_bar)
        natural = self.bar_start_ns(at_bar) - self._waits.get(at_bar, 0)
        if start_ns < natural:
            raise ValueError(f"bar {at_bar} would start {(natural - start_ns) / 1e6:.3f} ms "
                             "early, over the bar before it: realign only waits")
        waits = dict(self._waits)
        waits[at_bar] = start_ns - natural
        self._rebuild(at_bar * BEATS_PER_BAR, {}, waits)

    def retime(self, from_ns: int, bar: int, bar_ns: int, tempi: Mapping[int, float]) -> Warp:
        """Bend what has not played yet: from the first 16th step at or after ``from_ns``
        (still ahead) the beats run evenly so that bar ``bar`` starts at ``bar_ns``, and
        from bar ``bar`` on ``tempi`` (bar -> bpm; it must hold ``bar``) replace every
        change and wait that was planned after that step. Returns the :class:`Warp` that
        moves a time stamped on the map before to the same beat on the new one: apply it
        to every event stamped from the old map and not yet sent."""
        from_ns = _check_int(from_ns, "from_ns")
        bar = _check_int(bar, "bar")
        bar_ns = _check_int(bar_ns, "bar_ns")
        tempi = {_check_int(b, "a bar of tempi"): _check_bpm(bpm) for b, bpm in tempi.items()}
        if bar not in tempi or min(tempi) < bar:
            raise ValueError(f"tempi must start at bar {bar}, got bars {sorted(tempi)}")
        if from_ns <= self.now_ns():
            raise ValueError("a retime starts at a time still ahead")
        pivot_beat = self.step_at_or_after(from_ns)
        pivot_bar, pivot_step = divmod(round(pivot_beat * STEPS_PER_BEAT), STEPS_PER_BAR)
        pivot_ns = self.beat_to_ns(pivot_beat)
        beats_left = bar * BEATS_PER_BAR - pivot_beat
        if pivot_beat <= 0 or beats_left <= 0 or bar_ns <= pivot_ns:
            raise ValueError(f"bar {bar} at {bar_ns} ns is not after the step the retime "
                             f"starts on (beat {pivot_beat:g}, {pivot_ns} ns)")
        bend = _check_bpm(beats_left * 60 * NS_PER_S / (bar_ns - pivot_ns))
        before = self._map
        changes = {(pivot_bar, pivot_step): bend} | {(b, 0): bpm for b, bpm in tempi.items()}
        waits = {b: ns for b, ns in self._waits.items() if b * BEATS_PER_BAR <= pivot_beat}
        self._rebuild(pivot_beat, changes, waits, replace=True)
        return Warp(pivot_ns, before, self._map)

    def _rebuild(self, from_beat: float, changes: dict[tuple[int, int], float],
                 waits: dict[int, int], *, replace: bool = False) -> None:
        """Apply tempo ``changes`` ((bar, step) -> bpm) and ``waits`` (bar -> ns) from
        ``from_beat`` on (``replace``: instead of the changes planned from there); the
        segments before it are kept as they are (a long set adds one a bar when locked to
        Link: only the few ahead are made again)."""
        segments, beats = self._map
        keep = max(bisect.bisect_left(beats, from_beat), 1)
        tempi = {} if replace else {seg.position: seg.bpm for seg in segments[keep:]}
        tempi |= changes
        new = list(segments[:keep])
        if (0, 0) in tempi:
            new[0] = TempoSegment(0, tempi.pop((0, 0)), self.start_ns)
        for bar, step in sorted(tempi):
            prev = new[-1]
            beat = bar * BEATS_PER_BAR + step / STEPS_PER_BEAT if step else bar * BEATS_PER_BAR
            start = prev.start_ns + round((beat - prev.beat) * prev.ns_per_beat)
            wait = 0 if step else waits.get(bar, 0)
            new.append(TempoSegment(bar, tempi[bar, step], start + wait, step))
        self._waits = waits
        self._map = (tuple(new), beats[:keep] + tuple(seg.beat for seg in new[keep:]))

    def _segment_at_beat(self, beat: float) -> TempoSegment:
        return _segment_at_beat(self._map, beat)  # one read: consistent even if changed now

    # -- beats <-> ns --------------------------------------------------------------------

    def beat_to_ns(self, beat: float) -> int:
        return _beat_to_ns(self._map, beat)

    def ns_to_beat(self, ns: int) -> float:
        """The beat at ``ns``; during a wait (:meth:`realign`) the beat it waits for."""
        return _ns_to_beat(self._map[0], ns)

    def bar_start_ns(self, bar: int) -> int:
        return self.beat_to_ns(bar * BEATS_PER_BAR)

    def step_to_ns(self, bar: int, step16: float) -> int:
        """When 16th step ``step16`` of ``bar`` sounds (steps past 15 run into later bars)."""
        return self.beat_to_ns(bar * BEATS_PER_BAR + step16 / STEPS_PER_BEAT)

    def step_at_or_after(self, ns: int) -> float:
        """The beat of the first 16th step at or after ``ns`` (where a retime starts)."""
        return math.ceil(self.ns_to_beat(ns) * STEPS_PER_BEAT - 1e-6) / STEPS_PER_BEAT

    def now_beat(self) -> float:
        return self.ns_to_beat(self.now_ns())

    def now_bar(self) -> int:
        """The bar playing now (negative during a count-in)."""
        return math.floor(self.now_beat() / BEATS_PER_BAR)

    def next_bar(self, now_ns: int | None = None) -> int:
        """The first bar that has not started yet: the earliest a change can land."""
        now = self.now_ns() if now_ns is None else now_ns
        bar = math.floor(self.ns_to_beat(now) / BEATS_PER_BAR) + 1
        while self.bar_start_ns(bar - 1) > now:  # float rounding at the bar line
            bar -= 1
        while self.bar_start_ns(bar) <= now:
            bar += 1
        return bar

    # -- seconds, for offline audio ----------------------------------------------------

    def seconds_at_bar(self, bar: float) -> float:
        """Seconds from beat 0 to ``bar`` (fractions and negative bars too). Under the
        first tempo it is ``bar * 60 / bpm * 4`` exactly, the sum a render has always made
        (its audio samples depend on it); after a change it counts from that bar's start."""
        seg = self._segment_at_beat(bar * BEATS_PER_BAR)
        start = (seg.start_ns - self.start_ns) / NS_PER_S if seg.bar or seg.step else 0.0
        into = bar - seg.bar - seg.step / STEPS_PER_BAR if seg.step else bar - seg.bar
        return start + into * (60.0 / seg.bpm * STEPS_PER_BAR / STEPS_PER_BEAT)

    def __repr__(self) -> str:
        tempi = ", ".join(f"bar {s.bar}{f' step {s.step}' if s.step else ''}: {s.bpm:g}"
                          for s in self._map[0])
        return f"{type(self).__name__}({tempi}; start_ns={self.start_ns})"


_Map = tuple[tuple[TempoSegment, ...], tuple[float, ...]]  # segments, and the beat of each


def _segment_at_beat(tempo_map: _Map, beat: float) -> TempoSegment:
    segments, beats = tempo_map
    return segments[max(bisect.bisect_right(beats, beat) - 1, 0)]


def _beat_to_ns(tempo_map: _Map, beat: float) -> int:
    seg = _segment_at_beat(tempo_map, beat)
    return seg.start_ns + round((beat - seg.beat) * seg.ns_per_beat)


def _ns_to_beat(segments: tuple[TempoSegment, ...], ns: int) -> float:
    seg, after = segments[0], None
    for i in range(len(segments) - 1, -1, -1):  # the changes still ahead are few
        if segments[i].start_ns <= ns:
            seg = segments[i]
            after = segments[i + 1] if i + 1 < len(segments) else None
            break
    beat = seg.beat + (ns - seg.start_ns) / seg.ns_per_beat
    return min(beat, after.beat) if after is not None else beat


@dataclass(frozen=True, slots=True)
class Warp:
    """What :meth:`Clock.retime` did, as a map of time: a time stamped before it goes to
    ``warp(ns)``, the same beat on the new tempo map. Times before ``from_ns`` stay; later
    ones keep their order (both maps are increasing), and ``from_ns`` itself stays."""

    from_ns: int
    before: _Map
    after: _Map

    def __call__(self, ns: int) -> int:
        if ns <= self.from_ns:
            return ns
        return _beat_to_ns(self.after, _ns_to_beat(self.before[0], ns))

    def beat(self, ns: int) -> float:
        """The beat an event stamped at ``ns`` (on the map before) is on."""
        return _ns_to_beat(self.before[0], ns)


def _before_the_start() -> int:
    return -1
