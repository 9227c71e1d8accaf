"""The one tempo map: beats <-> monotonic nanoseconds, for the live show, render and replay.

Time is :func:`time.monotonic_ns` (the MIDI sender's deadlines are in it). Beat 0, the
first beat of bar 0, falls at ``start_ns``; there are 4 beats to a bar and 4 sixteenth
steps to a beat (the 16-step grid of :mod:`engine.music.notes`).

Tempo is piecewise constant. Each change lands on a bar line, and only on a bar that has
not started yet, so the time of everything already under way never moves: a bar's start
depends only on the tempi of the bars before it (and on any wait put before it by
:meth:`Clock.realign`, which an external timeline such as Ableton Link asks for when it is
too far off to be slewed). Negative beats (a count-in) extend the first tempo backwards.

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
from collections.abc import Callable
from dataclasses import dataclass

NS_PER_S = 1_000_000_000
BEATS_PER_BAR = 4
STEPS_PER_BEAT = 4
STEPS_PER_BAR = BEATS_PER_BAR * STEPS_PER_BEAT
MIN_BPM = 1.0
MAX_BPM = 999.0


@dataclass(frozen=True, slots=True)
class TempoSegment:
    """From bar ``bar`` (beat ``bar * 4``, at ``start_ns``) on, ``bpm`` beats a minute."""

    bar: int
    bpm: float
    start_ns: int

    @property
    def beat(self) -> int:
        return self.bar * BEATS_PER_BAR

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
        self._rebuild(at_bar, {at_bar: bpm}, self._waits)

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
        self._rebuild(at_bar, {}, waits)

    def _rebuild(self, from_bar: int, changes: dict[int, float], waits: dict[int, int]) -> None:
        """Apply tempo ``changes`` and ``waits`` (bar -> ns) from bar ``from_bar`` on; the
        segments before it are kept as they are (a long set adds one a bar when locked to
        Link: only the few ahead are made again)."""
        segments, beats = self._map
        keep = max(bisect.bisect_left(beats, from_bar * BEATS_PER_BAR), 1)
        tempi = {seg.bar: seg.bpm for seg in segments[keep:]} | changes
        new = list(segments[:keep])
        if 0 in tempi:
            new[0] = TempoSegment(0, tempi.pop(0), self.start_ns)
        for bar in sorted(tempi):
            prev = new[-1]
            start = prev.start_ns + round((bar - prev.bar) * BEATS_PER_BAR * prev.ns_per_beat)
            new.append(TempoSegment(bar, tempi[bar], start + waits.get(bar, 0)))
        self._waits = waits
        self._map = (tuple(new), beats[:keep] + tuple(seg.beat for seg in new[keep:]))

    def _segment_at_beat(self, beat: float) -> TempoSegment:
        segments, beats = self._map  # one read: a consistent map even if set_tempo runs now
        return segments[max(bisect.bisect_right(beats, beat) - 1, 0)]

    # -- beats <-> ns --------------------------------------------------------------------

    def beat_to_ns(self, beat: float) -> int:
        seg = self._segment_at_beat(beat)
        return seg.start_ns + round((beat - seg.beat) * seg.ns_per_beat)

    def ns_to_beat(self, ns: int) -> float:
        """The beat at ``ns``; during a wait (:meth:`realign`) the beat it waits for."""
        segments = self._map[0]
        seg, after = segments[0], None
        for i in range(len(segments) - 1, -1, -1):  # the changes still ahead are few
            if segments[i].start_ns <= ns:
                seg = segments[i]
                after = segments[i + 1] if i + 1 < len(segments) else None
                break
        beat = seg.beat + (ns - seg.start_ns) / seg.ns_per_beat
        return min(beat, after.beat) if after is not None else beat

    def bar_start_ns(self, bar: int) -> int:
        return self.beat_to_ns(bar * BEATS_PER_BAR)

    def step_to_ns(self, bar: int, step16: float) -> int:
        """When 16th step ``step16`` of ``bar`` sounds (steps past 15 run into later bars)."""
        return self.beat_to_ns(bar * BEATS_PER_BAR + step16 / STEPS_PER_BEAT)

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
        start = (seg.start_ns - self.start_ns) / NS_PER_S if seg.bar else 0.0
        return start + (bar - seg.bar) * (60.0 / seg.bpm * STEPS_PER_BAR / STEPS_PER_BEAT)

    def __repr__(self) -> str:
        tempi = ", ".join(f"bar {s.bar}: {s.bpm:g}" for s in self._map[0])
        return f"{type(self).__name__}({tempi}; start_ns={self.start_ns})"


def _before_the_start() -> int:
    return -1
