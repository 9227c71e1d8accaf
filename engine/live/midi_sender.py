"""The MIDI sender: one thread that waits for absolute deadlines and sends, nothing else.

Anyone (the show loop, an OSC handler, a signal handler) calls :meth:`MidiSender.schedule`
with a deadline in ``time.monotonic_ns`` and the bytes to send. The sender thread sleeps
until about ``spin_ns`` before the earliest deadline, busy-waits the rest (a sleeping
thread wakes ~0.1-1 ms late, a spinning one within ~50 us) and sends. The spin calls
``time.sleep(0)``, which lets go of the GIL each turn: another real-time Python callback
in the process (the audio callback, a JACK client) is not kept waiting behind it. The
GIL still hands over only as often as ``sys.setswitchinterval`` (5 ms by default) allows
when the spinner takes it straight back; a show with a Python audio callback at a small
block size should lower it (0.5 ms or less). Each port has a latency offset: its messages
go out that much earlier, so a slow synth still sounds on time.

Health is counted, never raised: lateness of every send goes into a preallocated ring
(:meth:`~MidiSender.stats` gives p50/p99/max), late sends are counted, a note-on more than
``drop_after_ns`` late is dropped rather than played in a burst (note-offs always go
out), and a port that fails is marked, its messages counted as lost, and reopened by
name at most once a second on a helper thread, so the sender never waits for a device.

MIDI clock out (:meth:`~MidiSender.start_clock`): 24 ticks a beat, tick ``n`` at
``clock.beat_to_ns(beat0 + n / 24)``: computed from the tempo map for each tick, never
by adding up intervals, so it does not drift and follows tempo changes on bar lines.

A retime (:meth:`~engine.clock.Clock.retime`: an Ableton Link session whose tempo another
app changed mid-bar) moves what is queued and not yet sent: :meth:`~MidiSender.retime`
applies its :class:`~engine.clock.Warp` to every deadline after its start, on the sender
thread, in order with what was scheduled before it (all of it stamped from the old map);
the pending clock tick is computed again from its beat. The warp keeps the order of
everything it moves, so each note-off still follows its note-on, once.

Signals and locks. Python runs signal handlers in the main thread, between bytecodes of
whatever the main thread was doing. If a handler took a lock the interrupted code held,
the show would hang. So nothing a handler calls takes such a lock:

- the only way into the sender thread is a ``queue.SimpleQueue``, whose ``put`` is
  documented as reentrant (safe from signal handlers); the heap of pending events and
  the clock state belong to the sender thread alone and need no lock;
- :meth:`~MidiSender.panic` and :meth:`~MidiSender.stop` post a command on that queue and
  wait on a fresh ``threading.Event`` (its lock is new, so nobody holds it) or join the
  thread (whose lock the main thread never holds), each with a timeout;
- ports are silenced by the sender thread. If it is stuck (say on a port lock held by
  the main thread, interrupted inside a direct port call), :meth:`~MidiSender.panic`
  returns False after its timeout and the sender finishes once the handler returns;
  :meth:`~MidiSender.stop` silences the ports itself after its timeout, which the
  ports' ``RLock`` allows the interrupted thread to do.
:meth:`~MidiSender.stop` is idempotent, so the show loop's ``finally`` and its signal
handlers may both call it. Use ``with MidiSender(...) as sender:`` to have it called on
every way out of the block.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.clock import BEATS_PER_BAR, NS_PER_S
from engine.live.midi_ports import (
    NOTE_OFF,
    NOTE_ON,
    NoteTable,
    OutputPort,
    as_message,
    is_note_on,
)

if TYPE_CHECKING:
    from engine.clock import Clock, Warp

__all__ = ["MidiSender", "NoteTable"]

log = logging.getLogger(__name__)

LATE_THRESHOLD_NS = 3_000_000  # later than this counts as late (Link's test plan: 3 ms)
DROP_AFTER_NS = 50_000_000  # note-ons later than this are dropped, not played
REOPEN_INTERVAL_NS = NS_PER_S
RING_SIZE = 4096  # lateness of the last this many sends
PPQN = 24
SEND_BATCH = 32

MIDI_CLOCK = b"\xf8"
MIDI_START = b"\xfa"
MIDI_CONTINUE = b"\xfb"
MIDI_STOP = b"\xfc"
SONG_POSITION = 0xF2
MAX_SONG_POSITION = 0x3FFF  # 14 bits of 16th notes

# A pending event: (send_ns, order, seq, port_name, message, tick_run). Note-offs (order 0)
# go before anything else due at the same ns, so a note repeated back to back sounds
# again; seq keeps the rest in the order scheduled. tick_run is 0 for a plain message and
# the clock run's number for a MIDI clock tick (ticks of a stopped run are skipped).
_Event = tuple[int, int, int, str, bytes, int]

_PANIC, _STOP, _CLOCK_START, _CLOCK_STOP = "panic", "stop", "clock start", "clock stop"
_RETIME = "retime"
_MISSING = "missing"


class _Command:
    __slots__ = ("kind", "args", "done")

    def __init__(self, kind: str, *args: Any) -> None:
        self.kind = kind
        self.args = args
        self.done = threading.Event()


SENDER_RT_PRIORITY = 5  # SCHED_FIFO priority, below JACK's own threads (10 and up)


def _realtime_priority() -> bool:
    """Best effort: run the calling thread (the sender) at a low real-time priority, so
    model work and other processes cannot delay a deadline. Needs root or an rtprio limit
    (e.g. the audio group on Linux); without it the thread keeps the normal scheduler."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(SENDER_RT_PRIORITY))
    except (OSError, AttributeError):
        return False
    return True


