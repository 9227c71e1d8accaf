"""The stage dashboard: what the show is doing, in the terminal, and four keys to steer it.

    encore live --dashboard          # when stdout is a terminal

A rich ``Live`` display, about four frames a second (the dashboard's thread reads the
show's state; a process of its own draws it, see below):

- bar and beat (from the show's clock), tempo and where it comes from (the internal clock,
  MIDI clock in, Ableton Link), the walk frozen or not;
- the section, the bar in it of its length, the pass, the next section; the lyric line
  last written and the theme;
- a picture of the latent walk: the last 32 bars' z vectors projected on their first two
  principal directions, a dot trail in a text grid (``@`` now, ``o`` the last bars, ``.``
  older, ``+`` the section's anchor);
- each part: where it plays (a MIDI port or the built-in synth), notes in the bar, level,
  mute;
- health: the generation's last time and its budget (the bars composed ahead), the vocal
  render margin, MIDI lateness p99 (the sender's own stamps), audio underruns, OSC
  messages taken and refused, and the last log lines.

Keys (the terminal in cbreak mode while the dashboard runs, restored after): ``p`` panic,
``n`` next section, ``f`` freeze on/off, ``q`` quit. A key becomes the same
:class:`~engine.live.osc_control.Command` a tablet's message becomes (built from the OSC
table, so it lands when the table says: panic now, the others on the next bar) and is
handed to the show's command path on the show's event loop
(``loop.call_soon_threadsafe(show.on_command, command)``); ``q`` calls ``show.stop()``
there.

It costs the timing as little as it can. Drawing is Python (rich: ~2 ms a frame here,
over 10 ms on a busy machine) and would hold the GIL that the MIDI sender's thread and
the audio callback need at every send and every block; so a process of its own draws
(niced, Ctrl-C ignored: it ends with the show). The dashboard's thread in the show's
process only reads the state into a :class:`StageView` (~0.5 ms, the figures that cost
something to compute at most once a second or once a bar) and sends it down a pipe, in a
stretch of the beat where no MIDI message is due (:class:`QuietWindows`: between the
grid's 16th notes, humanizing and port latencies allowed for); it never runs on the MIDI
sender's thread or in the audio callback. The show calls :meth:`Dashboard.on_bar` after
each bar (pass it as the show's ``on_bar``; it only keeps the bar's note counts and its
z). ``benchmarks/bench_dashboard_timing.py`` measures what is left: MIDI lateness and
audio underruns with the dashboard on and off in one show.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from engine.live.osc_control import Command
from engine.live.osc_table import TABLE
from engine.live.show_view import ShowView

REFRESH_HZ = 4.0
HEALTH_EVERY_S = 1.0
TRAIL_BARS = 32
GRID_W, GRID_H = 29, 9
MESSAGES_KEPT = 3
BAD_OSC = ("bad_parse", "unknown_address", "bad_types", "out_of_range", "not_allowed",
           "too_large", "too_many_elements")
KEY_HELP = "[p] panic  [n] next section  [f] freeze  [q] quit"
MIDI_LATE_MS = 3.0  # the sender's "late" threshold
DRAW_NICENESS = 5  # the drawing process yields the CPU to the show's workers


# ---- what is shown -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PartRow:
    name: str
    where: str
    notes: int | None  # in the bar playing (None: not known yet)
    level: float
    muted: bool


@dataclass(frozen=True, slots=True)
class HealthView:
    gen_last_ms: float = 0.0
    gen_budget_ms: float = 0.0
    fallbacks: int = 0
    restarts: int = 0
    vocal: str = ""            # "" when nothing is sung
    vocal_bad: bool = False
    midi_p99_ms: float | None = None  # None: no MIDI port
    midi_late: int = 0
    midi_dropped: int = 0
    ports_lost: int = 0
    underruns: int | None = None  # None: no audio output
    osc_good: int | None = None   # None: no OSC server
    osc_bad: int = 0
    osc_replies_dropped: int = 0  # state requests over the reply budget (a client floods)


@dataclass(frozen=True, slots=True)
class StageView:
    """Everything the dashboard shows, read from the show at one moment."""

    title: str
    started: bool
    bar: int        # counted from 1, as the tablet's label; 0 before the first bar
    beat: int       # 1..4
    tempo: float
    sync: str
    frozen: bool
    freeze_pending: bool
    section: str
    bar_in_section: int  # counted from 1
    section_bars: int
    pass_number: int     # counted from 1
    next_section: str
    lyric: str
    theme: str
    parts: tuple[PartRow, ...]
    master: float
    voice: str
    trail: tuple[tuple[float, float], ...]  # oldest first, in [-1, 1]
    anchor: tuple[float, float] | None
    health: HealthView
    messages: tuple[str, ...] = ()
    last_action: str = ""


@dataclass
class _Bar:
    index: int
    notes: dict[str, int]


@dataclass
class _Projection:
    """The trail's 2-D picture, recomputed once a bar (signs kept from bar to bar)."""

    basis: np.ndarray | None = None
    key: tuple[int, ...] = ()
    trail: tuple[tuple[float, float], ...] = ()
    anchor: tuple[float, float] | None = None
    history: collections.deque = field(
        default_factory=lambda: collections.deque(maxlen=TRAIL_BARS))


