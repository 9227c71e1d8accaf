"""The built-in synth's events, held until shortly before they sound, so a retime can move them.

The audio engine takes its events stamped in output frames and keeps them in its own
queue (in C, on the audio thread), where nothing can move them any more. That is right for
a clock whose past never moves (:mod:`engine.clock`). A show locked to an Ableton Link
session is the exception: when another app changes the session's tempo in the middle of a
bar, :meth:`~engine.clock.Clock.retime` moves the rest of the bar, and the notes already
stamped must move with it. So with Link the show stamps the built-in synth's events here
(in ``time.monotonic_ns``, as the MIDI sender takes them); :meth:`SynthFeed.feed`, called
by the show loop every few tens of ms, hands each to the engine once it is within
``ahead_ns`` of sounding (its frame computed then), and :meth:`SynthFeed.retime` applies a
:class:`~engine.clock.Warp` to those still held. A retime must start after
:attr:`SynthFeed.committed_ns`, the latest time already handed over.

Held events keep their order through a warp (it is increasing), so a note-off never moves
before its note-on; :meth:`SynthFeed.drop` (a panic) forgets them all, note-offs included:
the engine's panic silences every channel.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.audio.fluid_render import check_message

if TYPE_CHECKING:
    from engine.clock import Warp

FEED_AHEAD_NS = 200_000_000  # handed to the engine this long before sounding

# (ns, seq, kind, channel, data1, data2)
_Held = tuple[int, int, str, int, int, int]


class SynthFeed:
    """Holds ``engine``'s events (an :class:`~engine.live.audio_out.AudioEngine`, or
    anything with ``schedule(frame, kind, channel, data1, data2)`` and ``ns_to_frame``)
    until ``ahead_ns`` before they sound. Used from the show loop's thread only."""

    def __init__(self, engine: Any, *, ahead_ns: int = FEED_AHEAD_NS,
                 now_ns: Callable[[], int] = time.monotonic_ns) -> None:
        if ahead_ns <= 0:
            raise ValueError(f"ahead_ns must be > 0, got {ahead_ns}")
        self.engine = engine
        self.ahead_ns = int(ahead_ns)
        self._now_ns = now_ns
        self._held: list[_Held] = []
        self._seq = itertools.count()
        self.committed_ns = 0  # the latest time handed to the engine
        self.retimes = 0
        self.retimed = 0

    def __len__(self) -> int:
        return len(self._held)

    def schedule(self, ns: int, kind: str, channel: int, data1: int = 0,
                 data2: int = 0) -> None:
        """Have the synth play this message at ``ns`` (monotonic); checked now (a
        ValueError for a bad message, as the engine raises), handed over in time."""
        check_message(kind, channel, data1, data2)
        heapq.heappush(self._held, (int(ns), next(self._seq), kind, channel, data1, data2))
        self.feed()

    def feed(self) -> int:
        """Hand the engine every event due within ``ahead_ns``; how many."""
        held = self._held
        horizon = self._now_ns() + self.ahead_ns
        engine = self.engine
        handed = 0
        while held and held[0][0] <= horizon:
            ns, _seq, kind, channel, data1, data2 = heapq.heappop(held)
            engine.schedule(engine.ns_to_frame(ns), kind, channel, data1, data2)
            self.committed_ns = max(self.committed_ns, ns)
            handed += 1
        return handed

    def retime(self, warp: Warp) -> None:
        """Move every held event due after the warp's start to the same beat on the new
        map (the warp must start after :attr:`committed_ns`)."""
        if warp.from_ns < self.committed_ns:
            raise ValueError(f"the retime starts at {warp.from_ns} ns, before events the "
                             f"engine already has (up to {self.committed_ns} ns)")
        moved = [(warp(ns), *rest) for ns, *rest in self._held]
        self.retimed += sum(new[0] != old[0] for new, old in zip(moved, self._held,
                                                                  strict=True))
        heapq.heapify(moved)
        self._held = moved
        self.retimes += 1

    def drop(self) -> int:
        """Forget everything held (a panic: the engine silences every channel); how many."""
        dropped = len(self._held)
        self._held.clear()
        return dropped
