"""Following other gear's tempo: MIDI clock in, and (optionally) Ableton Link.

:class:`MidiClockFollower` listens to a MIDI input for clock (0xF8, 24 a quarter note),
Start (0xFA), Continue (0xFB), Stop (0xFC) and Song Position (0xF2, in 16ths). Each tick
is stamped with :func:`time.monotonic_ns` as it arrives; the intervals between ticks go
into a preallocated ring, and :attr:`~MidiClockFollower.bpm` comes from them once 24
intervals (a quarter note) are in.

Why not the plain mean of the last 24 intervals: it telescopes to ``(t[n] - t[n-24]) /
24``, so only two stamps count, and a stamp that is 1 ms off (a JACK period is 1.3 ms at
64 frames) moves 120 BPM by up to 0.25 BPM. The follower uses the least-squares slope of
the tick times over up to ``window`` intervals (default 96, a 4/4 bar): a weighted mean of
the same intervals (parabolic weights), in which every stamp counts. With +-1 ms of
jitter at 120 BPM (300 seeds): the plain mean of 24 is off by more than 0.1 BPM 64% of the
time (up to 0.43); this fit over a bar never was (max 0.055). The first estimate, after a
quarter note, is coarse (95% within 0.18 BPM); it settles over the first bar.

Outliers: an interval more than 1.5 times the median of the ring is a dropped tick (or a
stall; "more than 2x" would keep half of the dropped ticks, whose gap is 2x give or take
the jitter), one less than half of it a bunched tick; neither goes into the ring. A long
interval of about 2 or 3 ticks counts as dropped ticks, and moves the song position on by
them. Twelve out-of-range intervals in a row are a real tempo jump (by more than 1.5x):
the ring starts again. A gap longer than ``stale_after_ns`` (default 1 s) is a clock that
stopped; :attr:`~MidiClockFollower.bpm` reads None then, and the ring starts again.

Threads: the MIDI backend's thread (on JACK: JACK's process thread) calls :meth:`feed`;
the asyncio loop reads :attr:`bpm`, :attr:`running`, :attr:`song_position`,
:meth:`beat_at` and :meth:`poll_events`. Every value the loop reads is published by one
attribute assignment (a float, a bool, a tuple), and transport events go through a
``collections.deque`` (append and popleft are atomic): no lock, nothing blocks.

:class:`LinkSync`: Ableton Link through the optional ``aalink`` package (GPL-3.0; Link
itself is GPL-2.0-or-later), so it is an extra: ``pip install 'encore-engine[link]'``.
Phase lock: :meth:`LinkSync.timeline` gives the session's beat as a line in monotonic time;
:func:`lock_bar` fits each bar, before it is stamped, to end on a session bar line (a
slewed tempo for that one bar), or to wait for the next one when it is too far off.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import math
import operator
import time
from array import array
from collections.abc import Callable
from typing import Any, NamedTuple

from engine.clock import MAX_BPM, MIN_BPM, NS_PER_S
from engine.live.midi_ports import (
    API_LABELS,
    BACKENDS,
    BackendUnavailableError,
    MidiPortError,
    PortNotFoundError,
    open_by_name,
    platform_apis,
    rtmidi_client,
    rtmidi_module,
)

__all__ = ["LINK_EXTRA_MESSAGE", "BarLock", "LinkSync", "MidiClockFollower", "SessionTimeline",
           "TransportEvent", "lock_bar", "suggest_tempo"]

log = logging.getLogger(__name__)

PPQN = 24
CLOCK, START, CONTINUE, STOP, SONG_POSITION = 0xF8, 0xFA, 0xFB, 0xFC, 0xF2
TICKS_PER_16TH = PPQN // 4

WINDOW = 96  # intervals fitted: one 4/4 bar
MIN_INTERVALS = 24  # a quarter note before the first bpm
MEDIAN_FROM = 4  # outliers are judged once this many intervals are in
RESET_AFTER = 12  # this many out-of-range intervals in a row: the tempo really jumped
STALE_AFTER_NS = NS_PER_S
MIN_TICK_NS = round(60 * NS_PER_S / (PPQN * MAX_BPM))  # closer ticks are bunched
EVENTS_KEPT = 256

LINK_EXTRA_MESSAGE = ("Ableton Link needs the optional 'link' extra: pip install "
                      "'encore-engine[link]' (aalink, GPL-3.0; Ableton Link is "
                      "GPL-2.0-or-later)")


class TransportEvent(NamedTuple):
    """``kind`` is "start", "continue", "stop" or "position"; ``t_ns`` when it arrived
    (monotonic); ``song_position`` in 16ths (0 after a Start)."""

    kind: str
    t_ns: int
    song_position: int


def suggest_tempo(followed_bpm: float | None, current_bpm: float,
                  threshold: float = 0.2) -> float | None:
    """``followed_bpm`` (rounded to 0.01) when it differs from ``current_bpm`` by more than
    ``threshold`` BPM and is a tempo the clock can play; else None."""
    if followed_bpm is None or abs(followed_bpm - current_bpm) <= threshold:
        return None
    if not MIN_BPM <= followed_bpm <= MAX_BPM:
        return None
    return round(followed_bpm, 2)


def _fit_weights(n: int, size: int, head: int = 0) -> array:
    """Least-squares slope of ``n + 1`` tick times as weights on their ``n`` intervals:
    ``w[j] = 6 (j+1) (n-j) / (n (n+1) (n+2))`` (they add up to 1), the oldest interval at
    ring slot ``head``; the slots without an interval weigh 0."""
    weights = array("d", bytes(8 * size))
    scale = 6.0 / (n * (n + 1) * (n + 2))
    for j in range(n):
        weights[(head + j) % size] = scale * (j + 1) * (n - j)
    return weights


def list_inputs(backend: str = "auto") -> list[str]:
    """The names of the MIDI sources a backend can follow (outputs of other programs)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown MIDI backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend in ("memory", "virtual"):
        return []
    names: list[str] = []
    for api in (platform_apis() if backend == "auto" else [backend]):
        try:
            midi = rtmidi_client(api, "encore-list", direction="in")
        except BackendUnavailableError:
            if backend != "auto":
                raise
            continue
        try:
            names.extend(n for n in midi.get_ports() if n not in names)
        finally:
            midi.delete()
    return names