class _Messages(logging.Handler):
    """Log records into a short list the dashboard shows (cheap for the thread logging)."""

    def __init__(self, keep: int = MESSAGES_KEPT) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(f"{time.strftime('%H:%M:%S')} {record.levelname.lower()}: "
                              f"{record.getMessage()}")


# ---- the dashboard ---------------------------------------------------------------------------
class Dashboard:
    """A live view of ``show`` with keys; ``start(loop)`` runs it on its own thread.

    Where it draws: without ``console``, a drawing process of its own (see the module's
    notes) draws on the terminal, or into the file ``output`` as if it were one; with a
    ``console``, the thread draws on it itself (tests, or to measure the difference).
    ``keys`` reads keys from ``stdin`` (a file descriptor or file; default ``sys.stdin``)
    when that is a terminal; ``capture_logs`` shows log lines in the dashboard instead of
    letting them scroll over it (the root logger's handlers are put back on stop);
    ``between_sends`` takes each frame in a stretch of the beat where no MIDI message is
    due (:class:`QuietWindows`; off only to measure what that buys).
    """

    def __init__(self, show: Any, loop: asyncio.AbstractEventLoop | None = None, *,
                 console: Console | None = None, refresh_hz: float = REFRESH_HZ,
                 keys: bool = True, stdin: int | TextIO | None = None,
                 capture_logs: bool = False, between_sends: bool = True,
                 output: str | None = None) -> None:
        if refresh_hz <= 0:
            raise ValueError(f"refresh_hz must be positive, got {refresh_hz}")
        self.show = show  # steered through its command path only (keys)
        self.reading = ShowView(show)  # and read through this
        self.loop = loop
        self.console = console
        self.output = output
        self.period_s = 1.0 / refresh_hz
        self.keys = keys
        self._stdin = sys.stdin if stdin is None else stdin
        self.capture_logs = capture_logs
        self.between_sends = between_sends
        self.last_action = ""
        self.render_ms: collections.deque[float] = collections.deque(maxlen=512)
        self.errors = 0
        self._bars: collections.deque[_Bar] = collections.deque(maxlen=8)
        self._projection = _Projection()
        self._health = HealthView()
        self._health_at = -math.inf
        self._messages = _Messages()
        self._saved_handlers: list[logging.Handler] | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._drawer: Any = None  # the drawing process
        self._pipe: Any = None    # the end frames are sent into

    # -- fed by the show (its loop thread, right after a bar is pushed) ---------------------
    def on_bar(self, show: Any, bar: Any) -> None:
        """Keep the bar's note counts per part and its z (a few dict writes: nothing more
        runs on the show's loop)."""
        z, anchor = self.reading.latent()
        self._bars.append(_Bar(bar.index, {p: len(n) for p, n in bar.parts.items()}))
        if z is not None:
            self._projection.history.append((bar.index, z, anchor))

    # -- reading the show (any thread) --------------------------------------------------------
    def view(self) -> StageView:
        """The show's state now, as the dashboard shows it."""
        show = self.reading
        bar = beat = 0
        now = show.now_beat()
        started = now is not None and show.bar_index >= 0
        if now is not None and now >= 0:
            bar, beat = math.floor(now / 4) + 1, math.floor(now % 4) + 1
        position = show.position()
        frozen = show.frozen
        waiting = show.freeze_waiting()
        self._record_latent(show)
        trail, anchor = self._trail()
        if time.monotonic() - self._health_at >= HEALTH_EVERY_S:
            self._health = _health(show)
            self._health_at = time.monotonic()
        return StageView(
            title=show.patch.song.title, started=started, bar=bar, beat=beat,
            tempo=show.tempo, sync=show.sync(), frozen=frozen,
            freeze_pending=waiting is not None and waiting != frozen,
            section=position.section if position else show.section or "-",
            bar_in_section=position.bar_in_section + 1 if position else 0,
            section_bars=position.section_bars if position else 0,
            pass_number=position.pass_number + 1 if position else 0,
            next_section=position.next_section if position else "-",
            lyric=show.lyric, theme=show.theme, parts=self._parts(show, bar - 1),
            master=show.master, voice=show.voice(), trail=trail, anchor=anchor,
            health=self._health, messages=tuple(self._messages.lines),
            last_action=self.last_action)

    def _parts(self, show: ShowView, playing: int) -> tuple[PartRow, ...]:
        bars = list(self._bars)  # one copy: the loop thread appends meanwhile
        record = next((b for b in reversed(bars) if b.index <= playing), None)
        return tuple(PartRow(part, where, record.notes.get(part, 0) if record else None,
                             level, mute) for part, where, level, mute in show.parts())

    def _record_latent(self, show: ShowView) -> None:
        """Without on_bar calls, take the walk's point once per bar from here."""
        bar = show.bar_index
        if self._bars or bar < 0:  # on_bar keeps the history
            return
        history = self._projection.history
        if history and history[-1][0] == bar:
            return
        z, anchor = show.latent()
        if z is not None:
            history.append((bar, z, anchor))

    def _trail(self) -> tuple[tuple[tuple[float, float], ...], tuple[float, float] | None]:
        projection = self._projection
        history = list(projection.history)  # appended to by the loop thread meanwhile
        key = tuple(index for index, _, _ in history)
        if key != projection.key:
            projection.key = key
            points = np.array([z for _, z, _ in history], dtype=np.float64)
            anchor = history[-1][2] if history else None
            projection.trail, projection.anchor, projection.basis = project(
                points, anchor, projection.basis)
        return projection.trail, projection.anchor

    # -- keys ---------------------------------------------------------------------------------
    def handle_key(self, key: str) -> str | None:
        """Act on one key (from any thread); returns what was done, None for other keys."""
        key = key.lower()
        if key == "p":
            done = self._command_to_show(lambda: self._command("/encore/panic"),
                                         "panic: every note off")
        elif key == "n":
            done = self._command_to_show(lambda: self._command("/encore/section/next"),
                                         "next section (from the next bar composed)")
        elif key == "f":
            done = self._command_to_show(self._freeze_command,
                                         "freeze on/off (from the next bar)")
        elif key == "q":
            done = self._call(self.show.stop, "stopping: every note is released")
        else:
            return None
        self.last_action = done
        return done

    def _command(self, address: str, tags: str = "", args: tuple = ()) -> Command:
        """The Command a tablet's message to ``address`` would make (checked by the table)."""
        control = TABLE[address]
        values = control.accept(tags, args)
        assert values is not None
        return Command(control.target, values, control.lands, control.address,
                       time.monotonic_ns())

    def _freeze_command(self) -> Command:
        """Runs on the show's loop: the opposite of the freeze the show will have (the last
        freeze still pending, else the walk's), so two quick presses undo each other."""
        waiting = self.reading.freeze_waiting()
        frozen = waiting if waiting is not None else self.reading.frozen
        return self._command("/encore/walk/freeze", "i", (int(not frozen),))

    def _command_to_show(self, make: Callable[[], Command], done: str) -> str:
        """``make()`` runs on the show's loop and its Command goes where a tablet's go."""
        return self._call(lambda: self.show.on_command(make()), done)

    def _call(self, action: Callable[[], None], done: str) -> str:
        loop = self.loop
        if loop is None or loop.is_closed():
            return "the show is not running"
        try:
            loop.call_soon_threadsafe(action)
        except RuntimeError:  # the loop closed just now
            return "the show is not running"
        return done

    # -- drawing ------------------------------------------------------------------------------
    def render(self, view: StageView | None = None) -> RenderableType:
        """The dashboard as one rich renderable (print it to any Console)."""
        return render_view(view or self.view())

    # -- the thread ---------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> Dashboard:
        """Start drawing (and reading keys) on a thread of its own; ``loop`` is the show's
        event loop, where key actions go."""
        if self._thread is not None:
            raise RuntimeError("the dashboard is already running")
        if loop is not None:
            self.loop = loop
        if self.capture_logs:
            root = logging.getLogger()
            self._saved_handlers = root.handlers[:]
            root.handlers = [self._messages]
        self._stop.clear()
        if self.console is None:
            self._start_drawer()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="encore-dashboard", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop drawing (the last frame stays on screen); the terminal is restored."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
            thread.join(timeout)
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._stop_drawer(timeout)
        if self._saved_handlers is not None:
            logging.getLogger().handlers = self._saved_handlers
            self._saved_handlers = None

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        fd = self._key_fd()
        quiet: QuietWindows | None = None  # known once the show has opened its ports
        with _cbreak(fd), self._live() as live:
            next_frame = time.monotonic()
            while True:
                self._wait(fd, next_frame)
                stopping = self._stop.is_set()
                if quiet is None and self.reading.started and self.between_sends:
                    quiet = QuietWindows.for_show(self.reading)
                # drawn here, the last frame is drawn twice (by us, by Live as it stops)
                frames = 2 if stopping and live is not None else 1
                self._wait_quiet(fd, quiet, frames)
                self._draw(live)
                if stopping:
                    break
                next_frame = max(next_frame + self.period_s, time.monotonic())
            self._send(None)  # the drawing process draws its last frame and ends

    @contextlib.contextmanager
    def _live(self) -> Iterator[Live | None]:
        """Live on this thread's console, or None when a drawing process draws."""
        if self.console is None:
            yield None
            return
        # No renderable yet: Live would draw it on entry, at a moment not chosen here.
        with Live(console=self.console, auto_refresh=False, redirect_stdout=False,
                  redirect_stderr=False) as live:
            yield live

    def _draw(self, live: Live | None) -> None:
        """One frame: drawn here, or the view sent to the drawing process."""
        began = time.perf_counter()
        try:
            if live is not None:
                live.update(self._frame(), refresh=True)
            else:
                self._send(self.view())
        except Exception:  # noqa: BLE001 - the dashboard must never stop the show
            self.errors += 1
        self.render_ms.append(1000 * (time.perf_counter() - began))

    # -- the drawing process ----------------------------------------------------------------
    def _start_drawer(self) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        receive, self._pipe = context.Pipe(duplex=False)
        self._drawer = context.Process(target=draw_frames, args=(receive, self.output),
                                       name="encore-dashboard-draw", daemon=True)
        self._drawer.start()
        receive.close()

    def _send(self, view: StageView | None) -> None:
        if self._pipe is None:
            return
        try:
            self._pipe.send(view)
        except (OSError, ValueError):  # the drawing process is gone: draw nothing more
            self._pipe = None
            self.errors += 1

    def _stop_drawer(self, timeout: float) -> None:
        process, self._drawer = self._drawer, None
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.close()
            self._pipe = None
        if process is None:
            return
        process.join(timeout)
        if process.is_alive():
            process.terminate()
            process.join(1.0)

    def _wait_quiet(self, fd: int | None, quiet: QuietWindows | None, frames: int) -> None:
        """Wait (reading keys) for the next stretch between the grid's MIDI sends that
        fits ``frames`` frames; checked again on waking, as a loaded machine wakes late."""
        clock = self.reading
        if quiet is None or not clock.started:
            return
        for _ in range(3):
            now = time.monotonic_ns()
            delay_s = (quiet.next_start(clock, now, frames * self._frame_ns()) - now) / 1e9
            if delay_s <= 0:
                return
            if self._stop.is_set():
                time.sleep(delay_s)
            else:
                self._wait(fd, time.monotonic() + delay_s)

    def _frame_ns(self) -> int:
        """Room for a frame: twice the slowest of the last 32, plus 2 ms (a busy machine
        draws slower, and the gaps between the grid's sends are far longer)."""
        recent = list(self.render_ms)[-32:]
        return int(1e6 * (2 * max(recent, default=2.0) + 2.0))

    def _frame(self) -> RenderableType:
        try:
            return self.render()
        except Exception as err:  # noqa: BLE001 - the dashboard must never stop the show
            self.errors += 1
            return Text(f"dashboard error: {type(err).__name__}: {err}", style="red")

    def _key_fd(self) -> int | None:
        if not self.keys:
            return None
        try:
            fd = self._stdin if isinstance(self._stdin, int) else self._stdin.fileno()
        except (AttributeError, OSError, ValueError):
            return None
        return fd if os.isatty(fd) else None

    def _wait(self, fd: int | None, until: float) -> None:
        """Until ``until`` (monotonic seconds): act on keys as they come (or sleep); woken
        early by stop()."""
        while (remaining := until - time.monotonic()) > 0 and not self._stop.is_set():
            watched = [self._wake_r] + ([fd] if fd is not None else [])
            ready, _, _ = select.select(watched, [], [], remaining)
            if fd is not None and fd in ready:
                try:
                    data = os.read(fd, 64)
                except OSError:
                    return
                for key in data.decode("utf-8", "replace"):
                    self.handle_key(key)
            if self._wake_r in ready:
                return


