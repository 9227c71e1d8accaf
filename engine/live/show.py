"""The show: the live loop that plays a patch's endless song in real time until stopped.

The asyncio loop only plans, stamps and hands over; it never does model work:

1. bar ``b``'s plan goes to the worker process (:class:`~engine.live.generator.BarGenerator`)
   about one bar before it sounds (``[live] lookahead_bars``);
2. ``push_lead`` before bar ``b`` starts, its arranged notes are stamped with absolute
   times from the one :class:`~engine.clock.Clock` and handed to the MIDI sender
   thread (parts with a ``port``) and to the audio engine (parts on the built-in synth,
   stamped in output frames); a bar that is not ready by then is replaced by the last good
   material and the miss is counted;
3. OSC commands (read and checked off the loop, by the OSC server's receiver thread) are
   queued as they arrive and applied where the table says they land: ``now`` at once,
   ``beat`` on the next beat, ``bar`` when the next bar is pushed (tempo changes land
   exactly on that bar line; walk and section changes reach the first bar generated after
   them). One command per target waits: a later one replaces it, so a fader moved many
   times before its landing point lands once, at its last value, and is logged once.

Beside it, each with one job: :mod:`engine.live.singing` (the voice: its worker, level,
mute and each phrase placed in time), :mod:`engine.live.show_health` (the counts and the
set's figures), :mod:`engine.live.port_watch` (hardware MIDI outputs that go away and come
back), :mod:`engine.live.osc_actions` (what each control does) and
:mod:`engine.live.show_view` (the read-only view the dashboard draws from).

Every way out (the end of ``bars``, Ctrl-C, SIGTERM, an exception, a cancelled task) goes
through one ``finally`` that stops the MIDI sender (note-offs for every sounding note,
sustain off, all-notes-off, all-sound-off), stops the audio engine, stops the worker and
closes the event log.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.clock import Clock
from engine.live.generator import BarGenerator
from engine.live.link_lock import LinkLock
from engine.live.osc_actions import ACTIONS, NotApplied
from engine.live.osc_control import Command, OscDispatcher, OscServer
from engine.live.port_watch import PortWatch
from engine.live.priority import (
    SHOW_NICENESS,
    group_nice,
    set_group_nice,
    set_thread_nice,
    thread_nice,
)
from engine.live.recorder import SetRecorder, TapRing
from engine.live.show_health import ShowHealth, collect, live_counts
from engine.live.singing import Singing
from engine.lyrics.phrase import PhrasePlan
from engine.music.midi_io import CC_VOLUME, channel_volume
from engine.patch import Patch
from engine.song.conductor import PARTS, ArrangedBar, BarPlan, Conductor
from engine.song.event_log import EventLog
from engine.song.lyrics_track import check_lyrics_models, lyric_events
from engine.song.stamp import stamp_bar

log = logging.getLogger(__name__)

NS = 1_000_000_000
START_DELAY_S = 0.5  # from "go" to the first downbeat
SWITCH_INTERVAL_S = 0.0005
RECORD_HOLD_BEATS = 0.5  # the recording commits this far behind the bar line
RECORD_RING_S = 4.0  # audio the recorder thread may fall behind before frames are lost
LOOP_WATCH_S = 0.01  # the loop's lag is measured on a sleep this long


def _percentile_step(counts: list[int], total: int, fraction: float) -> int:
    """The step (index into ``counts``) below or at which ``fraction`` of ``total`` lie."""
    wanted, seen = fraction * total, 0
    for step, count in enumerate(counts):
        seen += count
        if seen >= wanted:
            return step
    return len(counts) - 1


@dataclass
class Mix:
    """What the tablet changes that is not generation: mutes, levels, master."""

    mute: dict[str, bool] = field(default_factory=dict)
    level: dict[str, float] = field(default_factory=dict)
    master: float = 1.0


class Show:
    """Plays ``patch`` live. ``ports`` overrides MIDI port opening (tests, dry runs);
    ``audio`` False plays MIDI only; ``on_bar`` is called after each bar is pushed."""

    def __init__(self, patch: Patch, *, model_dir: str | Path | None = None,
                 record_dir: str | Path | None = None, audio: bool = True, osc: bool = True,
                 bars: int | None = None, seed: int | None = None,
                 ports: dict[str, Any] | None = None,
                 on_bar: Callable[[Show, ArrangedBar], None] | None = None) -> None:
        self.patch = patch
        self.model_dir = model_dir
        self.record_dir = Path(record_dir) if record_dir else None
        self.use_audio = audio and patch.live.internal_synth
        self.use_osc = osc
        self.bars = bars
        self.seed = seed
        self.on_bar = on_bar
        self._given_ports = ports
        self.health = ShowHealth()
        self.mix = Mix({p: getattr(patch.parts, p).mute for p in PARTS},
                       {p: getattr(patch.parts, p).level for p in PARTS})
        self.stop_event: asyncio.Event | None = None
        self.pending: list[Command] = []
        self._beat_landed: dict[str, int | None] = {}  # target -> the beat it lands on last
        self.generator: BarGenerator | None = None
        self.conductor: Conductor | None = None
        self.clock: Clock | None = None
        self.sender: Any = None
        self.audio_engine: Any = None
        self.osc_server: OscServer | None = None
        self.dispatcher: OscDispatcher | None = None
        self.event_log: EventLog | None = None
        self.part_ports: dict[str, str] = {}
        self._opened_ports: list[Any] = []  # opened here (not given): closed on the way out
        self.bar_index = -1
        self.section = ""
        self.lyric = ""
        self.theme = patch.lyrics.theme
        self.recorder: SetRecorder | None = None
        self.advertisement: Any = None
        self.plan: BarPlan | None = None  # the bar playing (the dashboard reads it)
        self.ports: dict[str, Any] = {}
        self.port_watch = PortWatch({})
        self._recorded_bpm = patch.song.tempo
        self.singing = Singing(patch, model_dir=model_dir)
        self.sample_rate = patch.audio.sample_rate
        self.follower: Any = None
        self.link: Any = None
        self.link_lock: LinkLock | None = None
        self.synth_feed: Any = None  # with Link: the built-in synth's events, held to be retimed
        self.web: Any = None  # the stage page (engine.live.web), when [web] is on
        self.ahead: list[tuple[BarPlan, asyncio.Task]] = []  # bars composed ahead
        self.next_up: tuple[BarPlan, asyncio.Task] | None = None  # the next of them

    @property
    def vocals(self) -> Any:
        """The voice worker (None when the set is not sung): :attr:`singing` owns it."""
        return self.singing.vocals

    # ---- set-up ---------------------------------------------------------------------
    def _open_ports(self) -> dict[str, Any]:
        from engine.live.midi_ports import open_output

        if self._given_ports is not None:
            ports = dict(self._given_ports)
        else:
            ports = {}
            names = {getattr(self.patch.parts, p).port for p in PARTS} | {
                self.patch.midi.clock_out}
            for name in sorted(n for n in names if n):
                latency = next((ms for key, ms in self.patch.midi.latency_ms.items()
                                if key.lower() in name.lower()), 0.0)
                ports[name] = open_output(name, self.patch.midi.backend, latency_ms=latency)
                self._opened_ports.append(ports[name])
        self.part_ports = {p: getattr(self.patch.parts, p).port for p in PARTS
                           if getattr(self.patch.parts, p).port in ports}
        return ports

    async def _first_audio_block(self, timeout_s: float = 5.0) -> None:
        """Wait for the audio callback's first block: the clock maps beats to frames
        through it, so no note may be scheduled before."""
        engine = self.audio_engine
        assert engine is not None
        origin = engine.frames_played
        deadline = time.monotonic() + timeout_s
        while engine.frames_played == origin:
            if time.monotonic() > deadline:
                raise OSError(f"the audio output ran no block within {timeout_s:.0f} s: is "
                              "the device (or the JACK server) running?")
            await asyncio.sleep(0.005)

    def _start_recorder(self) -> None:
        """song.mid (and song.wav of the internal mix) written as the set plays."""
        assert self.record_dir is not None
        programs = {part.channel - 1: part.program for _name, part in self.patch.parts.items()}
        tap = None
        if self.audio_engine is not None:
            tap = TapRing(round(RECORD_RING_S * self.sample_rate))
            self.audio_engine.tap = tap
        self.recorder = SetRecorder(self.record_dir, self.patch.song.tempo, programs,
                                    sample_rate=self.sample_rate if tap else None, tap=tap)
        self._recorded_bpm = self.patch.song.tempo

    def _open_audio(self) -> Any:
        from engine.live.audio_out import AudioEngine, list_devices

        patch = self.patch
        programs = {part.channel - 1: part.program for _name, part in patch.parts.items()}
        # Live, the sound card's rate rules (JACK runs at one rate); the patch's
        # sample_rate is for offline renders.
        wanted = patch.live.audio_device.lower()
        outputs = [d for d in list_devices() if d.output_channels >= 2]
        chosen = next((d for d in outputs if wanted and wanted in d.name.lower()), None) or \
            next((d for d in outputs if d.default_output), None) or \
            (outputs[0] if outputs else None)
        rate = int(chosen.default_samplerate) if chosen else patch.audio.sample_rate
        self.sample_rate = rate
        bar_s = 240.0 / patch.song.tempo
        vocal_s = max(10.0, (2 * patch.lyrics.phrase_bars + 2) * bar_s * 1.5)
        return AudioEngine(patch.audio.soundfont, sample_rate=rate, vocal_capacity_s=vocal_s,
                           block_size=patch.live.block_size,
                           device=patch.live.audio_device or None, gain=patch.audio.gain,
                           reverb=patch.audio.reverb, channels_programs=programs)

    # ---- the loop -------------------------------------------------------------------
    async def run(self) -> ShowHealth:
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
        # The sender thread and the audio callback get the GIL back quickly: Python's
        # default 5 ms switch interval is the lateness they would otherwise see.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        nice_before = thread_nice()
        self.health.nice = set_thread_nice(SHOW_NICENESS)
        group_before = group_nice()
        set_group_nice(SHOW_NICENESS)  # where Linux shares the CPU by session first
        watch = asyncio.ensure_future(self._watch_loop())
        try:
            await self._play()
        finally:
            watch.cancel()
            self._shutdown()
            await self._close_web()
            sys.setswitchinterval(switch_interval)
            set_thread_nice(nice_before)  # raising the value back is always allowed
            if group_before is not None:
                set_group_nice(group_before)
            gc.unfreeze()
            for sig in installed:
                loop.remove_signal_handler(sig)
        return self.health

    async def _watch_loop(self) -> None:
        """How long the loop was held (``loop_lag_ms_max``, ``loop_lag_ms_p99``): how late a
        short sleep wakes, once the bars play. The lags are counted in 0.1 ms steps (up to
        1 s; longer ones in the last step), so a show of any length keeps 10,001 counts."""
        counts = [0] * 10_001
        looks = 0
        while True:
            began = time.monotonic_ns()
            await asyncio.sleep(LOOP_WATCH_S)
            lag_ms = (time.monotonic_ns() - began) / 1e6 - LOOP_WATCH_S * 1000
            if self.bar_index < 0:
                continue
            if lag_ms > self.health.loop_lag_ms_max:
                self.health.loop_lag_ms_max = round(lag_ms, 2)
            counts[min(max(int(lag_ms * 10), 0), 10_000)] += 1
            looks += 1
            if looks % 50 == 0:  # twice a second: the 99th percentile so far
                self.health.loop_lag_ms_p99 = _percentile_step(counts, looks, 0.99) / 10

    def stop(self) -> None:
        """End the show at the next opportunity (safe from signal handlers)."""
        if self.stop_event is not None:
            self.stop_event.set()

    async def _play(self) -> None:
        from engine.live.midi_sender import MidiSender

        patch = self.patch
        check_lyrics_models(patch.lyrics, self.model_dir)  # a missing model fails here
        self.generator = BarGenerator(patch, model_dir=self.model_dir)
        info = await asyncio.to_thread(self.generator.describe)
        self.conductor = Conductor(patch, info["z_size"], seed=self.seed)
        first_plan = self.conductor.plan()
        first = await asyncio.to_thread(self.generator.warm_up, first_plan)
        if self.record_dir is not None:
            self.record_dir.mkdir(parents=True, exist_ok=True)
            self.event_log = EventLog(self.record_dir / "song.jsonl")
            self.event_log.header(patch=patch.to_dict(), seed=self.conductor.seed,
                                  model=info["name"], model_bars=info["bars"],
                                  z_size=info["z_size"], bars=self.bars or 0,
                                  bpm=patch.song.tempo, provider=info["provider"], live=True)
        ports = self._open_ports()
        self.ports = ports
        self.port_watch = PortWatch(ports)
        if self.use_osc:
            await self._start_osc()
        if patch.web.enabled:
            await self._start_web()
        if self.use_audio:
            self.audio_engine = self._open_audio()
            if self.audio_engine.path == "core":
                log.info("audio: %s", self.audio_engine.path_detail)
            else:  # never silently: the Python callback waits for the interpreter lock
                log.warning("audio: %s", self.audio_engine.path_detail)
            await self.singing.start(self.sample_rate, self.event_log)
        if self.record_dir is not None:
            self._start_recorder()
        # Collect before the audio runs: a full collection stalls every thread ~20 ms.
        gc.collect()
        gc.freeze()  # what start-up allocated is never scanned again during the show
        if self.audio_engine is not None:
            self.audio_engine.start()
            await self._first_audio_block()
        self._open_sync()
        self.port_watch.open()
        start_ns = time.monotonic_ns() + int(START_DELAY_S * NS)
        bpm = patch.song.tempo
        if self.link is not None:  # peers first, then bar 0 on the session's bar line
            self.link_lock = LinkLock(self.link, patch.live, self.event_log, self.stop)
            start_ns, bpm = await self.link_lock.join(start_ns)
            if self.audio_engine is not None:  # a retime must still be able to move them
                from engine.live.synth_feed import SynthFeed

                self.synth_feed = SynthFeed(self.audio_engine)
        self.clock = Clock(bpm, start_ns=start_ns)
        if ports:
            self.sender = MidiSender(self.clock, ports).start()
            if patch.midi.clock_out and patch.midi.clock_out in ports:
                self.sender.start_clock(patch.midi.clock_out, from_bar=0)
        for part in PARTS:  # the patch's levels on beat 0, all four: a synth left at another
            self.send_volume(part, beat=0)  # volume by the last song is set right

        plan, bar, fresh = first_plan, first, True
        lookahead = patch.live.lookahead_bars
        if self.singing.vocals is not None:  # a phrase is sung from its first bar, written
            # at its last
            lookahead = max(lookahead, patch.lyrics.phrase_bars + 1)
        queue: list[tuple[BarPlan, asyncio.Task]] = []
        self.ahead = queue  # the stage page draws the bars composed ahead
        while True:
            while len(queue) < lookahead:
                next_plan = self.conductor.plan()
                queue.append((next_plan, asyncio.ensure_future(
                    self.generator.realize(next_plan))))
            self._apply_pending("bar")
            self._follow_tempo()
            self._follow_link()
            if self.link_lock is not None:  # fit this bar to the session before stamping it
                self.link_lock.lock(self.clock, plan.index)
            self._push(plan, bar, fresh)
            if self.bars is not None and plan.index + 1 >= self.bars:
                await self._sleep_until(lambda end=plan.index + 1: self.clock.bar_start_ns(end))
                break
            plan, task = queue.pop(0)
            self.next_up = (plan, task)  # composed (or composing), waiting for its bar line
            # (a retime moves the bar line: it is read again on each wake)
            if await self._sleep_until(lambda bar=plan.index: self.clock.bar_start_ns(bar)
                                       - self._push_lead_ns()):
                task.cancel()
                break
            if task.done() and not task.cancelled():  # a worker restart cancels requests
                bar, fresh = task.result()
            else:
                task.cancel()
                bar, fresh = self.generator.fallback(plan), False
            if not fresh:
                self.health.bars_fallback += 1
                self._log_fault(plan.index)
        for _plan, task in queue:
            task.cancel()

    def _push_lead_ns(self) -> int:
        assert self.clock is not None
        bar_ns = int(60 / self.clock.bpm * 4 * NS)
        return min(bar_ns // 2, int(0.25 * NS))

    async def _sleep_until(self, deadline_ns: int | Callable[[], int]) -> bool:
        """Sleep until ``deadline_ns`` (monotonic; a callable is asked again on each wake);
        True when the show was stopped."""
        assert self.stop_event is not None
        while True:
            if self.stop_event.is_set():
                return True
            deadline = deadline_ns() if callable(deadline_ns) else deadline_ns
            remaining = (deadline - time.monotonic_ns()) / NS
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self.stop_event.wait(), timeout=min(remaining, 0.05))
                return True
            except TimeoutError:
                self._apply_pending("beat")
                self._follow_link()

    def _follow_link(self) -> None:
        """With Link, on each wake: the built-in synth gets what is due soon, and when
        another app has changed the session's tempo, what is stamped and not yet sent is
        retimed onto the session's bar line (:meth:`LinkLock.follow`)."""
        if self.link_lock is None or self.clock is None:
            return
        feed = self.synth_feed
        if feed is not None:
            feed.feed()
        warp = self.link_lock.follow(self.clock, feed.committed_ns + 1 if feed else 0)
        if warp is None:
            return
        if self.sender is not None:
            self.sender.retime(warp)
        if feed is not None:
            feed.retime(warp)
        if self.recorder is not None:  # the bend and the new tempo into song.mid
            pivot = warp.beat(warp.from_ns)
            for segment in self.clock.tempo_map:
                if segment.beat >= pivot:
                    self.recorder.midi.tempo(segment.beat, segment.bpm)
                    self._recorded_bpm = segment.bpm

    def _open_sync(self) -> None:
        from engine.live import sync

        if self.patch.midi.clock_in:
            self.follower = sync.MidiClockFollower(self.patch.midi.clock_in,
                                                   self.patch.midi.backend)
        if self.patch.live.link:
            try:
                self.link = sync.LinkSync(quantum=self.patch.live.link_quantum,
                                          bpm=self.patch.song.tempo,
                                          start_stop_sync=self.patch.live.link_start_stop)
            except ImportError as err:  # the extra is missing: say so as a patch error
                raise ValueError(f"[live] link = true: {err}; or set link = false") from err

    def _follow_tempo(self) -> None:
        """MIDI clock in: its tempo lands on the next bar line (Link: :class:`LinkLock`)."""
        assert self.clock is not None
        for source in (self.follower,):
            if source is None:
                continue
            bpm = source.suggest_tempo(self.clock.bpm)
            if bpm is not None and 40.0 <= bpm <= 240.0:
                self.clock.set_tempo(bpm, at_bar=max(self.bar_index + 1,
                                                     self.clock.next_bar()))

    # ---- stamping -------------------------------------------------------------------
    def _push(self, plan: BarPlan, bar: ArrangedBar | None, fresh: bool = True) -> None:
        assert self.clock is not None
        late_ms = (time.monotonic_ns() - self.clock.bar_start_ns(plan.index)) / 1e6
        self.health.push_late_ms_max = max(self.health.push_late_ms_max, late_ms)
        self.bar_index = plan.index
        self.plan = plan
        self.section = plan.position.section
        self.health.last_section = self.section
        # the tempo of the bar being pushed (a change lands on its bar line, still ahead)
        bpm = self.clock.bpm_at(plan.index * 4)
        if self.recorder is not None:
            if bpm != self._recorded_bpm:
                self.recorder.midi.tempo(plan.index * 4, bpm)
                self._recorded_bpm = bpm
            # bars before this one are complete (less what humanizing may pull early)
            self.recorder.bar_done(max(0.0, plan.index * 4 - RECORD_HOLD_BEATS))
        if bar is None:
            self.health.bars_silent += 1
            return
        midi = self.recorder.midi if self.recorder is not None else None
        for note in stamp_bar(bar, self.patch, self.clock, self.mix.mute):
            self._send_note(note.part, note.channel, note.pitch, note.velocity, note.start_ns,
                            note.end_ns)
            if midi is not None:
                midi.note(note.channel, note.pitch, note.velocity, note.start_beat,
                          note.end_beat)
        self.health.bars_played += 1
        if self.event_log is not None:
            self.event_log.write({"type": "bar", "fresh": fresh}
                                 | plan.to_dict() | bar.to_dict())
        if self.generator is not None:
            for lyric in self.generator.take_lyrics():
                self._on_lyric(lyric)
        self._watch_ports()
        if self.on_bar is not None:
            self.on_bar(self, bar)
        if self.osc_server is not None:
            self.osc_server.send_feedback(self.state())
        if self.web is not None:
            self.web.on_bar(plan, bar)

    @property
    def ports_gone(self) -> set[str]:
        """Hardware outputs whose device went away (and has not come back)."""
        return self.port_watch.gone

    def _watch_ports(self) -> None:
        """Once a bar: a hardware output gone is counted and logged, one back logged."""
        if self.sender is None:
            return
        for name, state in self.port_watch.check(self.sender):
            self.health.ports_lost += state == "gone"
            self._log_port(name, state)

    def _log_port(self, name: str, state: str) -> None:
        if self.event_log is not None:
            self.event_log.write({"type": "fault", "what": "midi port", "port": name,
                                  "state": state, "bar": self.bar_index})

    def _log_fault(self, bar: int) -> None:
        """A bar played from the last good material: say why in the event log."""
        if self.event_log is None or self.generator is None:
            return
        health = self.generator.health
        self.event_log.write({"type": "fault", "bar": bar, "what": "generation",
                              "fallback": True, "restarts": health.restarts,
                              "error": health.last_error or "not ready in time"})

    def _on_lyric(self, lyric: dict[str, Any]) -> None:
        """A line is written (bars before it is sung): log it, show it, have it sung."""
        self.lyric = lyric["text"]
        self.health.lyric_lines += 1
        if self.web is not None:
            self.web.on_lyric(lyric)
        if self.event_log is not None:
            self.event_log.write(lyric)
        if self.recorder is not None:
            for step, text in lyric_events([PhrasePlan.from_dict(lyric)]):
                self.recorder.midi.lyric(step / 4, text)
        self.singing.sing(lyric, self.clock, self.audio_engine)

    def _send_note(self, part: str, channel: int, pitch: int, velocity: int, start_ns: int,
                   end_ns: int) -> None:
        port = self.part_ports.get(part)
        if port is not None and self.sender is not None:
            self.sender.schedule_note(port, channel, pitch, velocity, start_ns, end_ns)
        elif self.audio_engine is not None:
            self._to_synth(start_ns, "note_on", channel, pitch, velocity)
            self._to_synth(end_ns, "note_off", channel, pitch)

    def _to_synth(self, ns: int, kind: str, channel: int, data1: int = 0,
                  data2: int = 0) -> None:
        """One message to the built-in synth at ``ns``: through the feed with Link."""
        if self.synth_feed is not None:
            self.synth_feed.schedule(ns, kind, channel, data1, data2)
        else:
            engine = self.audio_engine
            engine.schedule(engine.ns_to_frame(ns), kind, channel, data1, data2)

    # ---- control --------------------------------------------------------------------
    async def _start_osc(self) -> None:
        self.dispatcher = OscDispatcher.from_settings(self.patch.osc, self.on_command,
                                                      state=self.state)
        self.osc_server = OscServer(self.patch.osc, self.dispatcher)
        address = await self.osc_server.start()
        log.info("OSC on %s:%s", *address[:2])
        from engine.live.dnssd import advertise

        # Tablets on the network find the engine by name (where zeroconf is installed).
        self.advertisement = await asyncio.to_thread(
            advertise, address[1], self.patch.song.title, self.patch.osc.host)

    async def _start_web(self) -> None:
        """The stage page: its touches come in through :meth:`on_command`, as a tablet's."""
        from engine.live.web.server import StageServer

        self.web = StageServer(self.patch.web, self)
        await self.web.start()

    async def _close_web(self) -> None:
        """After the show is silent: tell the pages the set has ended, keep their counts."""
        if self.web is None:
            return
        try:
            self.health.web = self.web.summary()
            await self.web.close()
        except Exception as err:  # noqa: BLE001 - the set is over; say it and go on
            log.error("while stopping: web: %s", err)

    def on_command(self, command: Command) -> None:
        if command.lands == "now":
            self._apply(command)
            return
        for n, waiting in enumerate(self.pending):  # the last value per landing point
            if waiting.target == command.target:
                del self.pending[n]
                self.health.commands_coalesced += 1
                break
        self.pending.append(command)

    def _apply_pending(self, lands: str) -> None:
        keep = []
        beat = int(self.clock.now_beat()) + 1 if self.clock is not None else None
        for command in self.pending:
            if command.lands == "beat" and self._beat_landed.get(command.target) == beat:
                keep.append(command)  # a value already lands on that beat: the next one
            elif command.lands == lands or lands == "bar":
                self._apply(command)
                if command.lands == "beat":
                    self._beat_landed[command.target] = beat
            else:
                keep.append(command)
        self.pending = keep

    def _apply(self, command: Command) -> None:
        """Apply one validated command (the table has checked types and ranges) with its
        handler (:data:`~engine.live.osc_actions.ACTIONS`), and log it."""
        self.health.commands_applied += 1
        record = {"type": "control", "address": command.address, "target": command.target,
                  "values": list(command.values), "lands": command.lands,
                  "after_bar": self.bar_index}
        handler = ACTIONS.get(command.target)
        try:
            if handler is None:
                self.health.commands_applied -= 1
                log.info("OSC %s: not handled by this show", command.address)
            else:
                record |= handler(self, command) or {}
        except NotApplied as refused:
            self.health.commands_applied -= 1
            if refused.reason:
                record["refused"] = refused.reason
                log.warning("OSC %s: %s", command.address, refused.reason)
        finally:  # logged even when the handler failed
            if self.event_log is not None:
                self.event_log.write(record)

    def send_volume(self, part: str, beat: int | None = None) -> None:
        """The part's level as its channel volume (CC 7), on ``beat`` (default: the next
        beat), to its port or the built-in synth, and into the recording."""
        settings = getattr(self.patch.parts, part)
        value = channel_volume(self.mix.level[part])
        if self.clock is None:
            return
        if beat is None:
            beat = int(self.clock.now_beat()) + 1
        at = self.clock.beat_to_ns(beat)
        if self.recorder is not None:
            self.recorder.midi.control(settings.channel - 1, CC_VOLUME, value, beat)
        port = self.part_ports.get(part)
        if port is not None and self.sender is not None:
            self.sender.schedule(at, port, bytes((0xB0 | settings.channel - 1, CC_VOLUME, value)))
        elif self.audio_engine is not None:
            self._to_synth(at, "cc", settings.channel - 1, CC_VOLUME, value)

    def panic(self) -> None:
        if self.sender is not None:
            self.sender.panic(wait=False)
        if self.synth_feed is not None:
            self.synth_feed.drop()
        if self.audio_engine is not None:
            self.audio_engine.panic()

    def state(self) -> dict[str, Any]:
        """What the tablet shows (targets of the OSC table -> values)."""
        state: dict[str, Any] = {"song.tempo": self.clock.bpm if self.clock else
                                 self.patch.song.tempo, "master.level": self.mix.master,
                                 "status.bar": str(self.bar_index),
                                 "status.section": self.section,
                                 "status.lyric": self.lyric, "lyrics.theme": self.theme,
                                 "voice.level": self.singing.level,
                                 "voice.mute": int(self.singing.mute)}
        if self.conductor is not None:
            settings = self.conductor.walk_settings
            state |= {"walk.step_size": settings.step_size,
                      "walk.temperature": settings.temperature,
                      "walk.wander": settings.wander,
                      "walk.freeze": int(self.conductor.frozen),
                      "form": self.plan.form if self.plan is not None
                      else self.conductor.form_name}
        for part in PARTS:
            state[f"parts.{part}.mute"] = int(self.mix.mute.get(part, False))
            state[f"parts.{part}.level"] = self.mix.level.get(part, 1.0)
        state["status.health"] = live_counts(self).text()
        return state

    # ---- the one way out --------------------------------------------------------------
    def _close_recorder(self) -> None:
        if self.recorder is not None:
            self.recorder.close((self.bar_index + 1) * 4)
            self.health.recording = {"bars": self.recorder.bars_committed,
                                     "wav_frames": self.recorder.frames_written,
                                     "lost_frames": self.recorder.tap.lost_frames
                                     if self.recorder.tap else 0,
                                     "errors": self.recorder.errors}

    def _shutdown(self) -> None:
        with contextlib.suppress(Exception):
            collect(self)
        errors = []
        for name, action in (("midi", lambda: self.sender and self.sender.stop()),
                             ("ports", self._close_ports),
                             ("port watch", self.port_watch.close),
                             ("audio", lambda: self.audio_engine and self.audio_engine.stop()),
                             ("osc", lambda: self.osc_server and self.osc_server.close()),
                             ("dns-sd", lambda: self.advertisement
                              and self.advertisement.close()),
                             ("generator", lambda: self.generator and self.generator.close()),
                             ("voice", self.singing.close),
                             ("recorder", self._close_recorder),
                             ("clock in", lambda: self.follower and self.follower.close()),
                             ("link", self._close_link),
                             ("log", lambda: self.event_log and self.event_log.close())):
            try:
                action()
            except Exception as err:  # noqa: BLE001 - every step runs whatever failed before
                errors.append(f"{name}: {err}")
        for error in errors:
            log.error("while stopping: %s", error)

    def _close_link(self) -> None:
        if self.link_lock is not None:
            self.link_lock.close()
        if self.link is not None:
            self.link.close()

    def _close_ports(self) -> None:
        """Close the MIDI ports this show opened (after the sender has silenced them): a
        JACK port drains what is still queued first, which a process that exits right
        after the show would otherwise drop, and its client leaves the JACK graph."""
        ports, self._opened_ports = self._opened_ports, []
        for port in ports:
            port.close()


def run_show(patch: Patch, **kwargs: Any) -> ShowHealth:
    """Run a show to its end (``bars``) or until Ctrl-C / SIGTERM."""
    show = Show(patch, **kwargs)
    return asyncio.run(show.run())