class MidiClockFollower:
    """Follows the MIDI clock arriving on an input found by part of its name.

    ``backend``: as for :func:`engine.live.midi_ports.open_output`: ``auto``, ``jack``,
    ``alsa``, ``coremidi``, ``winmm``; ``virtual`` makes an input port
    ``<client_name>:<port_name>`` for the clock source to connect to; ``memory`` opens
    nothing (drive it with :meth:`feed`: tests, dry runs).

    Read from the loop: :attr:`bpm` (None until locked), :attr:`running`,
    :attr:`song_position`, :meth:`beat_at`, :meth:`poll_events`; :meth:`suggest_tempo`
    gives a tempo for :meth:`engine.clock.Clock.set_tempo` at the next bar.

    On JACK, rtmidi calls back from JACK's process thread, which then waits for the GIL:
    the work done there is a few attribute writes and a ~100-element sum, but a process
    that holds the GIL for long (no :func:`sys.setswitchinterval` below the default 5 ms,
    long C calls) delays that client's cycle. Close the follower while the clock source is
    quiet where possible: python-rtmidi keeps the GIL while it closes a JACK port.
    """

    def __init__(self, port_name_substring: str = "", backend: str = "auto", *,
                 client_name: str = "encore", port_name: str = "clock in",
                 window: int = WINDOW, min_intervals: int = MIN_INTERVALS,
                 stale_after_ns: int = STALE_AFTER_NS,
                 now_ns: Callable[[], int] = time.monotonic_ns) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown MIDI backend {backend!r}; choose one of "
                             f"{', '.join(BACKENDS)}")
        if not 2 <= min_intervals <= window:
            raise ValueError(f"need 2 <= min_intervals <= window, got {min_intervals} and "
                             f"{window}")
        if backend not in ("memory", "virtual") and not port_name_substring:
            raise ValueError("name the MIDI clock source (any part of its name), or use "
                             "backend 'virtual' to make a port it connects to")
        self.name = port_name_substring
        self.backend = backend
        self.client_name = client_name
        self.port_name = port_name
        self.device_name = ""
        self._now_ns = now_ns
        self._stale_ns = int(stale_after_ns)

        # the ring of accepted intervals and the fit weights, all made here, once
        self._window = window
        self._min_intervals = min_intervals
        self._ring = array("q", bytes(8 * window))
        self._head = 0  # next slot to write
        self._filled = 0
        self._partial = [_fit_weights(n, window) if n else array("d") for n in range(window)]
        self._full = [_fit_weights(window, window, head) for head in range(window)]
        self._streak = 0

        # written by the MIDI thread; each read by the loop in one go
        self._last_tick_ns: int | None = None
        self._bpm: float | None = None
        self._running = False
        self._song_position = 0
        self._position_ticks = 0  # where the next tick is, in 24ths of a beat
        self._anchor: tuple[int, int] | None = None  # (ns, position in ticks) of the last tick
        self._events: collections.deque[TransportEvent] = collections.deque(maxlen=EVENTS_KEPT)
        self._notify: tuple[asyncio.AbstractEventLoop, Callable[[TransportEvent], Any]] | None
        self._notify = None
        self.ticks = 0
        self.dropped_ticks = 0
        self.rejected = 0
        self.resets = 0

        self._midi: Any = None
        self._closed = False
        if backend != "memory":
            self._open()

    # -- opening -------------------------------------------------------------------------

    def _open(self) -> None:
        rtmidi = rtmidi_module()
        apis = platform_apis() if self.backend in ("auto", "virtual") else [self.backend]
        if not apis:
            raise BackendUnavailableError(
                "no MIDI system found: no JACK server runs and there is no ALSA sequencer "
                "(/dev/snd/seq); start JACK or load snd-seq")
        seen: list[str] = []
        errors: list[str] = []
        for api in apis:
            try:
                midi = rtmidi_client(api, self.client_name, direction="in")
            except BackendUnavailableError as exc:
                if self.backend != "auto":
                    raise
                errors.append(str(exc))
                continue
            try:
                midi.ignore_types(sysex=True, timing=False, active_sense=True)
                midi.set_callback(self._on_message)
                if self.backend == "virtual":
                    try:
                        midi.open_virtual_port(self.port_name)
                    except (rtmidi.RtMidiError, NotImplementedError) as exc:
                        raise MidiPortError(
                            f"{API_LABELS[api]} cannot create a virtual MIDI input "
                            f"({exc}); on Windows use loopMIDI and follow its port by "
                            "name") from exc
                    self.device_name = f"{self.client_name}:{self.port_name}"
                else:
                    device = open_by_name(midi, self.name, self.port_name, what="input")
                    if device is None:
                        seen.extend(midi.get_ports())
                        midi.delete()
                        continue
                    self.device_name = device
            except BaseException:
                midi.delete()
                raise
            self._midi = midi
            return
        if not seen and errors:
            raise BackendUnavailableError("; ".join(errors))
        available = ", ".join(repr(n) for n in seen) or "none"
        raise PortNotFoundError(
            f"no MIDI input matches {self.name!r} on "
            f"{'/'.join(API_LABELS[a] for a in apis)}; available: {available}; check the "
            "clock source's name (any part of it will do, any case) and that it is on")

    def close(self) -> None:
        """Stop listening and close the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        midi, self._midi = self._midi, None
        if midi is None:
            return
        time.sleep(0.005)  # let go of the GIL: a callback already under way finishes first
        try:
            midi.close_port()  # cancels the callback too
        finally:
            midi.delete()

    def __enter__(self) -> MidiClockFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __repr__(self) -> str:
        bpm = self.bpm
        state = "closed" if self._closed else "running" if self._running else "stopped"
        tempo = "unlocked" if bpm is None else f"{bpm:.2f} BPM"
        return f"<MidiClockFollower {self.device_name or self.backend!r} {state}, {tempo}>"

    # -- the MIDI thread -----------------------------------------------------------------

    def _on_message(self, event: tuple[list[int], float], _data: object = None) -> None:
        t_ns = self._now_ns()
        if not self._closed:
            self.feed(event[0], t_ns)

    def feed(self, message: bytes | bytearray | list[int], t_ns: int) -> None:
        """One MIDI message that arrived at ``t_ns`` (monotonic ns); others are ignored."""
        if not message:
            return
        status = message[0]
        if status == CLOCK:
            self._tick(t_ns)
        elif status == START:
            self._song_position = 0
            self._position_ticks = 0
            self._running = True
            self._event(TransportEvent("start", t_ns, 0))
        elif status == CONTINUE:
            self._position_ticks = self._song_position * TICKS_PER_16TH
            self._running = True
            self._event(TransportEvent("continue", t_ns, self._song_position))
        elif status == STOP:
            self._running = False
            self._event(TransportEvent("stop", t_ns, self._song_position))
        elif status == SONG_POSITION and len(message) >= 3:
            self._song_position = (message[1] & 0x7F) | (message[2] & 0x7F) << 7
            self._position_ticks = self._song_position * TICKS_PER_16TH
            self._event(TransportEvent("position", t_ns, self._song_position))

    def _event(self, event: TransportEvent) -> None:
        self._events.append(event)
        notify = self._notify
        if notify is not None:
            loop, callback = notify
            try:
                loop.call_soon_threadsafe(callback, event)
            except RuntimeError:  # the loop is closed
                self._notify = None

    def _tick(self, t_ns: int) -> None:
        self.ticks += 1
        last = self._last_tick_ns
        self._last_tick_ns = t_ns
        if self._running:
            self._advance(1, t_ns)
        if last is None:
            return
        interval = t_ns - last
        if interval > self._stale_ns:  # the clock stopped and came back: start again
            self._restart()
            return
        n = self._filled
        if n >= MEDIAN_FROM:
            ring = self._ring
            ordered = sorted(ring if n == self._window else ring[:n])
            median = ordered[n // 2]
            if 2 * interval > 3 * median or 2 * interval < median:
                self.rejected += 1
                missed = round(interval / median) - 1
                if 1 <= missed <= 2 and abs(interval - (missed + 1) * median) < median / 4:
                    self.dropped_ticks += missed
                    if self._running:
                        self._advance(missed, t_ns)
                if interval < MIN_TICK_NS:  # bunched behind a stall: no tempo
                    self._streak = 0
                    return
                self._streak += 1
                if self._streak < RESET_AFTER:
                    return
                self._restart()  # a real jump: follow it from here
                self.resets += 1
                n = 0
            self._streak = 0
        head = self._head
        self._ring[head] = interval
        self._head = (head + 1) % self._window
        n = min(n + 1, self._window)
        self._filled = n
        if n >= self._min_intervals:
            weights = self._full[self._head] if n == self._window else self._partial[n]
            mean = sum(map(operator.mul, self._ring, weights))
            self._bpm = 60 * NS_PER_S / (PPQN * mean)

    def _advance(self, ticks: int, t_ns: int) -> None:
        position = self._position_ticks + ticks
        self._position_ticks = position
        self._anchor = (t_ns, position - 1)

    def _restart(self) -> None:
        self._filled = 0
        self._head = 0
        self._streak = 0
        self._bpm = None

    # -- the loop ------------------------------------------------------------------------

    @property
    def bpm(self) -> float | None:
        """The followed tempo; None until ``min_intervals`` intervals are in (25 ticks by
        default), and when no tick came for ``stale_after_ns``."""
        bpm = self._bpm
        last = self._last_tick_ns
        if bpm is None or last is None or self._now_ns() - last > self._stale_ns:
            return None
        return bpm

    @property
    def locked(self) -> bool:
        return self.bpm is not None

    @property
    def running(self) -> bool:
        """Between a Start or Continue and a Stop."""
        return self._running

    @property
    def song_position(self) -> int:
        """The last Song Position received, in 16ths (0 after a Start)."""
        return self._song_position

    @property
    def position_beats(self) -> float:
        """Where the transport is, in beats, by the ticks counted since Start/Continue."""
        return self._position_ticks / PPQN

    def beat_at(self, t_ns: int) -> float | None:
        """The source's song position in beats at ``t_ns``: from the last tick, at the
        followed tempo. None unless running and locked (Start is beat 0: the first tick
        after it)."""
        anchor = self._anchor
        bpm = self.bpm
        if anchor is None or bpm is None or not self._running:
            return None
        tick_ns, ticks = anchor
        return ticks / PPQN + (t_ns - tick_ns) * bpm / (60 * NS_PER_S)

    def poll_events(self) -> list[TransportEvent]:
        """The transport events since the last poll, oldest first (up to 256 are kept)."""
        events = self._events
        out: list[TransportEvent] = []
        while events:
            try:
                out.append(events.popleft())
            except IndexError:
                break
        return out

    def notify(self, callback: Callable[[TransportEvent], Any] | None,
               loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Also call ``callback(event)`` on ``loop`` (default: the running loop) for each
        transport event, through ``loop.call_soon_threadsafe``; None stops it."""
        if callback is None:
            self._notify = None
            return
        self._notify = (loop or asyncio.get_running_loop(), callback)

    def suggest_tempo(self, current_bpm: float, threshold: float = 0.2) -> float | None:
        """The followed tempo when it differs from ``current_bpm`` by more than
        ``threshold`` BPM (the show sets it at the next bar); else None."""
        return suggest_tempo(self.bpm, current_bpm, threshold)

    def stats(self) -> dict[str, Any]:
        return {"bpm": self.bpm, "running": self._running, "ticks": self.ticks,
                "dropped_ticks": self.dropped_ticks, "rejected": self.rejected,
                "resets": self.resets, "song_position": self._song_position}