def draw_frames(frames: Any, output: str | None = None) -> None:
    """The drawing process: draw each StageView that comes through ``frames`` (a pipe's
    receiving end) on the terminal (or into the file ``output``, as if a terminal) until
    None or the pipe's end. Ctrl-C is the show's to handle; this process ends with it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        os.nice(DRAW_NICENESS)
    with contextlib.ExitStack() as stack:
        if output:
            file = stack.enter_context(open(output, "w", encoding="utf-8"))  # noqa: SIM115
            console = Console(file=file, force_terminal=True, width=120, height=50)
        else:
            console = Console()
        live = stack.enter_context(Live(console=console, auto_refresh=False,
                                        redirect_stdout=False, redirect_stderr=False))
        while True:
            try:
                view = frames.recv()
            except (EOFError, OSError):
                break
            if view is None:
                break
            try:
                frame: RenderableType = render_view(view)
            except Exception as err:  # noqa: BLE001 - a bad frame is shown, not fatal
                frame = Text(f"dashboard error: {type(err).__name__}: {err}", style="red")
            live.update(frame, refresh=True)


@contextlib.contextmanager
def _cbreak(fd: int | None) -> Iterator[None]:
    """The terminal in cbreak mode (keys arrive one by one, unechoed; Ctrl-C still
    interrupts), and back as it was on every way out."""
    if fd is None:
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# ---- when to draw ------------------------------------------------------------------------------
class QuietWindows:
    """Where in each 16th step of the grid no MIDI message is due, so a frame drawn there
    keeps the GIL from the MIDI sender's thread at no moment it needs it.

    Every note-on and note-off lies on the grid, moved by humanizing (at most
    ``min(timing_ms, a quarter step)``) and sent earlier by its port's latency offset; MIDI
    clock ticks come six to a step. Around each of those the sender is busy from
    ``BEFORE_MS`` before (it wakes 1 ms early and may wait a GIL switch) to ``AFTER_MS``
    after. The rest of the step is quiet; :meth:`next_start` gives the first moment from
    which a frame of a given length fits in a quiet stretch. It is a pure function of the
    tempo and these settings, kept per step length (1 ms resolution).
    """

    BEFORE_MS = 2.0
    AFTER_MS = 1.0

    def __init__(self, humanize_ms: float = 0.0, latencies_ms: tuple[float, ...] = (0.0,),
                 clock_out_latency_ms: float | None = None) -> None:
        self.humanize_ms = humanize_ms
        self.latencies_ms = tuple(latencies_ms) or (0.0,)
        self.clock_out_latency_ms = clock_out_latency_ms
        self._busy: tuple[int, np.ndarray] | None = None

    @classmethod
    def for_show(cls, show: ShowView) -> QuietWindows:
        """The windows for a show's patch and the ports its parts play on."""
        midi = show.patch.midi

        def latency(name: str) -> float:
            return next((ms for key, ms in midi.latency_ms.items()
                         if key.lower() in name.lower()), 0.0)

        ports = show.part_ports
        return cls(show.patch.humanize.timing_ms,
                   tuple(sorted({latency(name) for name in ports})) or (0.0,),
                   latency(midi.clock_out) if midi.clock_out else None)

    def busy(self, step_ms: int) -> np.ndarray:
        """Per millisecond of a step (``step_ms`` long): True where the sender may be busy."""
        if self._busy is not None and self._busy[0] == step_ms:
            return self._busy[1]
        spread = min(self.humanize_ms, step_ms / 4)
        spans = [(-latency - spread, -latency + spread) for latency in self.latencies_ms]
        if self.clock_out_latency_ms is not None:
            spans += [(k * step_ms / 6 - self.clock_out_latency_ms,) * 2 for k in range(6)]
        busy = np.zeros(step_ms, dtype=bool)
        at = np.arange(step_ms)
        for low, high in spans:
            low, high = low - self.BEFORE_MS, high + self.AFTER_MS
            offset = (at - low) % step_ms  # distance past the span's start, on the circle
            busy |= offset <= (high - low)
        self._busy = (step_ms, busy)
        return busy

    def next_start(self, clock: Any, now_ns: int, frame_ns: int) -> int:
        """The first time (monotonic ns) from ``now_ns`` at which a frame of ``frame_ns``
        falls in a quiet stretch; ``now_ns`` itself when there is no clock yet, or when no
        stretch of the step is long enough (the frame is then drawn anyway)."""
        if clock is None:
            return now_ns
        beat = clock.ns_to_beat(now_ns)
        step_ns = 60e9 / clock.bpm_at(beat) / 4
        step_ms = max(1, int(step_ns / 1e6))
        busy = self.busy(step_ms)
        need = max(1, math.ceil(frame_ns / 1e6))
        if need >= step_ms:
            return now_ns
        free = ~busy
        # fits[i]: the frame may start at millisecond i of the step (its span is all free)
        fits = np.ones(step_ms, dtype=bool)
        for k in range(need + 1):
            fits &= np.roll(free, -k)
        if not fits.any():
            return now_ns
        phase_ms = (beat * 4 % 1) * step_ns / 1e6
        start = math.ceil(phase_ms)
        order = (start + np.arange(step_ms)) % step_ms
        first = int(np.argmax(fits[order]))
        wait_ms = start + first - phase_ms
        if fits[int(phase_ms) % step_ms] and fits[start % step_ms]:
            wait_ms = 0.0
        return now_ns + int(wait_ms * 1e6)


