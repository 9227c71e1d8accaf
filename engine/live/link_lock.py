"""Keeping the show on an Ableton Link session's bar lines: phase, tempo and start/stop.

The show's :class:`~engine.clock.Clock` stays the one timeline everything is stamped
from (MIDI notes, MIDI clock out, the built-in synth's audio frames); this module bends
that clock so its bar lines fall on the session's:

1. :meth:`LinkLock.join` waits briefly for peers (``[live] link_wait_s``) and puts bar 0 on
   the session's next bar line (phase 0 within ``[live] link_quantum``) at the session's
   tempo;
2. :meth:`LinkLock.lock`, once a bar, before the show stamps that bar, reads the session's
   timeline and fits the bar with :func:`~engine.live.sync.lock_bar`: a small error is taken
   by that one bar's tempo (a slew: nothing bunches, nothing waits), a large one (a bar
   that would have to play more than 1.25 times faster or slower, e.g. after a peer moved
   the phase) by waiting for the session's next bar line, written to the event log as a
   ``link`` ``realign`` record. A session tempo change is picked up the same way: the bar
   under way ends where the old tempo put it, the bar fitted next ends on the session's
   bar line (it may bend up to 1.5 times, to the nearest line or the next), and the bars
   after it play at the new tempo;
3. :meth:`LinkLock.propose_tempo`: a tablet's tempo change lands on a bar line of the
   show's and is proposed to the session right there, so the session's bar lines move with
   the show's;
4. with ``[live] link_start_stop``, the set starts the session playing on its first bar
   line, ends when another app stops the session, and stops the session when it ends.

Per-port MIDI latency offsets are applied by the MIDI sender after this, and the audio
engine maps clock time to output frames through the output latency it measured, so what
leaves each output is on the session's time (within the port offsets the patch states).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

from engine.clock import BEATS_PER_BAR, Clock, Warp
from engine.live.sync import MAX_SLEW, MAX_SLEW_TEMPO_CHANGE, LinkSync, lock_bar

log = logging.getLogger(__name__)

MIN_LEAD_NS = 2_000_000  # a bar closer to its start than this is not bent any more
PROPOSE_EARLY_NS = 3_000_000  # the loop wakes this early to propose a tempo on a bar line
RETIME_AHEAD_NS = 20_000_000  # a retime starts this far ahead at least (the MIDI sender's
# thread takes it in well within; what is due before is sent where it was stamped)
ERRORS_KEPT = 4096


class LinkLock:
    """Fits the show's clock to ``link``'s session; ``live`` is the patch's ``[live]``
    settings, ``event_log`` (or None) gets the ``link`` records, ``on_stop`` ends the set
    (with start/stop sync, when another app stops the session)."""

    def __init__(self, link: LinkSync, live: Any, event_log: Any = None,
                 on_stop: Callable[[], None] | None = None, *, max_slew: float = MAX_SLEW,
                 max_slew_tempo_change: float = MAX_SLEW_TEMPO_CHANGE,
                 now_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.link = link
        self.wait_s = float(live.link_wait_s)
        self.start_stop = bool(live.link_start_stop)
        self.event_log = event_log
        self.on_stop = on_stop
        self.max_slew = max_slew
        self.max_slew_tempo_change = max_slew_tempo_change
        self._now_ns = now_ns
        self._bpm = 0.0  # the tempo the last fit was made for
        self._session_bpm = 0.0  # the session's tempo, as last read (or set by us)
        self._proposal: tuple[int, float] | None = None  # (bar, bpm) of our own change
        self._timer: asyncio.TimerHandle | None = None
        self._playing_seen = False
        self._stopped_by_session = False
        self.peers_at_start = 0
        self.bars = 0
        self.slews = 0
        self.realigns = 0
        self.late = 0
        self.failures = 0
        self.tempo_changes = 0
        self.retimes = 0
        self._retimed_to = -1  # the bar line the last retime put on the session's
        self._errors_ns: collections.deque[int] = collections.deque(maxlen=ERRORS_KEPT)

    def _write(self, record: dict[str, Any]) -> None:
        if self.event_log is not None:
            self.event_log.write({"type": "link"} | record)

    # -- the first downbeat ----------------------------------------------------------------

    async def join(self, earliest_ns: int) -> tuple[int, float]:
        """Wait for peers, then ``(start_ns, bpm)`` for bar 0: the session's first bar line
        at or after ``earliest_ns``, and the session's tempo."""
        waited = time.monotonic()
        self.peers_at_start = await self.link.wait_for_peers(self.wait_s)
        waited_ms = 1000 * (time.monotonic() - waited)
        session = self.link.timeline()
        start = session.line_at_or_after(max(earliest_ns, self._now_ns() + MIN_LEAD_NS))
        self._bpm = self._session_bpm = session.bpm
        if self.start_stop:
            self.link.on_start_stop(self._on_start_stop)
            if self.link.playing:
                self._playing_seen = True
            else:  # this set starts the session playing on its bar line
                self.link.start_playing_at(start)
                self._playing_seen = True
        self._write({"what": "join", "peers": self.peers_at_start, "bpm": session.bpm,
                     "quantum": session.quantum, "waited_ms": round(waited_ms, 1),
                     "start_in_ms": round((start - self._now_ns()) / 1e6, 1)})
        log.info("Link: %d peer(s), %.2f BPM; bar 0 on the session's bar line in %.0f ms",
                 self.peers_at_start, session.bpm, (start - self._now_ns()) / 1e6)
        return start, session.bpm

    # -- every bar -------------------------------------------------------------------------

    def lock(self, clock: Clock, bar: int) -> None:
        """Fit bar ``bar`` (not stamped yet) to the session. Never raises: a Link error
        leaves the clock as it is (counted in :meth:`stats`, logged)."""
        try:
            self._lock(clock, bar)
        except Exception as err:  # noqa: BLE001 - the show plays on, unlocked for a bar
            self.failures += 1
            log.warning("Link: bar %d not locked: %s: %s", bar, type(err).__name__, err)

    def _lock(self, clock: Clock, bar: int) -> None:
        if bar < self._retimed_to:  # inside a retime's bend: it ends on the session's line
            return
        start = clock.bar_start_ns(bar)
        if start <= self._now_ns() + MIN_LEAD_NS:  # the loop came too late to bend it
            self.late += 1
            return
        session = self.link.timeline()
        self._session_bpm = session.bpm
        own = self._proposal
        max_slew = self.max_slew
        if own is not None and own[0] == bar:  # our change lands here: so does the session's
            session = session.retimed(own[1], start)
        elif own is not None and own[0] < bar:
            self._proposal = None
        if abs(session.bpm - self._bpm) > 1e-3 and (own is None or own[0] != bar):
            # another app changed the tempo: the bar under way (stamped at the old one)
            # ends off the session's line, expectedly; this bar may bend further to fit
            self.tempo_changes += 1
            self._write({"what": "tempo", "bpm": session.bpm, "bar": bar})
            max_slew = max(max_slew, self.max_slew_tempo_change)
        self._bpm = session.bpm
        fit = lock_bar(bar, start, session, beats_per_bar=BEATS_PER_BAR, max_slew=max_slew)
        self.bars += 1
        self._errors_ns.append(abs(fit.error_ns))
        if fit.kind == "slew" or bar == 0:
            clock.set_tempo(fit.bpm if fit.kind == "slew" else fit.session_bpm, at_bar=bar)
            self.slews += fit.kind == "slew"
        else:
            clock.realign(bar, fit.start_ns, fit.bpm)
            self.realigns += 1
            wait_ms = (fit.start_ns - start) / 1e6
            self._write({"what": "realign", "bar": bar, "error_ms": round(fit.error_ns / 1e6, 3),
                         "wait_ms": round(wait_ms, 3), "bpm": fit.bpm})
            log.warning("Link: bar %d was %.1f ms off the session; it waits %.1f ms for the "
                        "session's bar line", bar, fit.error_ns / 1e6, wait_ms)
        clock.set_tempo(fit.session_bpm, at_bar=bar + 1)

    # -- tempo from another app, mid-bar --------------------------------------------------

    def follow(self, clock: Clock, not_before_ns: int = 0) -> Warp | None:
        """When another app has changed the session's tempo: retime what has not played
        yet so that the next bar line lands on the session's (see the module notes), from
        ``not_before_ns`` at the earliest (what was handed on unmovably before it stays).
        Returns the warp for the events stamped and not yet sent, or None (no change, or
        none that fits: then :meth:`lock` fits the next bar). Call from the loop, often;
        never raises (a Link error is counted and logged)."""
        try:
            return self._follow(clock, not_before_ns)
        except Exception as err:  # noqa: BLE001 - the show plays on; the next bar is fitted
            self.failures += 1
            log.warning("Link: tempo change not followed: %s: %s", type(err).__name__, err)
            return None

    def _follow(self, clock: Clock, not_before_ns: int) -> Warp | None:
        if not self._session_bpm:
            return None  # not joined yet
        session = self.link.timeline()
        if abs(session.bpm - self._session_bpm) <= 1e-3:
            return None
        own = self._proposal
        if own is not None and abs(session.bpm - own[1]) <= 1e-3:
            self._session_bpm = session.bpm
            return None  # our own proposal, on its bar line: the clock has it already
        from_ns = max(self._now_ns() + RETIME_AHEAD_NS, not_before_ns)
        pivot_beat = clock.step_at_or_after(from_ns)
        pivot_ns = clock.beat_to_ns(pivot_beat)
        first = int(pivot_beat // BEATS_PER_BAR) + 1
        for bar in (first, first + 1):  # the next bar line, or if too close the one after
            beats = bar * BEATS_PER_BAR - pivot_beat
            fit = lock_bar(bar, pivot_ns, session, beats_per_bar=beats,
                           max_slew=self.max_slew_tempo_change)
            if fit.kind == "slew":
                break
        else:
            return None
        tempi = {bar: session.bpm}
        if own is not None and own[0] >= bar:  # our own change, still ahead, stays
            tempi[own[0]] = own[1]
        old_line = clock.bar_start_ns(bar)
        warp = clock.retime(pivot_ns, bar, fit.end_ns, tempi)
        self._bpm = self._session_bpm = session.bpm
        self._retimed_to = bar
        self.tempo_changes += 1
        self.retimes += 1
        self._errors_ns.append(abs(old_line - fit.end_ns))
        self._write({"what": "tempo", "bpm": session.bpm, "bar": bar, "retimed": True,
                     "from_beat": pivot_beat, "bend_bpm": round(fit.bpm, 3),
                     "moved_ms": round((fit.end_ns - old_line) / 1e6, 3)})
        log.info("Link: the session moved to %.2f BPM; from beat %g, bar %d is retimed "
                 "onto its bar line (%+.1f ms)", session.bpm, pivot_beat, bar,
                 (fit.end_ns - old_line) / 1e6)
        return warp

    # -- tempo from the show ---------------------------------------------------------------

    def propose_tempo(self, clock: Clock, bpm: float, at_bar: int) -> None:
        """The show's tempo becomes ``bpm`` on bar ``at_bar``: propose it to the session on
        that bar line (call from the loop). Link changes the tempo when it is told, keeping
        the beat there, so the session's bar lines after it are off by the lateness times
        ``1 - new / old``: the loop wakes ``PROPOSE_EARLY_NS`` early and waits out the
        rest (the lateness is logged; the next bar's fit takes out what is left)."""
        self._proposal = (at_bar, float(bpm))
        if self._timer is not None:
            self._timer.cancel()
        line = clock.bar_start_ns(at_bar)
        delay_s = max(0.0, (line - PROPOSE_EARLY_NS - self._now_ns()) / 1e9)
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._send_tempo,
                                                            float(bpm), at_bar, line)

    def _send_tempo(self, bpm: float, bar: int, line_ns: int) -> None:
        self._timer = None
        while self._now_ns() < line_ns:  # at most PROPOSE_EARLY_NS
            pass
        late_ms = (self._now_ns() - line_ns) / 1e6
        try:
            self.link.set_tempo(bpm)
        except Exception as err:  # noqa: BLE001 - a closed or broken Link must not stop us
            self.failures += 1
            log.warning("Link: tempo %.2f not proposed: %s", bpm, err)
            return
        self._session_bpm = bpm  # the session's tempo now: ours
        self._write({"what": "proposed tempo", "bpm": bpm, "bar": bar,
                     "late_ms": round(late_ms, 3)})

    # -- start / stop ----------------------------------------------------------------------

    def _on_start_stop(self, playing: bool) -> None:
        if playing:
            self._playing_seen = True
        elif self._playing_seen and not self._stopped_by_session:
            self._stopped_by_session = True
            self._write({"what": "stop"})
            log.info("Link: the session stopped; the set ends")
            if self.on_stop is not None:
                self.on_stop()

    # -- the end ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Bars fitted, slewed, realigned, retimed mid-bar, too late to bend; how far off
        the session each bar's end would have been without the fit (ms: median, max)."""
        errors = list(self._errors_ns)
        return {"peers_at_start": self.peers_at_start, "bpm": self._bpm, "bars": self.bars,
                "slews": self.slews, "realigns": self.realigns, "retimes": self.retimes,
                "late": self.late,
                "failures": self.failures, "tempo_changes": self.tempo_changes,
                "error_ms_p50": round(statistics.median(errors) / 1e6, 3) if errors else None,
                "error_ms_max": round(max(errors) / 1e6, 3) if errors else None}

    def close(self) -> None:
        """Cancel a tempo proposal still ahead; with start/stop sync, stop the session
        (unless the session stopped the set). Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.start_stop and self._playing_seen and not self._stopped_by_session:
            self._stopped_by_session = True
            try:
                self.link.stop_playing()
            except RuntimeError:  # already closed
                pass