# -- Ableton Link ---------------------------------------------------------------------------


def _aalink() -> Any:
    try:
        import aalink
    except ImportError as exc:
        raise ImportError(LINK_EXTRA_MESSAGE) from exc
    return aalink


class SessionTimeline(NamedTuple):
    """A Link session's beat as a straight line in ``time.monotonic_ns``: beat ``beat`` at
    ``t_ns``, ``bpm`` beats a minute, and the phase shared within ``quantum`` beats (the
    session's "bar lines" are where ``beat`` is a multiple of ``quantum``). True until the
    session's tempo changes; read a fresh one (:meth:`LinkSync.timeline`) each bar."""

    t_ns: int
    beat: float
    bpm: float
    quantum: float

    @property
    def ns_per_beat(self) -> float:
        return 60 * NS_PER_S / self.bpm

    def beat_at(self, t_ns: int) -> float:
        return self.beat + (t_ns - self.t_ns) / self.ns_per_beat

    def time_at(self, beat: float) -> int:
        return self.t_ns + round((beat - self.beat) * self.ns_per_beat)

    def phase_at(self, t_ns: int) -> float:
        """Where ``t_ns`` falls within the quantum, in beats ``[0, quantum)``."""
        return self.beat_at(t_ns) % self.quantum

    def nearest_line(self, t_ns: int) -> int:
        """The session bar line (phase 0) nearest to ``t_ns``."""
        q = self.quantum
        return self.time_at(round(self.beat_at(t_ns) / q) * q)

    def line_at_or_after(self, t_ns: int) -> int:
        """The first session bar line at or after ``t_ns``."""
        q = self.quantum
        line = self.time_at(math.ceil(self.beat_at(t_ns) / q - 1e-9) * q)
        return line if line >= t_ns else line + round(q * self.ns_per_beat)

    def retimed(self, bpm: float, at_ns: int) -> SessionTimeline:
        """The same session after a tempo change to ``bpm`` at ``at_ns`` (Link keeps the
        beat there and goes on at the new tempo)."""
        return SessionTimeline(at_ns, self.beat_at(at_ns), float(bpm), self.quantum)