# ---- the health figures ----------------------------------------------------------------------
def _health(show: ShowView) -> HealthView:
    """The health figures (once a second: the percentiles cost a little)."""
    counts = show.counts()
    values: dict[str, Any] = {"fallbacks": counts.fallbacks, "ports_lost": counts.ports_lost}
    generation = show.generation()
    if generation is not None and show.started:
        values |= {"gen_last_ms": 1000 * generation[0],
                   "gen_budget_ms": show.lookahead_bars() * 240_000 / show.tempo,
                   "restarts": generation[1]}
    vocal = show.vocal()
    if vocal is not None:
        margins, sung, missed, failed = vocal
        margin = (f"margin {margins[-1]:.0f} ms (min {min(margins):.0f})" if margins
                  else "margin -")
        values |= {"vocal": f"{margin}, sung {sung}, missed {missed}"
                            + (f", failed {failed}" if failed else ""),
                   "vocal_bad": bool(missed or failed)}
    stats = show.midi_stats()
    if stats is not None:
        values |= {"midi_p99_ms": stats["lateness"]["p99_us"] / 1000,
                   "midi_late": stats["late"], "midi_dropped": stats["dropped"]}
    if show.has_audio:
        values["underruns"] = counts.underruns
    osc = show.osc_stats()
    if osc is not None:
        values |= {"osc_good": osc.get("good", 0),
                   "osc_bad": sum(osc.get(k, 0) for k in BAD_OSC),
                   "osc_replies_dropped": osc.get("replies_dropped", 0)}
    return HealthView(**values)