class MidiSender:
    """Sends scheduled MIDI on time from one dedicated thread. See the module docstring.

    ``ports`` maps the names events are scheduled to, to open ports. ``latency_ms`` maps
    port names to offsets (ms, may be negative) that override the ports' own
    ``latency_ms``. ``now_ns`` must be the clock the deadlines are in.
    """

    def __init__(self, clock: Clock, ports: Mapping[str, OutputPort], *,
                 spin_ns: int = 1_000_000, late_threshold_ns: int = LATE_THRESHOLD_NS,
                 drop_after_ns: int = DROP_AFTER_NS,
                 latency_ms: Mapping[str, float] | None = None,
                 reopen_interval_ns: int = REOPEN_INTERVAL_NS, ring_size: int = RING_SIZE,
                 now_ns: Callable[[], int] = time.monotonic_ns) -> None:
        if not ports:
            raise ValueError("a MidiSender needs at least one port")
        if spin_ns < 0 or late_threshold_ns < 0 or drop_after_ns <= 0:
            raise ValueError("spin_ns and late_threshold_ns must be >= 0, drop_after_ns > 0")
        if ring_size < 1 or ring_size & (ring_size - 1):
            raise ValueError(f"ring_size must be a power of two, got {ring_size}")
        self.clock = clock
        self._ports: dict[str, OutputPort] = dict(ports)
        self._latency_ns = {name: round(port.latency_ms * 1e6) for name, port in ports.items()}
        for name, ms in (latency_ms or {}).items():
            self.set_latency_ms(name, ms)
        self._spin_ns = int(spin_ns)
        self._late_threshold_ns = int(late_threshold_ns)
        self._drop_after_ns = int(drop_after_ns)
        self._reopen_interval_ns = int(reopen_interval_ns)
        self._now_ns = now_ns

        self._queue: queue.SimpleQueue[_Event | _Command] = queue.SimpleQueue()
        self._seq = itertools.count()
        self._heap: list[_Event] = []  # the sender thread's alone once it runs
        self._thread: threading.Thread | None = None
        self._stop_posted = False
        self._stopped = False

        # MIDI clock state (sender thread); each start and stop begins a new run
        self._clock_running = False
        self._clock_run = 0
        self._clock_port = ""
        self._clock_beat0 = 0.0
        self._clock_tick = 0

        # health (written by the sender thread, read anywhere)
        self._ring = array("q", bytes(8 * ring_size))
        self._ring_mask = ring_size - 1
        self._sent = 0
        self._late = 0
        self._dropped = 0
        self._refused = 0
        self._ticks = 0
        self._panics = 0
        self._crashes = 0
        self._retimes = 0
        self._retimed = 0  # events moved by retimes
        self._errors = dict.fromkeys(self._ports, 0)
        self._lost = dict.fromkeys(self._ports, 0)
        self._reopened = dict.fromkeys(self._ports, 0)
        self._broken: dict[str, int] = {}  # port -> ns of its last reopen attempt
        self._reopening: set[str] = set()

    # -- any thread ----------------------------------------------------------------------

    def start(self) -> MidiSender:
        if self._thread is not None:
            raise RuntimeError("this MidiSender has already been started; make a new one")
        self._thread = threading.Thread(target=self._run, name="encore-midi-sender",
                                        daemon=True)
        self._thread.start()
        return self

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ports(self) -> dict[str, OutputPort]:
        return dict(self._ports)

    def set_latency_ms(self, port_name: str, ms: float) -> None:
        """Send to ``port_name`` ``ms`` earlier (negative: later), from the next schedule."""
        self._port(port_name)
        self._latency_ns[port_name] = round(float(ms) * 1e6)

    def schedule(self, deadline_ns: int, port_name: str,
                 message: bytes | bytearray | Iterable[int]) -> bool:
        """Have ``message`` sound on ``port_name`` at ``deadline_ns`` (monotonic ns).

        Safe from any thread and from signal handlers. Returns False (and counts it) once
        the sender is stopping: nothing new is sent after :meth:`stop`.
        """
        if self._stop_posted:
            self._refused += 1
            return False
        self._port(port_name)
        data = as_message(message)
        order = 0 if data[0] & 0xF0 == NOTE_OFF or (
            data[0] & 0xF0 == NOTE_ON and len(data) > 2 and data[2] == 0) else 1
        send_ns = int(deadline_ns) - self._latency_ns[port_name]
        self._queue.put((send_ns, order, next(self._seq), port_name, data, 0))
        return True

    def schedule_note(self, port_name: str, channel: int, pitch: int, velocity: int,
                      start_ns: int, end_ns: int) -> bool:
        """A note-on at ``start_ns`` and its note-off at ``end_ns``."""
        if not (0 <= channel < 16 and 0 <= pitch < 128 and 1 <= velocity < 128):
            raise ValueError(f"channel 0..15, pitch 0..127, velocity 1..127; got {channel}, "
                             f"{pitch}, {velocity}")
        if end_ns <= start_ns:
            raise ValueError(f"a note must end after it starts: {start_ns} -> {end_ns}")
        return (self.schedule(start_ns, port_name, bytes((NOTE_ON | channel, pitch, velocity)))
                and self.schedule(end_ns, port_name, bytes((NOTE_OFF | channel, pitch, 0))))

    def start_clock(self, port_name: str, from_bar: int | None = None) -> None:
        """Send MIDI clock to ``port_name`` from the start of ``from_bar`` (default: the
        next bar): Start (0xFA) at bar 0, else Song Position (0xF2, in 16ths) now and
        Continue (0xFB) on the bar line; then 0xF8 24 times a beat."""
        self._port(port_name)
        if from_bar is None:
            from_bar = self.clock.next_bar()
        if self.clock.bar_start_ns(from_bar) <= self._now_ns():
            raise ValueError(f"bar {from_bar} has started; MIDI clock starts on a bar line "
                             f"still ahead: use bar {self.clock.next_bar()} or later")
        self._post(_Command(_CLOCK_START, port_name, from_bar))

    def retime(self, warp: Warp) -> None:
        """The clock was retimed (:meth:`~engine.clock.Clock.retime`): every event queued
        before now that is due after ``warp.from_ns`` goes to the same beat on the new
        map. Safe from any thread; call it right after the retime, before scheduling
        anything stamped from the new map."""
        self._post(_Command(_RETIME, warp))

    def stop_clock(self) -> None:
        """Send MIDI Stop (0xFC) now and no more clock ticks."""
        self._post(_Command(_CLOCK_STOP))

    def panic(self, *, wait: bool = True, timeout: float = 1.0) -> bool:
        """Cancel the note-ons still queued; note-off every sounding note; CC64 0, CC123
        and CC120 on every channel used on every port. Safe from any thread and from
        signal handlers. Returns whether it was done within ``timeout`` (if waiting)."""
        if threading.current_thread() is self._thread:
            self._panic_here()
            return True
        if not self.is_running:
            self._take_in()
            self._panic_here()
            return True
        command = _Command(_PANIC)
        self._post(command)
        return command.done.wait(timeout) if wait else True

    def port_missing(self, port_name: str) -> None:
        """The device behind ``port_name`` is gone (a replugged USB synth, a JACK client
        that quit) though sending to it raises nothing: treat the port as failed, so its
        messages are counted as lost and it is reopened by name once the device is back."""
        if not self.is_running:
            if port_name in self._ports:
                self._mark_broken(port_name, ConnectionError("its device went away"))
            return
        self._post(_Command(_MISSING, port_name))

    def stop(self, timeout: float = 2.0) -> None:
        """Panic, send MIDI Stop if the clock runs, and end the thread. Idempotent, safe
        from signal handlers. Events still queued are not sent."""
        if self._stopped:
            return
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            if not self._stop_posted:
                self._stop_posted = True
                self._queue.put(_Command(_STOP))
            thread.join(timeout)
            if not thread.is_alive():
                self._stopped = True
                return
            log.error("the MIDI sender did not stop within %.1f s; silencing the ports from "
                      "this thread", timeout)
            self._silence_ports()  # the heap is still the sender thread's: leave it
            self._stopped = True
            return
        self._stop_posted = True
        self._halt_clock()
        self._panic_here()
        self._stopped = True

    def notes(self) -> NoteTable:
        """What is sounding now, on every port."""
        table = NoteTable()
        for port in self._ports.values():
            table.merge(port.note_table())
        return table

    def stats(self) -> dict[str, Any]:
        """Counts, and the lateness (us) of the last ``ring_size`` sends: p50, p99, max.

        A plain dict, ready for JSON: ``sent``, ``late`` (over ``late_threshold_ns``),
        ``dropped`` (stale note-ons), ``refused`` (scheduled after stop), ``clock_ticks``,
        ``panics``, ``crashes``, ``retimes`` (and ``retimed``, the events they moved),
        and per port ``errors``, ``lost`` and ``reopens``;
        ``broken`` lists the ports waiting to be reopened.
        """
        n = min(self._sent, self._ring_mask + 1)
        late = np.frombuffer(self._ring, dtype=np.int64)[:n].copy() / 1e3
        if n:
            p50, p99 = np.percentile(late, [50, 99])
            lateness = {"n": n, "p50_us": float(p50), "p99_us": float(p99),
                        "max_us": float(late.max())}
        else:
            lateness = {"n": 0, "p50_us": 0.0, "p99_us": 0.0, "max_us": 0.0}
        return dict(
            sent=self._sent, late=self._late, dropped=self._dropped, refused=self._refused,
            clock_ticks=self._ticks, panics=self._panics, crashes=self._crashes,
            retimes=self._retimes, retimed=self._retimed,
            errors=dict(self._errors), lost=dict(self._lost), reopens=dict(self._reopened),
            broken=sorted(self._broken), lateness=lateness)

    def __enter__(self) -> MidiSender:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped" if self._stopped else "idle"
        return f"<MidiSender {state}, ports {sorted(self._ports)}>"

    def _port(self, port_name: str) -> OutputPort:
        try:
            return self._ports[port_name]
        except KeyError:
            raise KeyError(f"no MIDI port named {port_name!r}; the sender has "
                           f"{sorted(self._ports)}") from None

    def _post(self, command: _Command) -> None:
        if self.is_running:
            self._queue.put(command)
        else:  # not started (or gone): do it here, in order with what is queued
            self._take_in()
            self._command(command)

    # -- the sender thread ---------------------------------------------------------------

    def _run(self) -> None:
        _realtime_priority()
        while True:
            try:
                self._loop()
                return
            except Exception:  # a bug must not silence the show: log, count, go on
                self._crashes += 1
                log.exception("MIDI sender: unexpected error; carrying on")

    def _loop(self) -> None:
        heap = self._heap
        get = self._queue.get
        push = heapq.heappush
        now = self._now_ns
        empty = queue.Empty
        spin_ns = self._spin_ns
        yield_gil = time.sleep
        while True:
            if self._take_in():
                return
            if heap:
                wait_ns = heap[0][0] - now()
                if wait_ns <= spin_ns:
                    target = heap[0][0]
                    while now() < target:
                        yield_gil(0)  # a spin that lets the audio callback have the GIL
                    self._send_due()
                    continue
                timeout: float | None = (wait_ns - spin_ns) / NS_PER_S
            else:
                timeout = None
            try:  # sleep until the spin starts, or until something new arrives
                item = get(timeout=timeout)
            except empty:
                continue
            if type(item) is tuple:
                push(heap, item)
            elif self._command(item):
                return

    def _take_in(self) -> bool:
        """Move everything queued onto the heap, running commands in order; True on stop."""
        get = self._queue.get_nowait
        push = heapq.heappush
        heap = self._heap
        while True:
            try:
                item = get()
            except queue.Empty:
                return False
            if type(item) is tuple:
                push(heap, item)
            elif self._command(item):
                return True

    def _send_due(self) -> None:
        """Send what is due; at most ``SEND_BATCH`` before looking at the queue again, so
        a panic or stop is not kept waiting behind a backlog."""
        heap = self._heap
        now = self._now_ns
        pop = heapq.heappop
        for _ in range(SEND_BATCH):
            if not heap or heap[0][0] > now():
                return
            send_ns, _, _, port_name, message, tick_run = pop(heap)
            t = now()
            if tick_run:
                if tick_run != self._clock_run:
                    continue  # a tick of a clock since stopped
                self._next_tick()
            elif t - send_ns > self._drop_after_ns and is_note_on(message):
                self._dropped += 1  # far behind: skip it rather than burst
                continue
            self._send(port_name, message, t - send_ns)

    def _send(self, port_name: str, message: bytes, late_ns: int) -> None:
        if port_name in self._broken:
            self._lost[port_name] += 1
            self._maybe_reopen(port_name)
            return
        try:
            self._ports[port_name].send(message)
        except Exception as exc:  # never raise here: count, mark, reopen later
            self._errors[port_name] += 1
            self._lost[port_name] += 1
            self._mark_broken(port_name, exc)
            return
        self._ring[self._sent & self._ring_mask] = late_ns
        self._sent += 1
        if late_ns > self._late_threshold_ns:
            self._late += 1

    def _send_now(self, port_name: str, message: bytes) -> None:
        self._send(port_name, message, 0)

    def _mark_broken(self, port_name: str, exc: BaseException) -> None:
        if port_name not in self._broken:
            log.warning("MIDI port %r failed (%s); its messages are lost until it is "
                        "reopened by name (tried every %.1f s)", port_name, exc,
                        self._reopen_interval_ns / NS_PER_S)
            self._broken[port_name] = self._now_ns() - self._reopen_interval_ns
        self._maybe_reopen(port_name)

    def _maybe_reopen(self, port_name: str) -> None:
        last = self._broken.get(port_name)
        if last is None or port_name in self._reopening:
            return
        now = self._now_ns()
        if now - last < self._reopen_interval_ns:
            return
        self._broken[port_name] = now
        self._reopening.add(port_name)
        threading.Thread(target=self._reopen, args=(port_name,), daemon=True,
                         name=f"encore-midi-reopen-{port_name}").start()

    def _reopen(self, port_name: str) -> None:
        """On a helper thread: opening a device can take tens of ms."""
        try:
            self._ports[port_name].reopen()
        except Exception as exc:
            log.debug("MIDI port %r: reopen failed: %s", port_name, exc)
        else:
            self._reopened[port_name] += 1
            self._broken.pop(port_name, None)
            log.warning("MIDI port %r reopened", port_name)
        finally:
            self._reopening.discard(port_name)

    def _command(self, command: _Command) -> bool:
        """Run a command on the sender thread (or here, when it is not running)."""
        try:
            if command.kind == _PANIC:
                self._panic_here()
            elif command.kind == _STOP:
                self._halt_clock()
                self._panic_here()
                return True
            elif command.kind == _CLOCK_START:
                self._clock_start(*command.args)
            elif command.kind == _CLOCK_STOP:
                self._halt_clock()
            elif command.kind == _RETIME:
                self._retime_here(*command.args)
            elif command.kind == _MISSING:
                name = command.args[0]
                if name in self._ports:
                    self._mark_broken(name, ConnectionError("its device went away"))
            return False
        finally:
            command.done.set()

    def _retime_here(self, warp: Warp) -> None:
        """Move every event due after the warp's start (sender thread)."""
        heap = self._heap
        latency = self._latency_ns
        moved = 0
        for i, (send_ns, order, seq, port_name, message, tick_run) in enumerate(heap):
            if tick_run:
                if tick_run != self._clock_run:
                    continue  # a tick of a stopped clock: skipped when due
                beat = self._clock_beat0 + self._clock_tick / PPQN  # the one tick pending
                new = self.clock.beat_to_ns(beat) - latency[port_name]
            else:
                deadline = send_ns + latency[port_name]
                if deadline <= warp.from_ns:
                    continue
                new = warp(deadline) - latency[port_name]
            if new != send_ns:
                heap[i] = (new, order, seq, port_name, message, tick_run)
                moved += 1
        heapq.heapify(heap)
        self._retimes += 1
        self._retimed += moved

    def _panic_here(self) -> None:
        heap = self._heap
        heap[:] = [e for e in heap if not is_note_on(e[4])]
        heapq.heapify(heap)
        self._panics += 1
        self._silence_ports()

    def _silence_ports(self) -> None:
        for name, port in self._ports.items():
            if name in self._broken:
                continue  # its notes are silenced when it is reopened
            try:
                port.silence()
            except Exception as exc:
                self._errors[name] += 1
                self._mark_broken(name, exc)

    # -- MIDI clock (sender thread) ----

    def _halt_clock(self) -> None:
        """MIDI Stop now, if the clock runs; its pending tick is ignored from now on."""
        if self._clock_running:
            self._clock_running = False
            self._send_now(self._clock_port, MIDI_STOP)
        self._clock_run += 1

    def _clock_start(self, port_name: str, from_bar: int) -> None:
        self._halt_clock()
        self._clock_running = True
        run = self._clock_run
        latency = self._latency_ns[port_name]
        self._clock_port = port_name
        self._clock_beat0 = float(from_bar * BEATS_PER_BAR)
        self._clock_tick = 0
        t0 = self.clock.bar_start_ns(from_bar) - latency
        heap = self._heap
        if from_bar == 0:
            heapq.heappush(heap, (t0, 1, next(self._seq), port_name, MIDI_START, 0))
        else:
            position = from_bar * 16
            if position > MAX_SONG_POSITION:
                log.warning("MIDI song position %d is past 14 bits; sending %d", position,
                            position & MAX_SONG_POSITION)
                position &= MAX_SONG_POSITION
            spp = bytes((SONG_POSITION, position & 0x7F, position >> 7))
            self._send_now(port_name, spp)
            heapq.heappush(heap, (t0, 1, next(self._seq), port_name, MIDI_CONTINUE, 0))
        heapq.heappush(heap, (t0, 1, next(self._seq), port_name, MIDI_CLOCK, run))

    def _next_tick(self) -> None:
        """Push the tick after the one being sent: computed from the tempo map."""
        self._ticks += 1
        self._clock_tick += 1
        beat = self._clock_beat0 + self._clock_tick / PPQN
        send_ns = self.clock.beat_to_ns(beat) - self._latency_ns[self._clock_port]
        heapq.heappush(self._heap, (send_ns, 1, next(self._seq), self._clock_port, MIDI_CLOCK,
                                    self._clock_run))