MAX_SLEW = 1.25  # a bar may play up to this factor off the session's tempo to fit
MAX_SLEW_TEMPO_CHANGE = 1.5  # ... when the session's tempo has just changed


class BarLock(NamedTuple):
    """How one bar is fitted to the session: ``kind`` "slew" (it starts where it would and
    its tempo is ``bpm``, so that it ends on a session bar line) or "realign" (it waits
    until ``start_ns``, the session's next bar line, and plays at the session tempo).
    ``error_ns``: how far the bar's end would have been from the nearest session bar line
    without the fit (positive: late); ``session_bpm``: the tempo from the next bar on;
    ``end_ns``: the session bar line it ends on."""

    bar: int
    kind: str
    start_ns: int
    bpm: float
    session_bpm: float
    error_ns: int
    end_ns: int = 0


def lock_bar(bar: int, start_ns: int, session: SessionTimeline, *,
             beats_per_bar: float = 4, max_slew: float = MAX_SLEW) -> BarLock:
    """Fit bar ``bar``, which starts at ``start_ns`` (fixed: the bar before it is stamped),
    to the session: at the session's tempo it would end ``error_ns`` off the nearest
    session bar line. It ends on that line, or on the one after it, or the one before,
    whichever asks the least change of tempo (a bar that is 45% late is better played 35%
    slower to the next line than 80% faster to the nearest). Within ``max_slew`` (a
    factor) of the session's tempo the bar plays at that tempo (a slew: nothing bunches,
    nothing waits); further off, it waits for the session's next bar line and plays at its
    tempo (a gap, never an overlap). ``beats_per_bar`` may be a fraction: the rest of a
    bar from a step inside it (a retime, :meth:`~engine.live.link_lock.LinkLock.follow`)."""
    bar_ns = beats_per_bar * session.ns_per_beat
    natural_end = start_ns + round(bar_ns)
    nearest = session.nearest_line(natural_end)
    error = natural_end - nearest
    spacing = round(session.quantum * session.ns_per_beat)
    ends = [end for end in (nearest - spacing, nearest, nearest + spacing) if end > start_ns]
    end = min(ends, key=lambda e: abs(math.log((e - start_ns) / bar_ns)))
    factor = bar_ns / (end - start_ns)  # the bar's tempo over the session's
    bpm = session.bpm * factor
    if 1 / max_slew <= factor <= max_slew and MIN_BPM <= bpm <= MAX_BPM:
        return BarLock(bar, "slew", start_ns, bpm, session.bpm, error, end)
    line = session.line_at_or_after(start_ns)
    return BarLock(bar, "realign", line, session.bpm, session.bpm, error, line + round(bar_ns))