# ---- the latent picture ------------------------------------------------------------------------
def project(points: np.ndarray, anchor: np.ndarray | None = None,
            previous: np.ndarray | None = None
            ) -> tuple[tuple[tuple[float, float], ...], tuple[float, float] | None,
                       np.ndarray | None]:
    """``points`` (N, Z) on their first two principal directions, scaled into [-1, 1].

    Returns (trail, anchor's point or None, the basis (2, Z)). Each direction's sign is
    chosen to agree with ``previous`` (the last call's basis), so the picture does not
    flip from one bar to the next. Fewer than two points (or no spread) give the points at
    the centre.
    """
    if len(points) == 0:
        return (), None, previous
    mean = points.mean(axis=0)
    centred = points - mean
    if len(points) < 2 or not np.any(centred):
        return tuple((0.0, 0.0) for _ in points), None, previous
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    basis = vt[:2] if len(vt) >= 2 else np.vstack([vt[:1], np.zeros_like(vt[:1])])
    if previous is not None and previous.shape == basis.shape:
        signs = np.where(np.sum(basis * previous, axis=1) < 0, -1.0, 1.0)
        basis = basis * signs[:, None]
    xy = centred @ basis.T
    anchor_xy = (anchor - mean) @ basis.T if anchor is not None else None
    scale = float(np.abs(xy).max()) or 1.0
    if anchor_xy is not None:
        scale = max(scale, float(np.abs(anchor_xy).max()))
    trail = tuple((float(x / scale), float(y / scale)) for x, y in xy)
    anchor_point = (float(anchor_xy[0] / scale), float(anchor_xy[1] / scale)) \
        if anchor_xy is not None else None
    return trail, anchor_point, basis


def trail_grid(trail: tuple[tuple[float, float], ...], anchor: tuple[float, float] | None,
               width: int = GRID_W, height: int = GRID_H) -> list[str]:
    """The trail as text: ``@`` the last point, ``o`` the 7 before, ``.`` older ones,
    ``+`` the anchor (under the trail)."""
    grid = [[" "] * width for _ in range(height)]

    def cell(x: float, y: float) -> tuple[int, int]:
        col = round((x + 1) / 2 * (width - 1))
        row = round((1 - (y + 1) / 2) * (height - 1))
        return min(max(row, 0), height - 1), min(max(col, 0), width - 1)

    if anchor is not None:
        row, col = cell(*anchor)
        grid[row][col] = "+"
    n = len(trail)
    for k, (x, y) in enumerate(trail):
        row, col = cell(x, y)
        mark = "@" if k == n - 1 else "o" if k >= n - 8 else "."
        if grid[row][col] in (" ", "+", ".") or mark == "@":
            grid[row][col] = mark
    return ["".join(row) for row in grid]


# ---- drawing ------------------------------------------------------------------------------------
# Plain styled lines, no rich Tables or Panels: laying those out costs ~5 ms of Python a
# frame, held under the GIL that the MIDI sender's thread needs; these cost ~1 ms.
LEFT_W = 72  # the song and parts column; the latent picture is to its right