class LinkSync:
    """Tempo, phase and (optionally) start/stop shared with an Ableton Link session, through
    ``aalink``.

    Make it inside the running asyncio loop (aalink calls back through it), then
    :meth:`wait_for_peers` briefly before the first downbeat. Link shares a tempo and the
    phase within a ``quantum`` (beats; 4 = bars line up), not beat numbers. The show reads
    :meth:`timeline` once a bar and fits the bar it is about to stamp with :func:`lock_bar`;
    its own tempo changes go to the session with :meth:`set_tempo`, called on the bar line
    where they land.

    Link's clock is not ``time.monotonic_ns`` (on Linux it is CLOCK_MONOTONIC_RAW), so
    :meth:`timeline` reads Link's beat between two reads of ``now_ns`` and stamps it halfway;
    the line is exact until the tempo changes (Link's beat is linear in its clock) and the
    two clocks differ in rate by a few ppm, which the lock takes out every bar.
    """

    def __init__(self, quantum: float = 4, bpm: float = 120.0, *, enabled: bool = True,
                 start_stop_sync: bool = False,
                 now_ns: Callable[[], int] = time.monotonic_ns) -> None:
        aalink = _aalink()
        if not quantum > 0:
            raise ValueError(f"quantum must be > 0 beats, got {quantum}")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("LinkSync must be made inside the running asyncio loop "
                               "(aalink calls back through it)") from None
        self._now_ns = now_ns
        self._link = aalink.Link(float(bpm))
        self._link.quantum = float(quantum)
        self._link.start_stop_sync_enabled = bool(start_stop_sync)
        self._link.enabled = bool(enabled)

    def _get(self) -> Any:
        if self._link is None:
            raise RuntimeError("this LinkSync is closed")
        return self._link

    @property
    def enabled(self) -> bool:
        return self._link is not None and bool(self._link.enabled)

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._get().enabled = bool(value)

    @property
    def quantum(self) -> float:
        return float(self._get().quantum)

    @property
    def tempo(self) -> float:
        """The session's tempo (this app's own while it has no peers)."""
        return float(self._get().tempo)

    def set_tempo(self, bpm: float) -> None:
        """Propose a tempo to the whole session, from now on (Link's last change wins)."""
        if not (math.isfinite(bpm) and MIN_BPM <= bpm <= MAX_BPM):
            raise ValueError(f"bpm must be between {MIN_BPM:g} and {MAX_BPM:g}, got {bpm}")
        self._get().tempo = float(bpm)

    @property
    def num_peers(self) -> int:
        return int(self._get().num_peers)

    async def wait_for_peers(self, timeout_s: float, poll_s: float = 0.02) -> int:
        """Wait up to ``timeout_s`` for the first peer (Link finds peers in well under a
        second on a LAN); the number of peers found (0: this app starts the session)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while not self.num_peers and time.monotonic() < deadline:
            await asyncio.sleep(poll_s)
        return self.num_peers

    @property
    def playing(self) -> bool:
        """The session's play state (shared only with start/stop sync on)."""
        return bool(self._get().playing)

    def start_playing_at(self, t_ns: int) -> None:
        """Tell the session (with start/stop sync) that playing starts at ``t_ns``, a bar
        line of the session's (the phase is kept; only this peer's beat count moves)."""
        link = self._get()
        before = self._now_ns()
        link_now = link.time
        after = self._now_ns()
        at = link_now + datetime.timedelta(microseconds=(t_ns - (before + after) // 2) / 1000)
        link.set_is_playing_and_request_beat_at_time(True, at, 0.0)

    def stop_playing(self) -> None:
        """Tell the session (with start/stop sync) that playing stops now."""
        self._get().playing = False

    def on_start_stop(self, callback: Callable[[bool], Any] | None) -> None:
        """Call ``callback(playing)`` on the loop when the session starts or stops."""
        self._get().set_start_stop_callback(callback or (lambda _playing: None))

    def timeline(self) -> SessionTimeline:
        """The session's beat as a line in ``now_ns`` time (see the class notes)."""
        link = self._get()
        before = self._now_ns()
        beat = link.beat
        after = self._now_ns()
        return SessionTimeline((before + after) // 2, float(beat), float(link.tempo),
                               float(link.quantum))

    def beat_at(self, t_ns: int) -> float:
        """Link's beat at ``t_ns`` (monotonic), extrapolated from now at the session
        tempo. Beat numbers are this peer's own; only the phase is shared."""
        return self.timeline().beat_at(t_ns)

    def phase_at(self, t_ns: int) -> float:
        """Where ``t_ns`` falls within the quantum, in beats ``[0, quantum)``: shared by
        every peer with the same quantum."""
        return self.timeline().phase_at(t_ns)

    def next_downbeat_ns(self, after_ns: int | None = None) -> int:
        """The first session bar line (phase 0) at or after ``after_ns`` (default now)."""
        session = self.timeline()
        return session.line_at_or_after(session.t_ns if after_ns is None else after_ns)

    def suggest_tempo(self, current_bpm: float, threshold: float = 0.2) -> float | None:
        """The session tempo when it differs from ``current_bpm`` by more than
        ``threshold`` BPM; else None."""
        return suggest_tempo(self.tempo, current_bpm, threshold)

    def close(self) -> None:
        """Leave the session. Idempotent."""
        link, self._link = self._link, None
        if link is not None:
            link.enabled = False

    def __repr__(self) -> str:
        if self._link is None:
            return "<LinkSync closed>"
        return (f"<LinkSync {self.tempo:.2f} BPM, quantum {self.quantum:g}, "
                f"{self.num_peers} peer(s), {'on' if self.enabled else 'off'}>")