def render_view(view: StageView) -> RenderableType:
    """A StageView as one rich renderable that fits the console's width: the header; song
    and parts, with the latent walk to their right when there is room (``WIDE`` columns),
    else at the bottom (where a short terminal crops it first); health; keys and the last
    log lines."""
    return _Frame(view)


WIDE = LEFT_W + GRID_W + 4


class _Frame:
    def __init__(self, view: StageView) -> None:
        self.view = view

    def __rich_console__(self, console: Console, options: Any) -> Iterator[Text]:
        view = self.view
        wide = options.max_width >= WIDE
        rule = Text("─" * min(options.max_width, WIDE), style="dim")
        left = [*_song_lines(view), Text(""), *_part_lines(view)]
        latent = _latent_lines(view)
        rows = [_header(view), rule]
        if wide:
            for k in range(max(len(left), len(latent))):
                line = left[k].copy() if k < len(left) else Text("")
                line.truncate(LEFT_W, overflow="ellipsis", pad=True)
                rows.append(Text.assemble(line, "  ", latent[k] if k < len(latent) else ""))
        else:
            rows += [*left, Text("")]
        rows += _health_lines(view.health)
        rows.append(rule)
        rows.append(Text.assemble((KEY_HELP, "bold"), "   ",
                                  (view.last_action, "yellow") if view.last_action else ""))
        rows += [Text(line, style="dim") for line in view.messages]
        if not wide:
            rows += latent
        for row in rows:
            row.no_wrap, row.overflow = True, "ellipsis"
            yield row


def _header(view: StageView) -> Text:
    header = Text.assemble(("ENCORE ", "bold magenta"), (view.title, "bold"), "   ")
    if view.started and view.bar > 0:
        header.append(f"bar {view.bar}", "bold cyan")
        header.append(f"  beat {view.beat} " + "".join(
            "●" if k < view.beat else "○" for k in range(4)), "cyan")
    else:
        header.append("starting...", "yellow")
    header.append(f"   {view.tempo:.1f} BPM", "bold")
    header.append(f" ({view.sync})")
    if view.frozen:
        header.append("   FROZEN", "bold blue")
        if view.freeze_pending:
            header.append(" (thawing at the next bar)", "blue")
    elif view.freeze_pending:
        header.append("   freezing at the next bar", "blue")
    return header


def _field(name: str, *value: str | tuple[str, str]) -> Text:
    return Text.assemble((f" {name:<11}", "dim"), *value)


def _song_lines(view: StageView) -> list[Text]:
    return [
        _field("section", (view.section, "bold green"),
               f"  bar {view.bar_in_section}/{view.section_bars}  pass {view.pass_number}"
               f"   next {view.next_section}"),
        _field("theme", view.theme or "(free)"),
        _field("lyric", (view.lyric or "-", "italic")),
        _field("voice", f"{view.voice}   master {view.master:.2f}"),
    ]


def _part_lines(view: StageView) -> list[Text]:
    lines = [Text(f" {'part':<8} {'plays on':<22} {'notes':>5}  {'':<12} level", style="dim")]
    for row in view.parts:
        where = row.where if len(row.where) <= 22 else row.where[:21] + "…"
        notes = "-" if row.notes is None else str(row.notes)
        filled = round(8 * row.level)
        lines.append(Text.assemble(
            f" {row.name:<8} {where:<22} {notes:>5}  ",
            ("▮" * min(row.notes or 0, 12) + " " * (12 - min(row.notes or 0, 12)), "green"),
            f" {'█' * filled}{'░' * (8 - filled)} {row.level:.2f}",
            ("  MUTE", "bold red") if row.muted else ""))
    return lines


def _health_lines(h: HealthView) -> list[Text]:
    def line(name: str, text: str, bad: bool) -> Text:
        return _field(name, (text, "bold red" if bad else "green"))

    lead = h.gen_budget_ms - h.gen_last_ms
    lines = [line("generation", f"last bar {h.gen_last_ms:.0f} ms of a {h.gen_budget_ms:.0f} "
                  f"ms budget (lead ~{lead / 1000:.1f} s); fallback bars {h.fallbacks}"
                  + (f", worker restarts {h.restarts}" if h.restarts else ""),
                  h.fallbacks > 0 or lead < 0)]
    if h.vocal:
        lines.append(line("voice", h.vocal, h.vocal_bad))
    if h.midi_p99_ms is not None:
        lines.append(line("MIDI", f"lateness p99 {h.midi_p99_ms:.2f} ms; late {h.midi_late}, "
                          f"dropped {h.midi_dropped}"
                          + (f", ports lost {h.ports_lost}" if h.ports_lost else ""),
                          h.midi_p99_ms > MIDI_LATE_MS or h.midi_dropped > 0
                          or h.ports_lost > 0))
    if h.underruns is not None:
        lines.append(line("audio", f"underruns {h.underruns}", h.underruns > 0))
    if h.osc_good is not None:
        lines.append(line("OSC", f"good {h.osc_good}, bad {h.osc_bad}"
                          + (f", replies held back {h.osc_replies_dropped} (a client asks "
                             "too often)" if h.osc_replies_dropped else ""),
                          h.osc_bad > 0 or h.osc_replies_dropped > 0))
    return lines


def _latent_lines(view: StageView) -> list[Text]:
    title = f" latent walk, {len(view.trail)} bars "
    top = "┌" + title + "─" * max(0, GRID_W - len(title)) + "┐"
    if len(view.trail) >= 2:
        body = trail_grid(view.trail, view.anchor)
    else:
        body = [" (after two bars)".ljust(GRID_W)] + [" " * GRID_W] * (GRID_H - 1)
    return [Text(top, style="dim"), *(Text.assemble(("│", "dim"), (row, "cyan"), ("│", "dim"))
                                      for row in body),
            Text("└" + "─" * GRID_W + "┘", style="dim")]


# ---- running a show with it ---------------------------------------------------------------------
def run_with_dashboard(patch: Any, *, console: Console | None = None,
                       **show_kwargs: Any) -> Any:
    """Run a show (as :func:`engine.live.show.run_show`) with the dashboard on; returns the
    show's health. Log lines go to the dashboard while it runs."""
    from engine.live.show import Show

    dashboard: Dashboard | None = None
    user_on_bar = show_kwargs.pop("on_bar", None)

    def on_bar(show: Any, bar: Any) -> None:
        if dashboard is not None:
            dashboard.on_bar(show, bar)
        if user_on_bar is not None:
            user_on_bar(show, bar)

    show = Show(patch, on_bar=on_bar, **show_kwargs)
    dashboard = Dashboard(show, console=console, capture_logs=True)

    async def main() -> Any:
        assert dashboard is not None
        dashboard.start(asyncio.get_running_loop())
        try:
            return await show.run()
        finally:
            dashboard.stop()

    return asyncio.run(main())
